// Package webhooks owns forge webhook deliveries: it refuses what the
// headers already disqualify before reading a body and caps the bodies read
// at once, checks authenticity (GitHub and Gitea/Forgejo HMAC signatures
// computed as the body streams in, GitLab's shared token, all compared in
// constant time), parses push and pull-request payloads into Events,
// de-duplicates deliveries by ID and replays by body hash through the
// store, and hands the result to the reconciler asynchronously so forges
// get an answer within milliseconds.
package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strings"
)

// Forge names the sender of a delivery.
type Forge string

const (
	GitHub  Forge = "github"
	Gitea   Forge = "gitea"
	Forgejo Forge = "forgejo"
	GitLab  Forge = "gitlab"
)

// Kind is what a delivery asks n-kudo to do.
type Kind string

const (
	KindPush        Kind = "push"         // a branch moved: reconcile
	KindPullRequest Kind = "pull_request" // a PR head changed: preview
	KindPing        Kind = "ping"         // the forge checks the hook
	KindIgnored     Kind = "ignored"      // understood, but nothing to do
	// KindPullRequestClosed: a PR was closed or merged; its plan comment
	// says so.
	KindPullRequestClosed Kind = "pull_request_closed"
)

// Event is a parsed delivery.
type Event struct {
	Forge      Forge
	Kind       Kind
	Name       string // the forge's event name ("push", "Merge Request Hook", …)
	DeliveryID string // "" when the forge sent none
	// Reason says why an event is ignored (KindIgnored).
	Reason string

	// Push
	Ref    string // full ref, "refs/heads/main"
	Branch string // "main" for a branch ref, "" otherwise
	Before string
	After  string // the new head commit
	// DefaultBranch is the repository's default branch when the payload says.
	DefaultBranch string

	// Pull request
	PR      int
	Action  string // the forge's action name
	HeadSHA string
	HeadRef string
	BaseRef string // the branch the PR targets
	// Merged is true when a closed pull request was merged.
	Merged bool
	// Labels are the pull request's label names as the payload lists them;
	// LabelsKnown is false when the payload has no label list (the forge
	// API is asked instead).
	Labels      []string
	LabelsKnown bool
}

// Errors returned by Verify and Parse.
var (
	// ErrUnknownForge: no known event header.
	ErrUnknownForge = errors.New("not a GitHub, Gitea, Forgejo or GitLab delivery")
	// ErrSignature: the signature or token is missing or wrong.
	ErrSignature = errors.New("bad webhook signature")
	// ErrMalformed: the body is not the payload the event header promises.
	ErrMalformed = errors.New("malformed webhook payload")
)

// Detect names the forge from the headers. Gitea and Forgejo also send the
// GitHub headers, so they are checked first.
func Detect(h http.Header) (Forge, error) {
	switch {
	case h.Get("X-Gitlab-Event") != "":
		return GitLab, nil
	case h.Get("X-Forgejo-Event") != "":
		return Forgejo, nil
	case h.Get("X-Gitea-Event") != "":
		return Gitea, nil
	case h.Get("X-GitHub-Event") != "":
		return GitHub, nil
	}
	return "", ErrUnknownForge
}

// Verify checks a delivery against the repository's secret. GitHub needs a
// valid X-Hub-Signature-256; Gitea/Forgejo a valid X-Gitea-Signature,
// X-Forgejo-Signature or X-Hub-Signature-256 (every one present must
// verify); GitLab an X-Gitlab-Token equal to the secret. An empty secret
// never verifies: unauthenticated webhooks are not accepted.
func Verify(h http.Header, body []byte, secret []byte) error {
	v, err := newVerifier(h, secret)
	if err != nil {
		return err
	}
	_, _ = v.Write(body)
	return v.verify()
}

// verifier checks a delivery in two steps so that the body is read only
// when the headers could be right: newVerifier checks everything the
// headers alone decide (the forge, GitLab's token, that HMAC signature
// headers are present and well-formed); the body is then written to it as
// it streams in, and verify compares the digests.
type verifier struct {
	mac  hash.Hash   // nil when the headers alone authenticate (GitLab)
	sigs []signature // the HMAC signatures the headers carry
}

type signature struct {
	header string
	digest []byte
}

func newVerifier(h http.Header, secret []byte) (*verifier, error) {
	if len(secret) == 0 {
		return nil, fmt.Errorf("%w: no webhook secret configured for this repository", ErrSignature)
	}
	f, err := Detect(h)
	if err != nil {
		return nil, err
	}
	if f == GitLab {
		tok := h.Get("X-Gitlab-Token")
		// Compare digests so the comparison time leaks neither content nor length.
		a, b := sha256.Sum256([]byte(tok)), sha256.Sum256(secret)
		if tok == "" || subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
			return nil, fmt.Errorf("%w: X-Gitlab-Token does not match", ErrSignature)
		}
		return &verifier{}, nil
	}
	type sigHeader struct{ name, prefix string }
	headers := []sigHeader{{"X-Hub-Signature-256", "sha256="}}
	if f != GitHub {
		headers = append(headers, sigHeader{"X-Gitea-Signature", ""}, sigHeader{"X-Forgejo-Signature", ""})
	}
	v := &verifier{mac: hmac.New(sha256.New, secret)}
	for _, sh := range headers {
		val := h.Get(sh.name)
		if val == "" {
			continue
		}
		hexSig, ok := strings.CutPrefix(val, sh.prefix)
		got, err := hex.DecodeString(hexSig)
		if !ok || err != nil || len(got) != sha256.Size {
			return nil, fmt.Errorf("%w: %s does not match", ErrSignature, sh.name)
		}
		v.sigs = append(v.sigs, signature{sh.name, got})
	}
	if len(v.sigs) == 0 {
		return nil, fmt.Errorf("%w: no HMAC-SHA256 signature header", ErrSignature)
	}
	return v, nil
}

// Write feeds body bytes to the HMAC.
func (v *verifier) Write(p []byte) (int, error) {
	if v.mac != nil {
		v.mac.Write(p)
	}
	return len(p), nil
}

// verify compares every signature with the HMAC of the bytes written.
func (v *verifier) verify() error {
	if v.mac == nil {
		return nil
	}
	want := v.mac.Sum(nil)
	for _, s := range v.sigs {
		if !hmac.Equal(s.digest, want) {
			return fmt.Errorf("%w: %s does not match", ErrSignature, s.header)
		}
	}
	return nil
}

// DeliveryID returns the forge's delivery identifier, stable across
// redeliveries of the same event.
func DeliveryID(f Forge, h http.Header) string {
	var names []string
	switch f {
	case GitHub:
		names = []string{"X-GitHub-Delivery"}
	case Gitea:
		names = []string{"X-Gitea-Delivery", "X-GitHub-Delivery"}
	case Forgejo:
		names = []string{"X-Forgejo-Delivery", "X-Gitea-Delivery", "X-GitHub-Delivery"}
	case GitLab:
		names = []string{"Idempotency-Key", "X-Gitlab-Event-UUID"}
	}
	for _, n := range names {
		if v := strings.TrimSpace(h.Get(n)); v != "" {
			return v
		}
	}
	return ""
}

const zeroSHA = "0000000000000000000000000000000000000000"

type ghPush struct {
	Repository *struct {
		DefaultBranch string `json:"default_branch"`
	} `json:"repository"`
	Project *struct {
		DefaultBranch string `json:"default_branch"`
	} `json:"project"`
	Ref     *string `json:"ref"`
	Before  string  `json:"before"`
	After   *string `json:"after"`
	Deleted bool    `json:"deleted"`
}

type ghPR struct {
	Action      *string `json:"action"`
	Number      int     `json:"number"`
	PullRequest *struct {
		Number int    `json:"number"`
		Merged bool   `json:"merged"`
		State  string `json:"state"`
		Head   struct {
			SHA string `json:"sha"`
			Ref string `json:"ref"`
		} `json:"head"`
		Base struct {
			Ref string `json:"ref"`
		} `json:"base"`
		Labels *[]struct {
			Name string `json:"name"`
		} `json:"labels"`
	} `json:"pull_request"`
}

type glMR struct {
	ObjectKind       string `json:"object_kind"`
	ObjectAttributes *struct {
		IID          int    `json:"iid"`
		Action       string `json:"action"`
		State        string `json:"state"`
		SourceBranch string `json:"source_branch"`
		TargetBranch string `json:"target_branch"`
		LastCommit   struct {
			ID string `json:"id"`
		} `json:"last_commit"`
	} `json:"object_attributes"`
	Labels *[]struct {
		Title string `json:"title"`
	} `json:"labels"`
}

// Parse reads a delivery (after Verify). It never fails on an event it does
// not handle: those come back as KindIgnored with a Reason. It fails with
// ErrMalformed when a handled event's body is not the expected JSON.
func Parse(h http.Header, body []byte) (Event, error) {
	f, err := Detect(h)
	if err != nil {
		return Event{}, err
	}
	ev := Event{Forge: f, DeliveryID: DeliveryID(f, h)}
	switch f {
	case GitLab:
		ev.Name = h.Get("X-Gitlab-Event")
		return parseGitLab(ev, body)
	case Forgejo:
		ev.Name = h.Get("X-Forgejo-Event")
	case Gitea:
		ev.Name = h.Get("X-Gitea-Event")
	default:
		ev.Name = h.Get("X-GitHub-Event")
	}
	switch ev.Name {
	case "ping":
		ev.Kind = KindPing
		return ev, nil
	case "push":
		var p ghPush
		if err := json.Unmarshal(body, &p); err != nil {
			return ev, fmt.Errorf("%w: push: %v", ErrMalformed, err)
		}
		if p.Ref == nil || p.After == nil {
			return ev, fmt.Errorf("%w: push: missing ref or after", ErrMalformed)
		}
		if p.Repository != nil {
			ev.DefaultBranch = p.Repository.DefaultBranch
		}
		return pushEvent(ev, *p.Ref, p.Before, *p.After, p.Deleted)
	case "pull_request":
		var p ghPR
		if err := json.Unmarshal(body, &p); err != nil {
			return ev, fmt.Errorf("%w: pull_request: %v", ErrMalformed, err)
		}
		if p.Action == nil || p.PullRequest == nil {
			return ev, fmt.Errorf("%w: pull_request: missing action or pull_request", ErrMalformed)
		}
		ev.Action = *p.Action
		ev.PR = p.Number
		if ev.PR == 0 {
			ev.PR = p.PullRequest.Number
		}
		ev.HeadSHA, ev.HeadRef, ev.BaseRef = p.PullRequest.Head.SHA, p.PullRequest.Head.Ref, p.PullRequest.Base.Ref
		if l := p.PullRequest.Labels; l != nil {
			ev.LabelsKnown, ev.Labels = true, make([]string, 0, len(*l))
			for _, x := range *l {
				ev.Labels = append(ev.Labels, x.Name)
			}
		}
		switch ev.Action {
		// A label added or removed can open or close the destructive gate:
		// labeled/unlabeled on GitHub, label_updated/label_cleared on Gitea
		// and Forgejo. On a closed pull request it changes nothing (and
		// must not bring its plan comment back).
		case "labeled", "unlabeled", "label_updated", "label_cleared":
			if p.PullRequest.State == "closed" {
				ev.Kind, ev.Reason = KindIgnored, "label change on a closed pull request"
				return ev, nil
			}
			return prEvent(ev)
		case "opened", "synchronize", "synchronized", "reopened":
			return prEvent(ev)
		case "closed":
			if ev.PR <= 0 {
				return ev, fmt.Errorf("%w: closed pull request without a number", ErrMalformed)
			}
			ev.Kind, ev.Merged = KindPullRequestClosed, p.PullRequest.Merged
			return ev, nil
		}
		ev.Kind, ev.Reason = KindIgnored, "pull request action "+ev.Action
		return ev, nil
	}
	ev.Kind, ev.Reason = KindIgnored, "event "+ev.Name
	return ev, nil
}

func parseGitLab(ev Event, body []byte) (Event, error) {
	switch ev.Name {
	case "Push Hook", "System Hook":
		var p ghPush
		var kind struct {
			ObjectKind  string `json:"object_kind"`
			EventName   string `json:"event_name"`
			CheckoutSHA string `json:"checkout_sha"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			return ev, fmt.Errorf("%w: %s: %v", ErrMalformed, ev.Name, err)
		}
		_ = json.Unmarshal(body, &kind)
		if kind.ObjectKind != "push" && kind.EventName != "push" {
			ev.Kind, ev.Reason = KindIgnored, "object kind "+kind.ObjectKind
			return ev, nil
		}
		if p.Ref == nil || p.After == nil {
			return ev, fmt.Errorf("%w: push: missing ref or after", ErrMalformed)
		}
		if p.Project != nil {
			ev.DefaultBranch = p.Project.DefaultBranch
		}
		return pushEvent(ev, *p.Ref, p.Before, *p.After, false)
	case "Merge Request Hook":
		var p glMR
		if err := json.Unmarshal(body, &p); err != nil {
			return ev, fmt.Errorf("%w: merge request: %v", ErrMalformed, err)
		}
		if p.ObjectAttributes == nil {
			return ev, fmt.Errorf("%w: merge request: missing object_attributes", ErrMalformed)
		}
		a := p.ObjectAttributes
		ev.PR, ev.Action, ev.HeadSHA, ev.HeadRef, ev.BaseRef = a.IID, a.Action, a.LastCommit.ID, a.SourceBranch, a.TargetBranch
		if p.Labels != nil {
			ev.LabelsKnown, ev.Labels = true, make([]string, 0, len(*p.Labels))
			for _, x := range *p.Labels {
				ev.Labels = append(ev.Labels, x.Title)
			}
		}
		// "update" covers label changes too; on a closed or merged merge
		// request it changes nothing.
		if a.Action == "update" && (a.State == "closed" || a.State == "merged") {
			ev.Kind, ev.Reason = KindIgnored, "update of a "+a.State+" merge request"
			return ev, nil
		}
		switch a.Action {
		case "open", "reopen", "update":
			return prEvent(ev)
		case "close", "merge":
			if ev.PR <= 0 {
				return ev, fmt.Errorf("%w: closed merge request without an IID", ErrMalformed)
			}
			ev.Kind, ev.Merged = KindPullRequestClosed, a.Action == "merge"
			return ev, nil
		}
		ev.Kind, ev.Reason = KindIgnored, "merge request action "+a.Action
		return ev, nil
	}
	ev.Kind, ev.Reason = KindIgnored, "event "+ev.Name
	return ev, nil
}

func pushEvent(ev Event, ref, before, after string, deleted bool) (Event, error) {
	ev.Ref, ev.Before, ev.After = ref, before, after
	branch, isBranch := strings.CutPrefix(ref, "refs/heads/")
	switch {
	case !isBranch:
		ev.Kind, ev.Reason = KindIgnored, "push to "+ref+" (not a branch)"
	case branch == "":
		return ev, fmt.Errorf("%w: push: empty branch name in %q", ErrMalformed, ref)
	case deleted || after == zeroSHA:
		ev.Kind, ev.Reason = KindIgnored, "branch "+branch+" deleted"
	case !isSHA(after):
		return ev, fmt.Errorf("%w: push: after %q is not a commit hash", ErrMalformed, after)
	default:
		ev.Kind, ev.Branch = KindPush, branch
	}
	return ev, nil
}

func prEvent(ev Event) (Event, error) {
	if ev.PR <= 0 || !isSHA(ev.HeadSHA) {
		return ev, fmt.Errorf("%w: pull request without a number or head commit", ErrMalformed)
	}
	ev.Kind = KindPullRequest
	return ev, nil
}

func isSHA(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}
