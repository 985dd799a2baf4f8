// Package forge owns commit-status reporting and pull-request plan
// comments: writers that speak the status APIs of GitHub, Gitea/Forgejo and
// GitLab, a git-notes writer for forges without an API, a Reporter that
// posts asynchronously, only when a status changed, with retries and
// backoff, so a forge outage never blocks reconciling, and a
// CommentReporter that keeps one marked plan comment per pull request.
package forge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/nkudo/nkudo/model"
)

// State is a forge-neutral commit status state (model.StatusState, the
// type the store keeps statuses in). Writers map it to the forge's own
// names (GitLab: failed, not failure).
type State = model.StatusState

const (
	StatePending = model.StatusPending
	StateSuccess = model.StatusSuccess
	StateFailure = model.StatusFailure
	StateError   = model.StatusError
)

// Context names used by n-kudo (a writer prepends its configured prefix).
const (
	ContextValidate = "nkudo/validate"
	ContextPlan     = "nkudo/plan"
	ContextApply    = "nkudo/apply"
)

// Status is one commit status.
type Status struct {
	// SHA is the full commit hash the status belongs to.
	SHA string `json:"sha"`
	// Context is the label, for example "nkudo/plan". When read back from a
	// forge it carries the forge's label, prefix included.
	Context     string `json:"context"`
	State       State  `json:"state"`
	Description string `json:"description,omitempty"`
	// TargetURL links to the commit's page on the control plane; empty means none.
	TargetURL string `json:"targetURL,omitempty"`
	// Ref is the branch the commit was seen on; optional, GitLab uses it.
	Ref string `json:"ref,omitempty"`
}

// Writer posts commit statuses to one repository on one forge.
type Writer interface {
	// Name identifies the writer in logs ("github", "gitlab", "notes", …).
	Name() string
	// Post writes st as-is: the caller has already applied prefix and
	// trimming. Errors are *Error when the forge answered.
	Post(ctx context.Context, st Status) error
	// Current returns the latest status per context the forge shows for sha.
	Current(ctx context.Context, sha string) ([]Status, error)
	// DescriptionLimit is the longest description (in characters) the forge accepts.
	DescriptionLimit() int
}

// Error is a failed forge request.
type Error struct {
	Op     string
	Status int // HTTP status; 0 when the request never got an answer
	Body   string
	// Retry is true for failures that may pass on a later attempt
	// (network errors, 5xx, 429).
	Retry bool
	Err   error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Body != "" {
		fmt.Fprintf(&b, ": %s", e.Body)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether err may pass on a later attempt. Errors that
// are not *Error (for example a failed git push) are treated as retryable.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Retry
	}
	return true
}

// Token is a secret credential. It cannot print itself: formatting,
// logging and JSON all show "REDACTED"; Reveal is the one way out.
type Token struct{ v string }

// NewToken wraps a secret.
func NewToken(s string) Token { return Token{v: s} }

// Reveal returns the secret, for putting it in a request header.
func (t Token) Reveal() string { return t.v }

// Empty reports whether no secret is set.
func (t Token) Empty() bool { return t.v == "" }

func (t Token) String() string {
	if t.v == "" {
		return ""
	}
	return "REDACTED"
}

// GoString keeps %#v from printing the secret.
func (t Token) GoString() string { return `forge.Token("` + t.String() + `")` }

// LogValue keeps slog from printing the secret.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.String()) }

// MarshalText keeps encoders from printing the secret.
func (t Token) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// Format covers every fmt verb, including %s/%v/%q/%x on the struct.
func (t Token) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, t.GoString())
		return
	}
	fmt.Fprint(f, t.String())
}

// SanitizeURL strips credentials from a URL (user info and secret-looking
// query parameters) so it can go into a log line or a status. Strings that
// do not parse, such as scp-like SSH addresses, lose anything before '@'
// only when it looks like a user:password pair.
func SanitizeURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" {
		// scp-like "git@host:path" keeps its user (not a secret); a
		// "user:pass@host" shape loses the password.
		if at := strings.LastIndex(s, "@"); at > 0 && strings.Contains(s[:at], ":") {
			return "REDACTED@" + s[at+1:]
		}
		return s
	}
	if u.User != nil {
		if _, hasPass := u.User.Password(); hasPass || u.Scheme == "https" || u.Scheme == "http" {
			u.User = url.User("REDACTED")
		}
	}
	q := u.Query()
	changed := false
	for k := range q {
		lk := strings.ToLower(k)
		if strings.Contains(lk, "token") || strings.Contains(lk, "secret") || strings.Contains(lk, "key") || strings.Contains(lk, "password") || strings.Contains(lk, "sig") {
			q.Set(k, "REDACTED")
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// Trim shortens s to at most limit characters (runes), ending with "…"
// when it had to cut. limit <= 0 means no limit.
func Trim(s string, limit int) string {
	if limit <= 0 || utf8.RuneCountInString(s) <= limit {
		return s
	}
	if limit == 1 {
		return "…"
	}
	r := []rune(s)
	return strings.TrimRight(string(r[:limit-1]), " ") + "…"
}

// APIBase returns the API base URL a writer of kind ("github", "gitea",
// "gitlab") talks to when configured with baseURL: baseURL itself, or the
// kind's public default when it is "" ("" when the kind has none). A
// credential for the writer must be bound to this URL's host.
func APIBase(kind, baseURL string) string {
	if baseURL != "" {
		return baseURL
	}
	switch kind {
	case "github":
		return "https://api.github.com"
	case "gitlab":
		return "https://gitlab.com"
	}
	return ""
}
