package debugbundle_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/agent/debugbundle"
	"github.com/nkudo/nkudo/agent/netbird"
	"github.com/nkudo/nkudo/agent/providers/cloudhypervisor"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
)

var fakeCH, fakeNetBird string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dbb-bin")
	if err != nil {
		panic(err)
	}
	fakeCH, fakeNetBird = filepath.Join(dir, "cloud-hypervisor"), filepath.Join(dir, "netbird")
	for bin, pkg := range map[string]string{fakeCH: "tests/fakes/cloud-hypervisor", fakeNetBird: "tests/fakes/netbird"} {
		if out, err := exec.Command("go", "build", "-o", bin, "github.com/nkudo/nkudo/"+pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	setupKey     = "A1B2C3D4-0000-4E5F-9A8B-SETUPKEYVALUE"
	enrollToken  = "nket_enrolltokensecretvalue"
	userSecret   = "hunter2-cloudinit-password"
	urlSignature = "X-Amz-Signature=signedurlsecret"
	outsideData  = "OUTSIDE-THE-STATE-DIR-DATA"
)

// pkiFiles is what agent.Enroll leaves in the PKI dir.
type pkiFiles struct {
	keyPEM, keyDER []byte
	cert           *x509.Certificate
}

// writePKI writes agent.key, agent.crt, ca.crt and identity.json as
// agent.Enroll does, and checks that the agent itself loads them.
func writePKI(t testing.TB, dir string) pkiFiles {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nkudo test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := new(big.Int).SetString("7b3f09c2a1d4e5f60718293a4b5c6d7e", 16)
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "store-042", Organization: []string{"acme"}},
		NotBefore: now.Add(-time.Minute).Truncate(time.Second), NotAfter: now.Add(24 * time.Hour).Truncate(time.Second),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	ident, _ := json.MarshalIndent(map[string]any{"tenant": "acme", "site": "store-042", "controlPlane": "https://cp.example.com:8443",
		"netbird": map[string]string{"managementUrl": "https://nb.example.com", "setupKey": setupKey}}, "", "  ")
	for name, f := range map[string]struct {
		data []byte
		perm os.FileMode
	}{
		"agent.key":     {keyPEM, 0o600},
		"agent.crt":     {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644},
		"ca.crt":        {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644},
		"identity.json": {ident, 0o600},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), f.data, f.perm); err != nil {
			t.Fatal(err)
		}
	}
	id, err := agent.LoadIdentity(dir)
	if err != nil {
		t.Fatalf("the agent cannot load the test PKI dir: %v", err)
	}
	if id.NetBird() == nil || id.NetBird().SetupKey != setupKey {
		t.Fatalf("identity NetBird = %+v", id.NetBird())
	}
	return pkiFiles{keyPEM: keyPEM, keyDER: keyDER, cert: cert}
}

type payload struct{ path, sum string }

func writePayload(t *testing.T, dir, name, content string) payload {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256([]byte(content))
	return payload{p, hex.EncodeToString(s[:])}
}

func killVMMs(state string) {
	pids, _ := filepath.Glob(filepath.Join(state, "hypervisor", "vms", "*", "vmm.pid"))
	for _, f := range pids {
		b, _ := os.ReadFile(f)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// site is a state dir built by the real agent: the executor applied a
// plan with the Cloud Hypervisor provider against the fake VMM, and its
// results and logs wait in the outbox (no control plane was reachable).
type site struct {
	state, pki string
	keys       pkiFiles
	prov       *cloudhypervisor.Provider
	nbState    string
}

func newSite(t *testing.T) *site {
	t.Helper()
	state, err := os.MkdirTemp("", "dbb") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		killVMMs(state)
		os.RemoveAll(state)
	})
	s := &site{state: state, pki: filepath.Join(state, "pki"), nbState: t.TempDir()}
	s.keys = writePKI(t, s.pki)
	prov, err := cloudhypervisor.New(cloudhypervisor.Options{StateDir: filepath.Join(state, "hypervisor"), Binary: fakeCH,
		DisableNetworking: true, StopTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s.prov = prov
	files := t.TempDir()
	kernel := writePayload(t, files, "vmlinux", "not really a kernel")
	image := writePayload(t, files, "root.img", strings.Repeat("disk", 1024))
	spec := model.VMSpec{
		State: model.VMRunning, CPUs: 1, MaxCPUs: 2, MemoryMiB: 256,
		Kernel:    &model.Kernel{URL: "file://" + kernel.path, SHA256: kernel.sum, Cmdline: "console=ttyS0"},
		Image:     &model.Image{URL: "file://" + image.path, SHA256: image.sum},
		CloudInit: &model.CloudInit{UserData: "#cloud-config\npassword: " + userSecret + "\n"},
	}
	bad := spec
	bad.Image = &model.Image{URL: "https://user:pw@127.0.0.1:1/pos.raw?" + urlSignature, SHA256: strings.Repeat("0", 64)}
	ex, err := agent.NewExecutor(filepath.Join(state, "agent"), prov, nil)
	if err != nil {
		t.Fatal(err)
	}
	plan := model.Plan{ID: "plan-1", Site: "store-042", Actions: []model.Action{
		{ID: "act-create-pos-1", VM: "pos-1", Operation: model.OpCreate, Spec: &spec, SpecHash: spec.Hash()},
		{ID: "act-start-pos-1", VM: "pos-1", Operation: model.OpStart},
	}}
	if out, err := ex.Execute(t.Context(), plan, 0, nil); err != nil || out != agent.OutcomeDone {
		t.Fatalf("execute: %v %v", out, err)
	}
	// A second plan whose create fails: a failed and a skipped record.
	plan2 := model.Plan{ID: "plan-2", Site: "store-042", Actions: []model.Action{
		{ID: "act-create-pos-2", VM: "pos-2", Operation: model.OpCreate, Spec: &bad, SpecHash: bad.Hash()},
		{ID: "act-start-pos-2", VM: "pos-2", Operation: model.OpStart},
	}}
	if out, err := ex.Execute(t.Context(), plan2, 0, nil); err != nil || out != agent.OutcomeDone {
		t.Fatalf("execute plan 2: %v %v", out, err)
	}
	// The failed create removed its files; leave metadata like an
	// interrupted one would, with the signed URL in it.
	pos2 := filepath.Join(state, "hypervisor", "vms", "pos-2")
	if err := os.MkdirAll(pos2, 0o750); err != nil {
		t.Fatal(err)
	}
	meta, _ := json.Marshal(map[string]any{"name": "pos-2", "phase": "creating", "spec": bad, "specHash": bad.Hash()})
	if err := os.WriteFile(filepath.Join(pos2, "meta.json"), meta, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.nbState, "state.json"), []byte(`{"status":"Connected","ip":"100.64.0.7/16","managementURL":"https://nb.example.com"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *site) vmDir(name string) string { return filepath.Join(s.state, "hypervisor", "vms", name) }

func (s *site) options(t *testing.T) debugbundle.Options {
	nb := &netbird.Client{Binary: fakeNetBird}
	return debugbundle.Options{
		StateDir: s.state, PKIDir: s.pki, AgentVersion: "v1.2.3-test", NetBird: fakeNetBird, Secrets: []string{enrollToken},
		MaxFileBytes: 8 << 10, Name: "bundle",
		Facts: func(ctx context.Context) (any, error) {
			req := api.HeartbeatRequest{ProtocolVersion: api.ProtocolVersion, AgentVersion: "v1.2.3-test",
				Facts: agent.FactsSource{StateDir: s.state, Hypervisor: s.prov, NetBird: nb, AgentVersion: "v1.2.3-test"}.Collect(ctx)}
			var err error
			req.VMs, err = s.prov.List(ctx)
			return req, err
		},
	}
}

// readBundle opens a gzipped tarball and returns its files by path.
func readBundle(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("bundle is not gzip: %v", err)
	}
	tr := tar.NewReader(zr)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("bundle is not a tarball: %v", err)
		}
		if h.Typeflag != tar.TypeReg {
			t.Errorf("%s: type %c, want regular files only", h.Name, h.Typeflag)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := files[h.Name]; dup {
			t.Errorf("%s twice in the bundle", h.Name)
		}
		files[h.Name] = b
	}
	return files
}

// forbidden lists what must never appear in a bundle, by name.
func (s *site) forbidden() map[string][]byte {
	f := map[string][]byte{
		"setup key": []byte(setupKey), "enrollment token": []byte(enrollToken), "cloud-init secret": []byte(userSecret),
		"URL signature": []byte("signedurlsecret"), "URL password": []byte("user:pw@"), "data outside the state dir": []byte(outsideData),
		"private key marker": []byte("PRIVATE KEY"), "key PEM": s.keys.keyPEM, "key DER": s.keys.keyDER,
		"key base64": []byte(base64.StdEncoding.EncodeToString(s.keys.keyDER)),
	}
	// Any 16 consecutive characters of the key's base64 (a fragment a
	// log tail could cut out of a longer copy) count as a leak.
	enc := base64.StdEncoding.EncodeToString(s.keys.keyDER)
	for i := 0; i+16 <= len(enc); i++ {
		f[fmt.Sprintf("key base64 [%d:%d]", i, i+16)] = []byte(enc[i : i+16])
	}
	return f
}

func assertClean(t *testing.T, files map[string][]byte, forbidden map[string][]byte) {
	t.Helper()
	for name, data := range files {
		for what, secret := range forbidden {
			if bytes.Contains(data, secret) {
				t.Errorf("%s contains the %s", name, what)
			}
		}
	}
}

func decode[T any](t *testing.T, files map[string][]byte, name string) T {
	t.Helper()
	var v T
	b, ok := files[name]
	if !ok {
		t.Fatalf("%s missing from the bundle", name)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, b)
	}
	return v
}

func TestBundle(t *testing.T) {
	s := newSite(t)
	pos1 := s.vmDir("pos-1")
	// The guest printed the setup key and a copy of the agent key on its
	// console after a lot of output; the VMM log has the end of a key whose
	// start is beyond the tail.
	appendFile(t, filepath.Join(pos1, "serial.log"), strings.Repeat("boot noise line\n", 1000)+
		"netbird up --setup-key "+setupKey+"\n"+string(s.keys.keyPEM)+"login: \n")
	half := s.keys.keyPEM[len(s.keys.keyPEM)/2:]
	appendFile(t, filepath.Join(pos1, "vmm.log"), strings.Repeat("x", 8<<10)+"\n"+string(half)+"vmm still running\n")
	// A key copy on one long line that the tail's cut would fall into:
	// redacted before the cut, it shrinks, and the whole line fits.
	long := s.vmDir("long")
	if err := os.MkdirAll(long, 0o750); err != nil {
		t.Fatal(err)
	}
	appendFile(t, filepath.Join(long, "vmm.log"), "start "+base64.StdEncoding.EncodeToString(s.keys.keyDER)+strings.Repeat("y", 8<<10-100)+"\n")
	// Hostile layouts: a log symlinked out of the state dir, a VM dir that
	// is a symlink, a FIFO where a log belongs, the key linked inside.
	outside := filepath.Join(t.TempDir(), "outside.log")
	if err := os.WriteFile(outside, []byte(outsideData+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	evil := s.vmDir("evil")
	if err := os.MkdirAll(evil, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		os.Symlink(outside, filepath.Join(evil, "serial.log")),
		os.Symlink("../../../pki/agent.key", filepath.Join(evil, "vmm.log")),
		os.Symlink(filepath.Dir(outside), s.vmDir("escape")),
		syscall.Mkfifo(filepath.Join(s.vmDir("pos-2"), "serial.log"), 0o600),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Another copy of the key where a cached result belongs, unarmoured:
	// only its bytes betray it.
	appendFile(t, filepath.Join(s.state, "agent", "logseq", "leak.seq"), base64.StdEncoding.EncodeToString(s.keys.keyDER))

	// journalctl answers with the agent's log, in which the setup key and
	// a key block were printed by mistake.
	journalctl := filepath.Join(t.TempDir(), "journalctl")
	script := "#!/bin/sh\necho \"args: $*\"\necho 'agent starting setupKey=" + setupKey + "'\ncat <<'EOF'\n" + string(s.keys.keyPEM) + "EOF\necho 'agent stopped'\n"
	if err := os.WriteFile(journalctl, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NBFAKE_STATE_DIR", s.nbState)
	opts := s.options(t)
	opts.JournalUnit, opts.Journalctl = "nkudo-edge", journalctl
	var buf bytes.Buffer
	m, err := debugbundle.Write(t.Context(), &buf, opts)
	if err != nil {
		t.Fatal(err)
	}
	files := readBundle(t, buf.Bytes())
	assertClean(t, files, s.forbidden())

	// Everything expected is there, and the manifest lists exactly the files.
	want := []string{
		"agent/actions.json", "agent/log-sequences.json", "agent/outbox-logs.json", "agent/outbox-results.json",
		"facts.json", "journal.log", "netbird/status.json", "pki/certificates.json", "pki/files.json", "pki/identity.json",
		"state-files.json", "version.json",
		"vms/pos-1/meta.json", "vms/pos-1/serial.log", "vms/pos-1/vmm.json", "vms/pos-1/vmm.log",
		"vms/pos-2/meta.json", "vms/pos-2/vmm.json",
		"vms/evil/vmm.json", "vms/long/vmm.json", "vms/long/vmm.log",
	}
	var listed, got []string
	for _, it := range m.Collected {
		listed = append(listed, it.Path)
	}
	for name := range files {
		rel, ok := strings.CutPrefix(name, "bundle/")
		if !ok {
			t.Errorf("%s is outside the bundle's directory", name)
		}
		if rel != "manifest.json" {
			got = append(got, rel)
		}
	}
	sort.Strings(want)
	sort.Strings(listed)
	sort.Strings(got)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("bundle files (-want +got):\n%s", d)
	}
	if d := cmp.Diff(got, listed); d != "" {
		t.Errorf("manifest lists other files than the bundle holds (-bundle +manifest):\n%s", d)
	}
	fm := decode[debugbundle.Manifest](t, files, "bundle/manifest.json")
	if fm.AgentVersion != "v1.2.3-test" || len(fm.Collected) != len(m.Collected) || len(fm.Skipped) != len(m.Skipped) {
		t.Errorf("manifest.json = %+v, want the returned manifest", fm)
	}

	// Skipped, with reasons.
	skipped := map[string]string{}
	for _, sk := range m.Skipped {
		skipped[sk.Source] = sk.Reason
	}
	for src, want := range map[string]string{
		filepath.Join(s.pki, "agent.key"):             "private key: never collected",
		filepath.Join(evil, "serial.log"):             "leads outside",
		filepath.Join(evil, "vmm.log"):                "not followed",
		s.vmDir("escape"):                             "not a directory",
		filepath.Join(s.vmDir("pos-2"), "serial.log"): "not a regular file",
		filepath.Join(evil, "meta.json"):              "not present",
		filepath.Join(s.vmDir("pos-2"), "vmm.log"):    "not present",
	} {
		if r, ok := skipped[src]; !ok || !strings.Contains(r, want) {
			t.Errorf("skipped[%s] = %q, want it to say %q (skipped: %v)", src, r, want, skipped)
		}
	}

	// The certificate's public facts; the key only as a yes/no.
	certs := decode[map[string]json.RawMessage](t, files, "bundle/pki/certificates.json")
	var agentCerts []struct {
		Subject, Serial     string
		NotBefore, NotAfter time.Time
		Expired             bool
	}
	if err := json.Unmarshal(certs["agent.crt"], &agentCerts); err != nil || len(agentCerts) != 1 {
		t.Fatalf("agent.crt facts = %s (%v)", certs["agent.crt"], err)
	}
	c := agentCerts[0]
	if c.Serial != s.keys.cert.SerialNumber.Text(16) || !c.NotAfter.Equal(s.keys.cert.NotAfter) ||
		!c.NotBefore.Equal(s.keys.cert.NotBefore) || !strings.Contains(c.Subject, "CN=store-042") || c.Expired {
		t.Errorf("agent certificate = %+v, want serial %s", c, s.keys.cert.SerialNumber.Text(16))
	}
	if string(certs["keyMatchesCertificate"]) != `"yes"` {
		t.Errorf("keyMatchesCertificate = %s", certs["keyMatchesCertificate"])
	}

	// Identity: names kept, setup key redacted.
	ident := decode[map[string]any](t, files, "bundle/pki/identity.json")
	wantIdent := map[string]any{"tenant": "acme", "site": "store-042", "controlPlane": "https://cp.example.com:8443",
		"netbird": map[string]any{"managementUrl": "https://nb.example.com", "setupKey": "[REDACTED]"}}
	if d := cmp.Diff(wantIdent, ident); d != "" {
		t.Errorf("identity (-want +got):\n%s", d)
	}

	// The executor's records and buffered results and logs.
	actions := decode[struct {
		Total   int
		Records []agent.Record
	}](t, files, "bundle/agent/actions.json")
	status := map[string]model.ActionStatus{}
	for _, r := range actions.Records {
		status[r.ActionID] = r.Status
	}
	wantStatus := map[string]model.ActionStatus{"act-create-pos-1": model.ActionSucceeded, "act-start-pos-1": model.ActionSucceeded,
		"act-create-pos-2": model.ActionFailed, "act-start-pos-2": model.ActionSkipped}
	if d := cmp.Diff(wantStatus, status); d != "" || actions.Total != 4 {
		t.Errorf("action records (total %d) (-want +got):\n%s", actions.Total, d)
	}
	type box struct {
		Pending int
		Dropped string
		Entries []struct {
			Seq    uint64
			Result *api.ActionResult
			Log    *api.LogLine
		}
	}
	results := decode[box](t, files, "bundle/agent/outbox-results.json")
	logs := decode[box](t, files, "bundle/agent/outbox-logs.json")
	if results.Pending < 4 || len(results.Entries) != results.Pending || results.Dropped != "0" {
		t.Errorf("results outbox: pending %d, %d entries, dropped %q", results.Pending, len(results.Entries), results.Dropped)
	}
	var logText strings.Builder
	for _, e := range logs.Entries {
		if e.Log != nil {
			logText.WriteString(e.Log.Line + "\n")
		}
	}
	if !strings.Contains(logText.String(), "launched cloud-hypervisor") || !strings.Contains(logText.String(), "127.0.0.1:1/pos.raw") {
		t.Errorf("log outbox lacks the provider's progress:\n%s", logText.String())
	}

	// Per VM: metadata without cloud-init data, the VMM's answers, log tails.
	meta := decode[struct {
		Phase string
		Spec  model.VMSpec
	}](t, files, "bundle/vms/pos-1/meta.json")
	if meta.Phase != "created" || meta.Spec.CloudInit == nil || !strings.HasPrefix(meta.Spec.CloudInit.UserData, "[REDACTED] ") {
		t.Errorf("pos-1 meta = %+v", meta)
	}
	meta2 := decode[struct{ Spec model.VMSpec }](t, files, "bundle/vms/pos-2/meta.json")
	if u := meta2.Spec.Image.URL; u != "https://[REDACTED]@127.0.0.1:1/pos.raw?[REDACTED]" {
		t.Errorf("pos-2 image URL = %q", u)
	}
	vmm := decode[struct {
		PID      int
		PIDAlive bool
		Socket   string
		Ping     cloudhypervisor.PingResponse
		Info     struct{ State string }
	}](t, files, "bundle/vms/pos-1/vmm.json")
	if vmm.PID == 0 || !vmm.PIDAlive || vmm.Socket != "present" || vmm.Ping.Version == "" || vmm.Info.State != "Running" {
		t.Errorf("pos-1 vmm = %+v", vmm)
	}
	items := map[string]debugbundle.Item{}
	for _, it := range m.Collected {
		items[it.Path] = it
	}
	serial := string(files["bundle/vms/pos-1/serial.log"])
	if it := items["vms/pos-1/serial.log"]; !it.Truncated || it.SourceBytes <= 8<<10 || it.Redactions < 2 || it.Bytes > 8<<10 {
		t.Errorf("serial.log item = %+v", it)
	}
	if !strings.HasPrefix(serial, "boot noise line\n") || !strings.Contains(serial, "--setup-key [REDACTED]\n[REDACTED private key block]\nlogin:") {
		t.Errorf("serial.log tail = ...%s", serial[max(0, len(serial)-300):])
	}
	if v := string(files["bundle/vms/pos-1/vmm.log"]); !strings.Contains(v, "[REDACTED private key block]\nvmm still running") {
		t.Errorf("vmm.log tail = %q", v)
	}
	if it, v := items["vms/long/vmm.log"], string(files["bundle/vms/long/vmm.log"]); it.Redactions != 1 || !strings.HasPrefix(v, "start [REDACTED]yyy") {
		t.Errorf("long vmm.log: %+v, starts %q", it, v[:min(len(v), 40)])
	}
	seqs := decode[map[string]string](t, files, "bundle/agent/log-sequences.json")
	if d := cmp.Diff(map[string]string{"plan-1": "10", "plan-2": "4", "leak": "unknown: not a number (164 bytes)"}, seqs); d != "" {
		t.Errorf("log sequences (-want +got):\n%s", d)
	}

	journal := string(files["bundle/journal.log"])
	if want := "args: --unit nkudo-edge --no-pager --output short-iso-precise --lines 20000\nagent starting setupKey=[REDACTED]\n[REDACTED private key block]\nagent stopped\n"; journal != want {
		t.Errorf("journal.log = %q, want %q", journal, want)
	}

	// Facts as `nkudo-edge facts` prints them, NetBird as netbird says.
	facts := decode[api.HeartbeatRequest](t, files, "bundle/facts.json")
	if facts.Facts.CPUs == 0 || facts.Facts.Hypervisor.Version == "" || len(facts.VMs) != 1 || facts.VMs[0].Name != "pos-1" || facts.Facts.NetBird.State != "Connected" {
		t.Errorf("facts = %+v", facts)
	}
	nbs := decode[netbird.Status](t, files, "bundle/netbird/status.json")
	if nbs.DaemonStatus != "Connected" || nbs.IP() != "100.64.0.7" {
		t.Errorf("netbird status = %+v", nbs)
	}
	tree := decode[struct {
		Files []struct{ Path, Type, Target string }
	}](t, files, "bundle/state-files.json")
	types := map[string]string{}
	for _, f := range tree.Files {
		types[f.Path] = f.Type
	}
	for p, typ := range map[string]string{"pki/agent.key": "file", "hypervisor/vms/escape": "symlink", "hypervisor/vms/pos-1/api.sock": "socket",
		"hypervisor/vms/pos-2/serial.log": "fifo"} {
		if types[p] != typ {
			t.Errorf("state listing: %s is %q, want %q", p, types[p], typ)
		}
	}
}

// TestBundleBareHost: nothing enrolled, no state, no netbird: the bundle
// still comes out, says why each part is missing, and creates nothing.
func TestBundleBareHost(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	out := filepath.Join(dir, "out.tar.gz")
	m, err := debugbundle.WriteFile(t.Context(), out, debugbundle.Options{StateDir: state, PKIDir: filepath.Join(state, "pki"),
		NetBird: filepath.Join(dir, "no-netbird"), AgentVersion: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("the state dir was created (stat: %v)", err)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("bundle file: %v %v", fi, err)
	}
	data, _ := os.ReadFile(out)
	files := readBundle(t, data)
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	if d := cmp.Diff([]string{"nkudo-edge-debug/manifest.json", "nkudo-edge-debug/version.json"}, names); d != "" {
		t.Errorf("files (-want +got):\n%s", d)
	}
	var sources []string
	for _, s := range m.Skipped {
		sources = append(sources, s.Source)
		if s.Reason == "" {
			t.Errorf("skipped %s without a reason", s.Source)
		}
	}
	for _, want := range []string{state, "nkudo-edge facts", "netbird status --json"} {
		if !strings.Contains(strings.Join(sources, "\n"), want) {
			t.Errorf("skipped sources %q lack %q", sources, want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
}

func TestDefaultName(t *testing.T) {
	at := time.Date(2026, 11, 26, 23, 5, 9, 0, time.FixedZone("x", 3600))
	for host, want := range map[string]string{
		"edge-042.example": "nkudo-edge-debug-edge-042.example-20261126T220509Z",
		"we/ird host":      "nkudo-edge-debug-we_ird_host-20261126T220509Z",
		"":                 "nkudo-edge-debug-unknown-20261126T220509Z",
	} {
		if got := debugbundle.DefaultName(host, at); got != want {
			t.Errorf("DefaultName(%q) = %q, want %q", host, got, want)
		}
	}
}

// TestBundleCancelled: an interrupted run leaves no tarball behind.
func TestBundleCancelled(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	out := filepath.Join(dir, "b.tar.gz")
	if _, err := debugbundle.WriteFile(ctx, out, debugbundle.Options{StateDir: dir, PKIDir: dir, NetBird: filepath.Join(dir, "none")}); err == nil {
		t.Fatal("WriteFile with a cancelled context succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}
