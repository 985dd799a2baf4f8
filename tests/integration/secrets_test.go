package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
)

// secretEnv starts a control plane logging at debug level into a buffer and
// one site whose agent has reported its age recipient.
func secretEnv(t *testing.T) (*cptest.Env, *edgeSite, *syncBuffer, string) {
	t.Helper()
	logs := &syncBuffer{}
	env := cptest.Start(t, cptest.Options{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Configure: func(o *controlplane.Options) {
			o.MinHeartbeatInterval = 300 * time.Millisecond
		}})
	e := newEdgeSite(t, env, "acme", "store-1")
	e.start()
	e.waitFirstHeartbeat()
	recipient := waitRecipient(t, env, "store-1")
	return env, e, logs, recipient
}

// encryptArmoured does what nkudoctl secrets encrypt does.
func encryptArmoured(t *testing.T, recipient, plain string) string {
	t.Helper()
	r, err := age.ParseX25519Recipient(recipient)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(plain)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// waitRecipient waits until the site's agent has reported its age recipient.
func waitRecipient(t *testing.T, env *cptest.Env, site string) string {
	t.Helper()
	var recipient string
	waitEdge(t, "the site's age recipient", 20*time.Second, func() (bool, string) {
		st, err := env.UserClient(env.AdminToken, "acme").GetSite(t.Context(), site)
		if err != nil {
			return false, err.Error()
		}
		if st.Facts != nil {
			recipient = st.Facts.AgeRecipient
		}
		return strings.HasPrefix(recipient, "age1"), recipient
	})
	return recipient
}

// armourBlock indents age armour as a YAML literal block at depth spaces.
func armourBlock(armour string, depth int) string {
	pad := strings.Repeat(" ", depth)
	return pad + strings.ReplaceAll(strings.TrimSuffix(armour, "\n"), "\n", "\n"+pad) + "\n"
}

// The plaintext of encrypted user-data and of an encrypted cloud-init file
// is nowhere on the control plane's side (database files, logs, API
// answers, plans, the commit statuses it records and posts to the forge
// and to git notes) and is on the seed disks the agent wrote, read back
// with mtools. The manifests go the whole GitOps way: a commit, a signed
// push, the reconciler, the real agent.
func TestSiteSecretNeverInControlPlane(t *testing.T) {
	logs := &syncBuffer{}
	g := startGitOps(t, gitopsConfig{edgeSite: "store-1",
		logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	g.edge.start()
	recipient := waitRecipient(t, g.env, "store-1")

	artifacts := map[string][]byte{"/vmlinux": []byte("fake kernel"), "/root.raw": []byte("fake root disk")}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := artifacts[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	digest := func(p string) string { sum := sha256.Sum256(artifacts[p]); return hex.EncodeToString(sum[:]) }
	vm := func(name, cloudInit string) string {
		return fmt.Sprintf(`apiVersion: nkudo.io/v1alpha1
kind: VirtualMachine
metadata:
  name: %s
  site: store-1
spec:
  state: Running
  cpus: 1
  memoryMiB: 256
  image:
    url: %[2]s/root.raw
    sha256: %[4]s
  kernel:
    url: %[2]s/vmlinux
    sha256: %[3]s
    cmdline: console=ttyS0
  cloudInit:
%[5]s`, name, srv.URL, digest("/vmlinux"), digest("/root.raw"), cloudInit)
	}

	const secret = "#cloud-config\nchpasswd: {list: 'root:s3cr3t-only-for-store-1'}\n"
	const fileSecret = "token=f1le-s3cr3t-only-for-store-1\n"
	fileB64 := base64.StdEncoding.EncodeToString([]byte(fileSecret))
	g.git.Write("manifests/store-1.yaml", gittest.Site("store-1")+"---\n"+
		vm("vm-a", "    userDataEncrypted: |\n"+armourBlock(encryptArmoured(t, recipient, secret), 6))+"---\n"+
		vm("vm-b", "    files:\n      - path: /etc/app/token\n        permissions: \"0600\"\n        contentEncrypted: |\n"+
			armourBlock(encryptArmoured(t, recipient, fileSecret), 10)))
	c1 := g.git.Commit("store-1: VMs with secrets")
	g.pushApplied("delivery-1", c1)

	if _, err := exec.LookPath("mtype"); err != nil {
		t.Fatalf("mtype (mtools) is needed to read the seed disk back: %v", err)
	}
	seed := func(vm string) string {
		out, err := exec.Command("mtype", "-i", filepath.Join(g.edge.state, "hypervisor", "vms", vm, "cidata.img"), "::user-data").Output()
		if err != nil {
			t.Fatalf("read %s's seed: %v", vm, err)
		}
		return string(out)
	}
	if out := seed("vm-a"); out != secret {
		t.Fatalf("vm-a seed user-data = %q; want the decrypted secret", out)
	}
	if out := seed("vm-b"); !strings.Contains(out, "  - path: \"/etc/app/token\"\n    encoding: b64\n    content: "+fileB64+"\n") {
		t.Fatalf("vm-b seed user-data = %q; want the decrypted file in write_files", out)
	}

	// The plaintexts, and the file as it is written on the seed (base64).
	needles := []string{"s3cr3t-only-for-store-1", fileB64}
	check := func(what, body string) {
		t.Helper()
		for _, n := range needles {
			if strings.Contains(body, n) {
				t.Errorf("%s holds the plaintext %q", what, n)
			}
		}
	}
	// API answers: the site, its VMs, the plans, each plan, the commit's statuses.
	c := g.acme.Client
	answer := func(what string, v any, err error) string {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		// An empty body would pass the check: a marshal error fails.
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: marshal: %v", what, err)
		}
		check(what, string(b))
		return string(b)
	}
	site, err := c.GetSite(t.Context(), "store-1")
	answer("GET site", site, err)
	vms, err := c.SiteVMs(t.Context(), "store-1")
	answer("GET site VMs", vms, err)
	plans, err := c.ListPlans(t.Context(), api.PlanFilter{})
	answer("GET plans", plans, err)
	if len(plans) == 0 {
		t.Fatal("no plans: the plan checks prove nothing")
	}
	creates := 0
	for _, ap := range plans {
		p := ap.Plan
		plan, err := c.GetPlan(t.Context(), p.ID)
		body := answer("GET plan "+p.ID, plan, err)
		// A plan that creates VMs ships their spec, so it must carry the
		// ciphertext; a later plan (a drift restart) may carry no spec.
		if slices.ContainsFunc(plan.Plan.Actions, func(a model.Action) bool { return a.Operation == model.OpCreate }) {
			creates++
			if !strings.Contains(body, "BEGIN AGE ENCRYPTED FILE") {
				t.Errorf("GET plan %s creates VMs but does not carry the ciphertext: its check proves nothing", p.ID)
			}
		}
		sp, err := g.env.Store().GetPlan(t.Context(), "acme", p.ID)
		answer("stored plan "+p.ID, sp, err)
	}
	if creates == 0 {
		t.Fatal("no plan creates the VMs: the plan checks prove nothing")
	}
	sts, err := c.CommitStatuses(t.Context(), g.repo.ID, c1)
	answer("GET commit statuses", sts, err)
	if len(sts) == 0 {
		t.Error("the API shows no statuses for the commit: its check proves nothing")
	}
	// What the forge received, and the statuses in git notes.
	forged := g.forge.Statuses(c1)
	if len(forged) == 0 {
		t.Error("the forge received no statuses: its check proves nothing")
	}
	answer("forge statuses", forged, nil)
	notes := g.git.Git(g.git.Remote, "notes", "--ref=nkudo", "show", c1)
	if !strings.Contains(notes, "nkudo/apply") {
		t.Errorf("git notes hold no apply status: their check proves nothing:\n%s", notes)
	}
	check("git notes", notes)

	check("the control plane's log", logs.String())
	if logs.String() == "" {
		t.Error("the control plane logged nothing: the log check proves nothing")
	}
	// The database files (SQLite and its WAL) and everything else the
	// control plane keeps on disk.
	files := 0
	err = filepath.WalkDir(g.env.DataDir, func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		check(path, string(b))
		return nil
	})
	if err != nil || files == 0 {
		t.Errorf("walk %s: %d files, %v", g.env.DataDir, files, err)
	}
}

// User-data encrypted to another site's key fails this site's action with
// an error naming this site's recipient, and creates nothing.
func TestSiteSecretForAnotherSiteFails(t *testing.T) {
	env, e, _, recipient := secretEnv(t)
	other, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	vm := e.vm("vm-a", model.VMRunning)
	vm.Spec.CloudInit = &model.CloudInit{UserDataEncrypted: encryptArmoured(t, other.Recipient().String(), "#cloud-config\n{}\n")}
	p := e.plan(e.desired(vm))
	if p == nil {
		t.Fatal("no plan for a missing VM")
	}
	var sp store.StoredPlan
	waitEdge(t, "the plan to finish", 30*time.Second, func() (bool, string) {
		sp, err = env.Store().GetPlan(t.Context(), "acme", p.ID)
		if err != nil {
			return false, err.Error()
		}
		return sp.Status == model.PlanSucceeded || sp.Status == model.PlanFailed, string(sp.Status)
	})
	if sp.Status != model.PlanFailed {
		t.Fatalf("plan %s, want failed", sp.Status)
	}
	want := "user-data is not encrypted to this site's key (" + recipient + ")"
	found := false
	for _, a := range sp.Actions {
		if strings.Contains(a.Error, want) {
			found = true
		}
	}
	if !found {
		b, _ := json.MarshalIndent(sp.Actions, "", "  ")
		t.Errorf("no action failed with %q:\n%s", want, b)
	}
	if _, err := os.Stat(filepath.Join(e.state, "hypervisor", "vms", "vm-a", "cidata.img")); err == nil {
		t.Error("a seed disk was written for the refused user-data")
	}
}
