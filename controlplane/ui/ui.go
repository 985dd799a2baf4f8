// Package ui owns the web dashboard's presentation: the embedded
// templates and assets, the page models (fleet, site, plan, repository,
// audit), their filtering and sorting, browser sessions with their CSRF
// tokens, and the security headers every page carries. It never reads the store: the
// control plane fetches what a page shows, through the same tenant-scoped
// authorisation as the API, and hands it here to render.
package ui

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nkudo/nkudo/model"
)

// Dashboard paths. The dashboard lives beside /v1 under /ui, with its
// sign-in page at the root.
const (
	PathRoot    = "/{$}"
	PathSignIn  = "/ui/signin"
	PathSignOut = "/ui/signout"
	PathFleet   = "/ui/fleet"
	PathSite    = "/ui/sites/{site}"
	PathPlan    = "/ui/plans/{plan}"
	PathEvents  = "/ui/plans/{plan}/events"
	PathAsset   = "/ui/assets/{file}"
)

// Cookie names. The session cookie is HttpOnly, Secure and SameSite=Strict;
// the sign-in cookie carries the CSRF token of the sign-in form (double submit).
const (
	SessionCookie = "nkudo_session"
	SignInCookie  = "nkudo_signin"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Renderer renders the dashboard's pages from the embedded templates.
type Renderer struct {
	t *template.Template
}

// NewRenderer parses the embedded templates.
func NewRenderer() (*Renderer, error) {
	t, err := template.New("").Funcs(template.FuncMap{
		"ago":            Ago,
		"dur":            Dur,
		"short":          Short,
		"lower":          strings.ToLower,
		"statecls":       stateClass,
		"statusContexts": func() []string { return StatusContexts },
		"logKeep":        func() int { return LogKeepLines },
	}).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("parse dashboard templates: %w", err)
	}
	return &Renderer{t: t}, nil
}

// Render writes page name with data as a complete HTML answer with the
// dashboard's security headers. It renders into a buffer first, so a
// template error becomes a 500 rather than half a page.
func (r *Renderer) Render(w http.ResponseWriter, status int, name string, data any) error {
	var buf bytes.Buffer
	if err := r.t.ExecuteTemplate(&buf, name, data); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	SecurityHeaders(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}

// Execute renders page name to w without headers (benchmarks, tests).
func (r *Renderer) Execute(w io.Writer, name string, data any) error {
	return r.t.ExecuteTemplate(w, name, data)
}

// SecurityHeaders sets the headers every dashboard answer carries: a strict
// CSP (no inline script or style, nothing from elsewhere, no framing, forms
// post only here), no framing for older browsers, no MIME sniffing, no
// referrer, and no caching of tenant data.
func SecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// Asset serves an embedded static file (style.css, live.js).
func Asset(w http.ResponseWriter, name string) bool {
	b, err := fs.ReadFile(staticFS, "static/"+name)
	if err != nil || strings.ContainsAny(name, "/\\") {
		return false
	}
	ct := "text/plain; charset=utf-8"
	switch {
	case strings.HasSuffix(name, ".css"):
		ct = "text/css; charset=utf-8"
	case strings.HasSuffix(name, ".js"):
		ct = "text/javascript; charset=utf-8"
	}
	SecurityHeaders(w.Header())
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("Content-Type", ct)
	_, _ = w.Write(b)
	return true
}

// ---- page models ----

// Layout is what every signed-in page shows around its content.
type Layout struct {
	Title  string
	Tenant string
	CSRF   string // for the sign-out form
	// Admin shows the audit link (the session's token is an admin token).
	Admin bool
}

// SignInPage is the sign-in form.
type SignInPage struct {
	Layout
	Error string
}

// SignInCodePage is the form that uses a one-time sign-in link's code.
type SignInCodePage struct {
	Layout
	Code string
}

// ErrorPage is an error answer for a browser.
type ErrorPage struct {
	Layout
	Status  int
	Message string
	// SignIn offers the sign-in link (the session ended or is missing).
	SignIn bool
}

// SiteRow is one site on the fleet page.
type SiteRow struct {
	Name         string
	Labels       map[string]string
	Enrolled     bool
	Online       bool
	LastSeen     time.Time // zero = never
	Lag          time.Duration
	AgentVersion string
	// VMs counts reported VMs by state ("Running", "Stopped", …).
	VMs      map[model.VMState]int
	VMTotal  int
	LastPlan *PlanSummary // nil = no plan yet
}

// State is the row's state for filtering: online, offline or never
// (never enrolled or never heard from).
func (r SiteRow) State() string {
	switch {
	case r.Online:
		return "online"
	case r.LastSeen.IsZero():
		return "never"
	}
	return "offline"
}

// PlanSummary is a plan's outcome and age.
type PlanSummary struct {
	ID        string
	Status    model.PlanStatus
	Commit    string
	UpdatedAt time.Time
	Actions   int // the number of actions (site page only)
}

// FleetQuery is the fleet page's filter and order, from query parameters.
type FleetQuery struct {
	Label string // "key=value" or "key"
	State string // online, offline, never, or "" for all
	Sort  string // name, state, lag, vms, plan (default name)
	Desc  bool
}

// ParseFleetQuery reads the fleet query parameters; it names the bad one.
func ParseFleetQuery(q map[string][]string) (FleetQuery, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return strings.TrimSpace(v[0])
		}
		return ""
	}
	f := FleetQuery{Label: get("label"), State: get("state"), Sort: get("sort"), Desc: get("order") == "desc"}
	switch f.State {
	case "", "online", "offline", "never":
	default:
		return f, fmt.Errorf("query parameter state %q: want online, offline or never", f.State)
	}
	switch f.Sort {
	case "":
		f.Sort = "name"
	case "name", "state", "lag", "vms", "plan":
	default:
		return f, fmt.Errorf("query parameter sort %q: want name, state, lag, vms or plan", f.Sort)
	}
	if o := get("order"); o != "" && o != "asc" && o != "desc" {
		return f, fmt.Errorf("query parameter order %q: want asc or desc", o)
	}
	if len(f.Label) > 256 {
		return f, fmt.Errorf("query parameter label: longer than 256 bytes")
	}
	return f, nil
}

// Match reports whether row passes the filter.
func (f FleetQuery) Match(r SiteRow) bool {
	if f.State != "" && r.State() != f.State {
		return false
	}
	if f.Label != "" {
		k, v, hasV := strings.Cut(f.Label, "=")
		got, ok := r.Labels[k]
		if !ok || hasV && got != v {
			return false
		}
	}
	return true
}

// Apply filters and sorts rows; ties break by name (reversed with Desc).
func (f FleetQuery) Apply(rows []SiteRow) []SiteRow {
	out := rows[:0:0]
	for _, r := range rows {
		if f.Match(r) {
			out = append(out, r)
		}
	}
	rank := map[string]int{"offline": 0, "never": 1, "online": 2}
	cmp := func(a, b SiteRow) int {
		c := 0
		switch f.Sort {
		case "state":
			c = rank[a.State()] - rank[b.State()]
		case "lag":
			c = compareDur(a.Lag, b.Lag)
		case "vms":
			c = a.VMTotal - b.VMTotal
		case "plan":
			c = comparePlan(a.LastPlan, b.LastPlan)
		}
		if c == 0 {
			c = strings.Compare(a.Name, b.Name)
		}
		if f.Desc {
			c = -c
		}
		return c
	}
	slices.SortStableFunc(out, cmp)
	return out
}

func compareDur(a, b time.Duration) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// comparePlan orders by the plan's last change, sites without a plan first.
func comparePlan(a, b *PlanSummary) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	return a.UpdatedAt.Compare(b.UpdatedAt)
}

// FleetPage is the fleet overview.
type FleetPage struct {
	Layout
	Query  FleetQuery
	Rows   []SiteRow
	Total  int // sites before filtering
	Online int
	Now    time.Time
	// Sorts are the column headers' links, by sort key.
	Sorts map[string]string
	// PlanWindow notes that only the newest plans were read for the
	// last-plan column (sites whose last plan is older show none).
	PlanWindow int
}

// SortLink is the fleet URL ordering by key, keeping the filter; the
// current sort key toggles its direction.
func (f FleetQuery) SortLink(key string) string {
	v := make([]string, 0, 4)
	if f.Label != "" {
		v = append(v, "label="+urlEscape(f.Label))
	}
	if f.State != "" {
		v = append(v, "state="+f.State)
	}
	v = append(v, "sort="+key)
	if key == f.Sort && !f.Desc {
		v = append(v, "order=desc")
	}
	return PathFleet + "?" + strings.Join(v, "&")
}

// AriaSort is the aria-sort value of column key.
func (f FleetQuery) AriaSort(key string) string {
	switch {
	case key != f.Sort:
		return "none"
	case f.Desc:
		return "descending"
	}
	return "ascending"
}

// VMRow is one VM on the site page: desired and reported side by side.
type VMRow struct {
	Name    string
	Desired *model.VMSpec
	Actual  *model.ObservedVM
	InSync  bool
	// Conflict says why a desired VM cannot be managed (an unmanaged VM
	// holds its name); "" when none.
	Conflict string
}

// SitePage is one site.
type SitePage struct {
	Layout
	Site          SiteRow
	Facts         *Facts
	DesiredKnown  bool
	DesiredCommit string
	VMs           []VMRow
	Plans         []PlanSummary
	Now           time.Time
	// Running is the site's plan that is pending or in progress (nil when
	// none): the site page links to its live actions and log.
	Running *PlanSummary
}

// Facts is the host facts the site page shows.
type Facts struct {
	Hostname, OS, Arch, Kernel, CPUModel, Hypervisor string
	CPUs                                             int
	MemoryMiB                                        int64
	DiskFreeGiB, DiskTotalGiB                        float64
	KVM                                              bool
	NetBird                                          string
}

// ActionRow is one action of the plan page.
type ActionRow struct {
	Index       int
	ID          string
	Operation   model.Operation
	Phase       int
	VM          string
	Reason      string
	Destructive bool
	Status      model.ActionStatus
	Error       string
	Started     time.Time
	Finished    time.Time
}

// Duration is how long the action ran ("" when it has not finished).
func (a ActionRow) Duration() string {
	if a.Started.IsZero() || a.Finished.IsZero() {
		return ""
	}
	return Dur(a.Finished.Sub(a.Started))
}

// PlanPage is one plan with its actions in phase order.
type PlanPage struct {
	Layout
	ID        string
	Site      string
	Commit    string
	Status    model.PlanStatus
	CreatedAt time.Time
	UpdatedAt time.Time
	Actions   []ActionRow
	// Live is set while the plan can still change: the page then opens
	// its event stream.
	Live   bool
	Events string // the event stream URL
	Now    time.Time
	// Log is the start of the plan's log (at most LogPageLines lines,
	// LogPageBytes); LogMore says it goes on; LogAfter is the sequence
	// number of its last line, where the event stream continues.
	Log      []LogRow
	LogMore  bool
	LogAfter int64
}

// Bounds of the plan page's log: one read of the store, one event of the
// stream, and the lines the page's script keeps (older ones are dropped
// from the page as new ones arrive).
const (
	LogPageLines = 500
	LogPageBytes = 256 << 10
	LogKeepLines = 1000
)

// LogRow is one line of a plan's log.
type LogRow struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Action string    `json:"action,omitempty"`
	Stream string    `json:"stream"`
	Line   string    `json:"line"`
}

// LogEvent is what a plan stream's "log" event carries.
type LogEvent struct {
	Lines []LogRow `json:"lines"`
}

// PlanEvent is what the plan event stream sends: the plan's status and
// every action's state, as the plan page's script applies them.
type PlanEvent struct {
	Status  model.PlanStatus `json:"status"`
	Actions []ActionEvent    `json:"actions"`
}

// ActionEvent is one action's state in a PlanEvent.
type ActionEvent struct {
	ID       string             `json:"id"`
	Status   model.ActionStatus `json:"status"`
	Duration string             `json:"duration,omitempty"`
	Error    string             `json:"error,omitempty"`
}

// Event is the stream form of a plan page's state.
func (p PlanPage) Event() PlanEvent {
	e := PlanEvent{Status: p.Status, Actions: make([]ActionEvent, 0, len(p.Actions))}
	for _, a := range p.Actions {
		e.Actions = append(e.Actions, ActionEvent{ID: a.ID, Status: a.Status, Duration: a.Duration(), Error: a.Error})
	}
	return e
}

// SortActions puts actions in phase order (stop, delete, create, resize,
// start), keeping the plan's order within a phase.
func SortActions(a []ActionRow) {
	slices.SortStableFunc(a, func(x, y ActionRow) int { return x.Phase - y.Phase })
}

// ---- template helpers ----

// Ago renders the time since t at now ("never" for zero).
func Ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return Dur(now.Sub(t)) + " ago"
}

// Dur renders a duration briefly: 850ms, 12s, 4m10s, 3h5m, 2d4h.
func Dur(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// Short cuts an ID or commit to 12 characters.
func Short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func stateClass(s any) string {
	return "st-" + strings.ToLower(fmt.Sprint(s))
}

func urlEscape(s string) string {
	return template.URLQueryEscaper(s)
}
