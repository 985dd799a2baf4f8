package reconciler_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
)

// sshSigner is an ssh-keygen key git signs with (gpg.format=ssh).
type sshSigner struct {
	priv        string // private key file
	line        string // allowed_signers line
	fingerprint string // SHA256:…
}

func newSSHSigner(t *testing.T, principal string) sshSigner {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		skipWithoutSigningTool(t, "ssh-keygen")
	}
	priv := filepath.Join(t.TempDir(), "id")
	run(t, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", principal, "-f", priv)
	pub, err := os.ReadFile(priv + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	fp := strings.Fields(run(t, nil, "ssh-keygen", "-l", "-E", "sha256", "-f", priv+".pub"))[1]
	return sshSigner{priv: priv, line: principal + " " + strings.TrimSpace(string(pub)), fingerprint: fp}
}

func (s sshSigner) args() []string {
	return []string{"-c", "gpg.format=ssh", "-c", "user.signingkey=" + s.priv}
}

// gpgSigner is a key in a throw-away GNUPGHOME (set for the test, so git's
// gpg finds it).
type gpgSigner struct {
	fingerprint string
	armored     string
}

func newGPGSigner(t *testing.T, uid string) gpgSigner {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		skipWithoutSigningTool(t, "gpg")
	}
	home := os.Getenv("GNUPGHOME")
	if !strings.Contains(home, "nkudo-gpg") {
		// Short: gpg-agent's socket path must fit a sockaddr.
		var err error
		home, err = os.MkdirTemp("", "nkudo-gpg")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			exec.Command("gpgconf", "--kill", "gpg-agent").Run()
			os.RemoveAll(home)
		})
		t.Setenv("GNUPGHOME", home)
	}
	run(t, nil, "gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
	var fpr string
	for _, l := range strings.Split(run(t, nil, "gpg", "--batch", "--with-colons", "--list-keys", uid), "\n") {
		if f := strings.Split(l, ":"); f[0] == "fpr" {
			fpr = f[9]
			break
		}
	}
	if fpr == "" {
		t.Fatalf("no fingerprint for %s", uid)
	}
	return gpgSigner{fingerprint: fpr, armored: run(t, nil, "gpg", "--batch", "--armor", "--export", fpr)}
}

func (g gpgSigner) args() []string {
	return []string{"-c", "gpg.format=openpgp", "-c", "user.signingkey=" + g.fingerprint}
}

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// commitSigned commits everything with `git commit -S` (sign: the signer's
// -c options; nil: unsigned) and pushes.
func commitSigned(g *gittest.Repo, msg string, sign []string, extra ...string) string {
	g.Git(g.Work, "add", "-A")
	args := append(append([]string{}, sign...), "commit", "-q", "--allow-empty", "-m", msg)
	if sign != nil {
		args = append(args, "-S")
	}
	g.Git(g.Work, append(args, extra...)...)
	g.Git(g.Work, "push", "-q", "-f", "origin", g.Branch)
	return g.Head()
}

func (e *env) setPolicy(p store.VerifyPolicy) {
	e.t.Helper()
	if _, err := e.st.UpdateRepository(e.t.Context(), admin, tenant, e.repo.ID, store.RepositoryUpdate{Verify: &p}); err != nil {
		e.t.Fatal(err)
	}
}

// wantRejected checks that reconciling the branch head (commit) was
// refused with reason and that nothing changed.
func (e *env) wantRejected(commit, reason, lastApplied string, before []store.StoredPlan) {
	e.t.Helper()
	_, err := e.reconcile("")
	if !errors.Is(err, reconciler.ErrInvalidCommit) {
		e.t.Fatalf("reconcile %s: err = %v, want ErrInvalidCommit", commit[:12], err)
	}
	want := "commit " + commit[:12] + " is not signed by a trusted key (" + reason + ")"
	if st := e.status(commit, forge.ContextValidate); st.State != store.StateFailure || st.Description != want {
		e.t.Errorf("nkudo/validate = %s %q, want failure %q", st.State, st.Description, want)
	}
	if p := e.status(commit, forge.ContextPlan); p.State != "" {
		e.t.Errorf("an unverified commit got a plan status: %+v", p)
	}
	if diff := cmp.Diff(before, e.plans()); diff != "" {
		e.t.Errorf("plans changed (-before +after):\n%s", diff)
	}
	repo, _ := e.st.GetRepository(e.t.Context(), tenant, e.repo.ID)
	if repo.LastAppliedCommit != lastApplied || !strings.Contains(repo.LastError, want) {
		e.t.Errorf("repository: last applied %.12s (want %.12s), last error %q (want it to contain %q)", repo.LastAppliedCommit, lastApplied, repo.LastError, want)
	}
}

// verifiedSigners returns the signers the audit log recorded, by commit.
func (e *env) verifiedSigners() map[string]map[string]string {
	e.t.Helper()
	evs, err := e.st.ListAudit(e.t.Context(), tenant, 0, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, ev := range evs {
		if ev.Action != "repository.verify" {
			continue
		}
		var d struct {
			Commit string            `json:"commit"`
			Signer map[string]string `json:"signer"`
		}
		if err := json.Unmarshal(ev.Detail, &d); err != nil {
			e.t.Fatal(err)
		}
		out[d.Commit] = d.Signer
	}
	return out
}

func TestUnsignedCommitRejected(t *testing.T) {
	e := newEnv(t, threeSites, nil)
	alice := newSSHSigner(t, "alice@example.com")
	mallory := newSSHSigner(t, "mallory@example.com")
	e.setPolicy(store.VerifyPolicy{Mode: store.VerifyHead, AllowedSigners: alice.line + "\n"})

	e.git.Fleet("fleet", 3, 1)
	c1 := commitSigned(e.git, "valid, signed", alice.args())
	e.mustReconcile()
	before := e.plans()
	if len(before) != 3 {
		t.Fatalf("%d plans after the signed commit, want 3", len(before))
	}

	// Each of these would prune site-0003, were it trusted.
	e.git.Remove("fleet/site-0003.yaml")
	c2 := commitSigned(e.git, "unsigned", nil)
	e.wantRejected(c2, "unsigned", c1, before)

	c3 := commitSigned(e.git, "signed by an untrusted key", mallory.args(), "--amend")
	e.wantRejected(c3, "signed by "+mallory.fingerprint, c1, before)

	// Trusted, then amended (same content) by someone else.
	commitSigned(e.git, "signed by alice", alice.args(), "--amend")
	c4 := commitSigned(e.git, "amended by mallory", mallory.args(), "--amend")
	e.wantRejected(c4, "signed by "+mallory.fingerprint, c1, before)

	// A pull request from an unknown contributor shows as unverified
	// before merge, and stores no plan.
	e.git.Write("fleet/extra.txt", "x\n")
	pr := e.git.PushBranch("pr-1", "unsigned contribution")
	repo, _ := e.st.GetRepository(t.Context(), tenant, e.repo.ID)
	p, err := e.rec.PreviewNow(t.Context(), repo, 1, pr)
	if err != nil {
		t.Fatal(err)
	}
	want := "commit " + pr[:12] + " is not signed by a trusted key (unsigned)"
	if p.Summary != "unverified: "+want {
		t.Errorf("preview summary = %q, want unverified: %q", p.Summary, want)
	}
	if st := e.status(pr, forge.ContextValidate); st.State != store.StateFailure || st.Description != want {
		t.Errorf("preview nkudo/validate = %s %q, want failure %q", st.State, st.Description, want)
	}

	// Mode all: an unsigned commit under a signed head is refused too,
	// and is named.
	e.git.Git(e.git.Work, "reset", "-q", "--hard", c1)
	e.git.Remove("fleet/site-0003.yaml")
	c5 := commitSigned(e.git, "unsigned middle", nil)
	e.git.Write("fleet/note.txt", "n\n")
	c6 := commitSigned(e.git, "signed head", alice.args())
	e.setPolicy(store.VerifyPolicy{Mode: store.VerifyAll, AllowedSigners: alice.line + "\n"})
	_, err = e.reconcile("")
	if !errors.Is(err, reconciler.ErrInvalidCommit) || !strings.Contains(err.Error(), "commit "+c5[:12]+" is not signed by a trusted key (unsigned)") {
		t.Fatalf("mode all: err = %v, want the unsigned commit %.12s named", err, c5)
	}
	if diff := cmp.Diff(before, e.plans()); diff != "" {
		t.Errorf("mode all: plans changed (-before +after):\n%s", diff)
	}
	// Mode head looks at the head only: the same branch is applied.
	e.setPolicy(store.VerifyPolicy{Mode: store.VerifyHead, AllowedSigners: alice.line + "\n"})
	if res := e.mustReconcile(); res.Commit != c6 || !res.Valid {
		t.Errorf("mode head: result %+v, want %.12s applied", res, c6)
	}
	if _, ok := e.verifiedSigners()[c2]; ok {
		t.Errorf("the audit log records a signer for the unsigned commit")
	}
}

func TestSSHSignedCommitApplied(t *testing.T) {
	e := newEnv(t, threeSites, nil)
	alice := newSSHSigner(t, "alice@example.com")
	bob := newSSHSigner(t, "bob@example.com")
	e.setPolicy(store.VerifyPolicy{Mode: store.VerifyAll, AllowedSigners: "# ops\n" + alice.line + "\n" + bob.line + "\n"})

	e.git.Fleet("fleet", 3, 1)
	c1 := commitSigned(e.git, "signed by alice", alice.args())
	res := e.mustReconcile()
	if !res.Valid || len(res.Stored) != 3 {
		t.Fatalf("signed commit: valid %v, %d plans, want 3", res.Valid, len(res.Stored))
	}
	if st := e.status(c1, forge.ContextValidate); st.State != store.StateSuccess {
		t.Errorf("nkudo/validate = %+v, want success", st)
	}

	// A merge commit: the side branch and the merge are both signed, so
	// mode all lets it through.
	e.git.Git(e.git.Work, "checkout", "-q", "-b", "side")
	e.git.Write("fleet/side.txt", "side\n")
	e.git.Git(e.git.Work, "add", "-A")
	e.git.Git(e.git.Work, append(bob.args(), "commit", "-q", "-S", "-m", "side file")...)
	e.git.Git(e.git.Work, "checkout", "-q", "main")
	e.git.Git(e.git.Work, append(alice.args(), "merge", "-q", "--no-ff", "-S", "-m", "merge side", "side")...)
	e.git.Git(e.git.Work, "push", "-q", "origin", "main")
	merge := e.git.Head()
	if res := e.mustReconcile(); res.Commit != merge {
		t.Fatalf("merge commit: reconciled %.12s, want %.12s", res.Commit, merge)
	}
	repo, _ := e.st.GetRepository(t.Context(), tenant, e.repo.ID)
	if repo.LastAppliedCommit != merge || repo.LastError != "" {
		t.Errorf("after the merge: last applied %.12s (want %.12s), error %q", repo.LastAppliedCommit, merge, repo.LastError)
	}

	// Audit names the verified signer of every applied commit.
	signers := e.verifiedSigners()
	for c, want := range map[string]sshSigner{c1: alice, merge: alice} {
		got := signers[c]
		if got["kind"] != "ssh" || got["key"] != want.fingerprint || got["name"] != strings.Fields(want.line)[0] {
			t.Errorf("audit signer of %.12s = %v, want ssh %s", c, got, want.fingerprint)
		}
	}

	// Bob's key is removed from the policy: his next commit is refused.
	before := e.plans()
	e.setPolicy(store.VerifyPolicy{Mode: store.VerifyAll, AllowedSigners: alice.line + "\n"})
	e.git.Remove("fleet/site-0003.yaml")
	c3 := commitSigned(e.git, "signed by bob", bob.args())
	e.wantRejected(c3, "signed by "+bob.fingerprint, merge, before)
}

func TestGPGSignedCommitApplied(t *testing.T) {
	e := newEnv(t, threeSites, nil)
	carol := newGPGSigner(t, "Carol <carol@example.com>")
	dave := newGPGSigner(t, "Dave <dave@example.com>")
	e.setPolicy(store.VerifyPolicy{Mode: store.VerifyHead, GPGKeys: carol.armored})

	e.git.Fleet("fleet", 3, 1)
	c1 := commitSigned(e.git, "signed by carol", carol.args())
	res := e.mustReconcile()
	if !res.Valid || len(res.Stored) != 3 {
		t.Fatalf("signed commit: valid %v, %d plans, want 3", res.Valid, len(res.Stored))
	}
	got := e.verifiedSigners()[c1]
	if got["kind"] != "openpgp" || got["key"] != carol.fingerprint || got["name"] != "Carol <carol@example.com>" {
		t.Errorf("audit signer = %v, want openpgp %s", got, carol.fingerprint)
	}

	before := e.plans()
	e.git.Remove("fleet/site-0003.yaml")
	c2 := commitSigned(e.git, "signed by dave", dave.args())
	e.wantRejected(c2, "signed by OpenPGP key "+dave.fingerprint, c1, before)
}

// skipWithoutSigningTool skips loudly when a signing tool is missing, and
// fails instead where the suite must run (NKUDO_SIGNING_TOOLS=require, set
// by .ci/run).
func skipWithoutSigningTool(t *testing.T, tool string) {
	t.Helper()
	if os.Getenv("NKUDO_SIGNING_TOOLS") == "require" {
		t.Fatalf("%s is not installed and NKUDO_SIGNING_TOOLS=require", tool)
	}
	t.Skipf("SKIP: %s is not installed (set NKUDO_SIGNING_TOOLS=require to make this a failure)", tool)
}
