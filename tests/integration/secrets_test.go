package integration

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/model"
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
	var recipient string
	waitEdge(t, "the site's age recipient", 20*time.Second, func() (bool, string) {
		st, err := env.UserClient(env.AdminToken, "acme").GetSite(t.Context(), "store-1")
		if err != nil {
			return false, err.Error()
		}
		if st.Facts != nil {
			recipient = st.Facts.AgeRecipient
		}
		return strings.HasPrefix(recipient, "age1"), recipient
	})
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

// The plaintext of encrypted user-data is nowhere on the control plane's
// side (database files, logs, API answers, plans) and is on the seed disk
// the agent wrote, read back with mtools.
func TestSiteSecretNeverInControlPlane(t *testing.T) {
	env, e, logs, recipient := secretEnv(t)
	const secret = "#cloud-config\nchpasswd: {list: 'root:s3cr3t-only-for-store-1'}\n"
	ct := encryptArmoured(t, recipient, secret)

	vm := e.vm("vm-a", model.VMRunning)
	vm.Spec.CloudInit = &model.CloudInit{UserDataEncrypted: ct}
	d := e.desired(vm)
	p := e.plan(d)
	if p == nil {
		t.Fatal("no plan for a missing VM")
	}
	e.waitPlanDone(p)
	e.waitConverged(d)

	seedImg := filepath.Join(e.state, "hypervisor", "vms", "vm-a", "cidata.img")
	if _, err := exec.LookPath("mtype"); err != nil {
		t.Fatalf("mtype (mtools) is needed to read the seed disk back: %v", err)
	}
	out, err := exec.Command("mtype", "-i", seedImg, "::user-data").Output()
	if err != nil || string(out) != secret {
		t.Fatalf("seed user-data = %q, %v; want the decrypted secret", out, err)
	}

	needle := []byte("s3cr3t-only-for-store-1")
	// API answers: the site, its VMs, the plans and the plan itself.
	c := env.UserClient(env.AdminToken, "acme")
	answers := map[string]string{}
	answer := func(what string, v any, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		b, _ := json.Marshal(v)
		answers[what] = string(b)
	}
	site, err := c.GetSite(t.Context(), "store-1")
	answer("GET site", site, err)
	vms, err := c.SiteVMs(t.Context(), "store-1")
	answer("GET site VMs", vms, err)
	plans, err := c.ListPlans(t.Context(), api.PlanFilter{})
	answer("GET plans", plans, err)
	plan, err := c.GetPlan(t.Context(), p.ID)
	answer("GET plan", plan, err)
	if !strings.Contains(answers["GET plan"], "BEGIN AGE ENCRYPTED FILE") {
		t.Error("GET plan does not carry the ciphertext: its check proves nothing")
	}
	sp, err := env.Store().GetPlan(t.Context(), "acme", p.ID)
	if err != nil {
		t.Fatal(err)
	}
	planJSON, _ := json.Marshal(sp)
	if !bytes.Contains(planJSON, []byte("BEGIN AGE ENCRYPTED FILE")) {
		t.Error("the stored plan does not carry the ciphertext: the check below proves nothing")
	}
	answers["stored plan"] = string(planJSON)
	for what, body := range answers {
		if strings.Contains(body, string(needle)) {
			t.Errorf("%s holds the plaintext", what)
		}
	}
	if bytes.Contains([]byte(logs.String()), needle) {
		t.Error("the control plane's log holds the plaintext")
	}
	if len([]byte(logs.String())) == 0 {
		t.Error("the control plane logged nothing: the log check proves nothing")
	}
	// The database files (SQLite and its WAL) and everything else the
	// control plane keeps on disk.
	files := 0
	err = filepath.WalkDir(env.DataDir, func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(b, needle) {
			t.Errorf("%s holds the plaintext", path)
		}
		return nil
	})
	if err != nil || files == 0 {
		t.Errorf("walk %s: %d files, %v", env.DataDir, files, err)
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
