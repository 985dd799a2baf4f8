package nbmgmt_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"

	nbmgmt "github.com/nkudo/nkudo/tests/fakes/netbird-management"
)

var cliBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nbmgmt-bin")
	if err != nil {
		panic(err)
	}
	cliBin = filepath.Join(dir, "netbird")
	if out, err := exec.Command("go", "build", "-o", cliBin, "github.com/nkudo/nkudo/tests/fakes/netbird").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const docURL = "https://netbird.io/openapi.json"

// contract checks answers against the OpenAPI document: a 200 against the
// operation's declared schema, an error against ErrorResponse.
type contract struct {
	paths map[string]any
	c     *jsonschema.Compiler
	mu    sync.Mutex
	cache map[string]*jsonschema.Schema
}

func loadContract(t *testing.T) *contract {
	t.Helper()
	y, err := os.ReadFile("testdata/openapi.yml")
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatalf("openapi.yml: %v", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(docURL, doc); err != nil {
		t.Fatal(err)
	}
	return &contract{paths: doc.(map[string]any)["paths"].(map[string]any), c: c, cache: map[string]*jsonschema.Schema{}}
}

func (k *contract) schema(t *testing.T, ptr string) *jsonschema.Schema {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if s, ok := k.cache[ptr]; ok {
		return s
	}
	s, err := k.c.Compile(docURL + "#" + ptr)
	if err != nil {
		t.Fatalf("compile %s: %v", ptr, err)
	}
	k.cache[ptr] = s
	return s
}

// template finds the documented path for a concrete one, preferring the
// template with the most literal segments.
func (k *contract) template(path string) string {
	segs := strings.Split(path, "/")
	best, bestLit := "", -1
	for tmpl := range k.paths {
		ts := strings.Split(tmpl, "/")
		if len(ts) != len(segs) {
			continue
		}
		lit, ok := 0, true
		for i := range ts {
			if strings.HasPrefix(ts[i], "{") {
				continue
			}
			if ts[i] != segs[i] {
				ok = false
				break
			}
			lit++
		}
		if ok && lit > bestLit {
			best, bestLit = tmpl, lit
		}
	}
	return best
}

func esc(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1") }

func (k *contract) check(t *testing.T, method, path string, status int, body []byte) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v: %s", method, path, err, body)
	}
	if status != http.StatusOK {
		if err := k.schema(t, "/components/schemas/ErrorResponse").Validate(v); err != nil {
			t.Fatalf("%s %s: error answer: %v", method, path, err)
		}
		m, _ := v.(map[string]any)
		if msg, _ := m["message"].(string); msg == "" {
			t.Errorf("%s %s: error without a message: %s", method, path, body)
		}
		if code, _ := m["code"].(json.Number); code.String() != strconv.Itoa(status) {
			t.Errorf("%s %s: error code %v, HTTP status %d", method, path, m["code"], status)
		}
		return
	}
	tmpl := k.template(path)
	op, _ := k.paths[tmpl].(map[string]any)[strings.ToLower(method)].(map[string]any)
	if op == nil {
		t.Fatalf("%s %s: the API document has no such operation", method, path)
	}
	resp, _ := op["responses"].(map[string]any)["200"].(map[string]any)
	content, _ := resp["content"].(map[string]any)
	if len(content) == 0 {
		if _, ok := v.(map[string]any); !ok {
			t.Errorf("%s %s: empty answer should be an object, got %s", method, path, body)
		}
		return
	}
	ptr := "/paths/" + esc(tmpl) + "/" + strings.ToLower(method) + "/responses/200/content/application~1json/schema"
	if err := k.schema(t, ptr).Validate(v); err != nil {
		t.Fatalf("%s %s: answer does not match the API document: %v\n%s", method, path, err, body)
	}
}

type env struct {
	t    *testing.T
	srv  *nbmgmt.Server
	ts   *httptest.Server
	k    *contract
	ca   string
	now  time.Time
	nowM sync.Mutex
}

func start(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, srv: &nbmgmt.Server{}, k: loadContract(t), now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	e.srv.Now = func() time.Time {
		e.nowM.Lock()
		defer e.nowM.Unlock()
		return e.now
	}
	e.ts = httptest.NewTLSServer(e.srv)
	t.Cleanup(e.ts.Close)
	e.ca = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(e.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) advance(d time.Duration) {
	e.nowM.Lock()
	defer e.nowM.Unlock()
	e.now = e.now.Add(d)
}

// raw calls the API with token and answers the status and body.
func (e *env) raw(ctx context.Context, token, method, path, body string) (int, []byte, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.ts.URL+path, r)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Token "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// call makes an authorised call, checks the answer against the contract and
// decodes it into out (when non-nil).
func (e *env) call(method, path, body string, out any) int {
	e.t.Helper()
	code, b, err := e.raw(e.t.Context(), nbmgmt.DefaultToken, method, path, body)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	e.k.check(e.t, method, path, code, b)
	if out != nil && code == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return code
}

func (e *env) want(code int, method, path, body string, out any) {
	e.t.Helper()
	if got := e.call(method, path, body, out); got != code {
		e.t.Fatalf("%s %s: status %d, want %d", method, path, got, code)
	}
}

// up runs the fake CLI's `netbird up` in its own state dir.
func (e *env) up(stateDir, host string, args ...string) (string, error) {
	cmd := exec.CommandContext(e.t.Context(), cliBin, append([]string{"up", "--management-url", e.ts.URL}, args...)...)
	cmd.Env = append(os.Environ(), "NBFAKE_STATE_DIR="+stateDir, "NBFAKE_CA_FILE="+e.ca, "NBFAKE_HOSTNAME="+host)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

type key struct {
	ID, Key, State string
	Valid, Revoked bool
	UsedTimes      int      `json:"used_times"`
	UsageLimit     int      `json:"usage_limit"`
	AutoGroups     []string `json:"auto_groups"`
}

type group struct {
	ID, Name string
	Peers    []struct{ ID, Name string }
}

type peer struct {
	ID, Name, IP string
	Groups       []struct{ ID, Name string }
}

func names(p peer) []string {
	var out []string
	for _, g := range p.Groups {
		out = append(out, g.Name)
	}
	sort.Strings(out)
	return out
}

var uuidRE = regexp.MustCompile(`^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$`)

// TestContract walks the calls the control plane makes (groups, one-off
// setup keys, peers) and a CLI join, checking every answer against the
// OpenAPI document and the server's behaviour.
func TestContract(t *testing.T) {
	e := start(t)

	var groups []group
	e.want(200, "GET", "/api/groups", "", &groups)
	if len(groups) != 1 || groups[0].Name != "All" {
		t.Fatalf("new account groups = %+v, want only All", groups)
	}
	all := groups[0].ID
	e.want(405, "PUT", "/api/groups/"+all, `{"name":"All","peers":[]}`, nil)
	e.want(405, "DELETE", "/api/groups/"+all, "", nil)
	e.want(422, "POST", "/api/groups", `{"name":"All"}`, nil)
	e.want(422, "POST", "/api/groups", `{"peers":[]}`, nil)
	var ot group
	e.want(200, "POST", "/api/groups", `{"name":"ot-gateways"}`, &ot)
	e.want(409, "POST", "/api/groups", `{"name":"ot-gateways"}`, nil)
	e.want(404, "GET", "/api/groups/nosuchgroup000000000", "", nil)

	// Setup keys: clear only in the create answer; one-off means one use.
	e.want(422, "POST", "/api/setup-keys", `{"name":"k","type":"one-off","expires_in":60,"auto_groups":[],"usage_limit":1}`, nil)
	e.want(422, "POST", "/api/setup-keys", `{"name":"k","type":"one-off","expires_in":86400,"auto_groups":["nosuchgroup"],"usage_limit":1}`, nil)
	e.want(422, "POST", "/api/setup-keys", `{"name":"k","type":"sometimes","expires_in":86400,"auto_groups":[],"usage_limit":1}`, nil)
	e.want(400, "POST", "/api/setup-keys", `{"name":`, nil)
	var created key
	e.want(200, "POST", "/api/setup-keys", `{"name":"acme/edge-1","type":"one-off","expires_in":86400,"auto_groups":["`+ot.ID+`"],"usage_limit":1}`, &created)
	if !uuidRE.MatchString(created.Key) || created.State != "valid" || !created.Valid {
		t.Fatalf("created key = %+v, want a valid clear UUID key", created)
	}
	var listed []key
	e.want(200, "GET", "/api/setup-keys", "", &listed)
	if len(listed) != 1 || listed[0].Key == created.Key || !strings.HasSuffix(listed[0].Key, "****") {
		t.Fatalf("listed keys = %+v, want the key masked", listed)
	}
	var got key
	e.want(200, "GET", "/api/setup-keys/"+created.ID, "", &got)
	if strings.Contains(got.Key, created.Key) {
		t.Fatal("GET setup key shows the key in clear")
	}

	// The CLI joins with the key: a peer in the key's groups, the key used up.
	dir1 := t.TempDir()
	if out, err := e.up(dir1, "edge-1", "--setup-key", created.Key); err != nil {
		t.Fatalf("netbird up: %v: %s", err, out)
	}
	if calls, _ := os.ReadFile(filepath.Join(dir1, "calls.log")); strings.Contains(string(calls), created.Key) {
		t.Fatal("the CLI logged the setup key")
	}
	var peers []peer
	e.want(200, "GET", "/api/peers", "", &peers)
	if len(peers) != 1 {
		t.Fatalf("peers = %+v, want one", peers)
	}
	if d := cmp.Diff([]string{"All", "ot-gateways"}, names(peers[0])); d != "" {
		t.Errorf("peer groups (-want +got):\n%s", d)
	}
	e.want(200, "GET", "/api/setup-keys/"+created.ID, "", &got)
	if got.State != "overused" || got.Valid || got.UsedTimes != 1 {
		t.Errorf("used key = %+v, want overused, invalid, used once", got)
	}
	var st struct {
		PublicKey string `json:"publicKey"`
		NetbirdIP string `json:"netbirdIp"`
	}
	cmd := exec.Command(cliBin, "status", "--json")
	cmd.Env = append(os.Environ(), "NBFAKE_STATE_DIR="+dir1)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(err)
	}
	if id, ok := e.srv.PeerByKey(st.PublicKey); !ok || id != peers[0].ID || st.NetbirdIP != peers[0].IP+"/16" {
		t.Errorf("CLI status %+v does not name peer %+v", st, peers[0])
	}

	// A second host cannot reuse the one-off key; the error does not echo it.
	out2, err := e.up(t.TempDir(), "edge-2", "--setup-key", created.Key)
	if err == nil || !strings.Contains(out2, "overused") || strings.Contains(out2, created.Key) {
		t.Errorf("second up with a used key: err %v, output %q", err, out2)
	}

	// Membership is changed through the groups API; the peer sees it.
	var p peer
	e.want(200, "PUT", "/api/groups/"+ot.ID, `{"name":"ot-gateways","peers":[]}`, nil)
	e.want(200, "GET", "/api/peers/"+peers[0].ID, "", &p)
	if d := cmp.Diff([]string{"All"}, names(p)); d != "" {
		t.Errorf("peer groups after removal (-want +got):\n%s", d)
	}
	e.want(422, "PUT", "/api/groups/"+ot.ID, `{"name":"ot-gateways","peers":["nosuchpeer"]}`, nil)

	// A group a key refers to cannot be deleted; a revoked key stays revoked.
	e.want(422, "DELETE", "/api/groups/"+ot.ID, "", nil)
	e.want(400, "PUT", "/api/setup-keys/"+created.ID, `{"revoked":true}`, nil)
	e.want(200, "PUT", "/api/setup-keys/"+created.ID, `{"revoked":true,"auto_groups":[]}`, &got)
	if got.State != "revoked" {
		t.Errorf("revoked key state %q", got.State)
	}
	e.want(422, "PUT", "/api/setup-keys/"+created.ID, `{"revoked":false,"auto_groups":[]}`, nil)
	e.want(200, "DELETE", "/api/groups/"+ot.ID, "", nil)
	e.want(200, "DELETE", "/api/setup-keys/"+created.ID, "", nil)
	e.want(404, "GET", "/api/setup-keys/"+created.ID, "", nil)

	// Deleting the peer removes it; its CLI cannot log in again without a key.
	e.want(200, "DELETE", "/api/peers/"+peers[0].ID, "", nil)
	e.want(404, "GET", "/api/peers/"+peers[0].ID, "", nil)
	if e.srv.PeerGroups(peers[0].ID) != nil {
		t.Error("deleted peer still in groups")
	}
}

func TestKeyExpires(t *testing.T) {
	e := start(t)
	var k key
	e.want(200, "POST", "/api/setup-keys", `{"name":"k","type":"one-off","expires_in":86400,"auto_groups":[],"usage_limit":1}`, &k)
	e.advance(25 * time.Hour)
	var got key
	e.want(200, "GET", "/api/setup-keys/"+k.ID, "", &got)
	if got.State != "expired" || got.Valid {
		t.Errorf("key after expiry = %+v, want expired", got)
	}
	if out, err := e.up(t.TempDir(), "edge", "--setup-key", k.Key); err == nil || !strings.Contains(out, "expired") {
		t.Errorf("up with an expired key: err %v, output %q", err, out)
	}
	if len(e.srv.Peers()) != 0 {
		t.Error("an expired key registered a peer")
	}
}

func TestAuthAndFaults(t *testing.T) {
	e := start(t)
	for _, tok := range []string{"", "nbp_wrong"} {
		code, b, err := e.raw(t.Context(), tok, "GET", "/api/groups", "")
		if err != nil {
			t.Fatal(err)
		}
		e.k.check(t, "GET", "/api/groups", code, b)
		if code != http.StatusUnauthorized {
			t.Errorf("token %q: status %d, want 401", tok, code)
		}
	}

	e.srv.Fail(1, 0)
	e.want(500, "GET", "/api/groups", "", nil)
	e.want(200, "GET", "/api/groups", "", nil)
	e.srv.Fail(-1, http.StatusServiceUnavailable)
	e.want(503, "GET", "/api/peers", "", nil)
	e.want(503, "GET", "/api/peers", "", nil)
	e.srv.Fail(0, 0)
	e.want(200, "GET", "/api/peers", "", nil)

	e.srv.ExpireToken(true)
	e.want(401, "GET", "/api/groups", "", nil)
	e.srv.ExpireToken(false)
	e.want(200, "GET", "/api/groups", "", nil)

	// A slow server: the caller's deadline ends the call, not the fake.
	e.srv.Delay(time.Hour)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := e.raw(ctx, nbmgmt.DefaultToken, "GET", "/api/groups", ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow answer: err %v, want deadline exceeded", err)
	}
	e.srv.Delay(0)
	e.want(200, "GET", "/api/groups", "", nil)

	if d := cmp.Diff([]string{"GET /api/groups", "GET /api/groups"}, e.srv.Calls()[:2]); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}
}
