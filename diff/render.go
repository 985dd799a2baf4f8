package diff

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nkudo/nkudo/model"
)

// RenderOptions tunes RenderText.
type RenderOptions struct {
	// Color adds ANSI colours; callers set it only when writing to a terminal.
	Color bool
}

// counts tallies what a set of plans will do. A replace counts once, as a
// replace, not as its stop/delete/create/start steps.
type counts struct {
	create, replace, resize, start, stop, delete, destructive int
}

func (c *counts) add(p model.Plan) {
	for _, a := range p.Actions {
		if a.Destructive {
			c.destructive++
		}
		if a.Reason == model.ReasonReplace {
			if a.Operation == model.OpCreate {
				c.replace++
			}
			continue
		}
		switch a.Operation {
		case model.OpCreate:
			c.create++
		case model.OpResize:
			c.resize++
		case model.OpStart:
			c.start++
		case model.OpStop:
			c.stop++
		case model.OpDelete:
			c.delete++
		}
	}
}

func (c counts) String() string {
	var parts []string
	for _, p := range []struct {
		n    int
		word string
	}{
		{c.create, "create"}, {c.replace, "replace"}, {c.resize, "resize"},
		{c.start, "start"}, {c.stop, "stop"}, {c.delete, "delete"},
	} {
		if p.n > 0 {
			parts = append(parts, strconv.Itoa(p.n)+" "+p.word)
		}
	}
	if len(parts) == 0 {
		return "no changes"
	}
	return strings.Join(parts, ", ")
}

// Summary is a one-line account of a Result for a commit status (at most
// 140 characters), for example "3 sites: 2 create, 1 start, 1 delete; 1 refused"
// or "1 site: netbird groups +ot-gateways".
// Refused plans are not counted among the changes; they are counted apart.
func Summary(r Result) string {
	var c counts
	var nb netbirdTally
	refused, conflicts, awaiting := 0, 0, 0
	for _, s := range r.Sites {
		if s.Refused != "" {
			refused++
		} else {
			c.add(s.Plan)
			nb.add(s.NetBird)
		}
		conflicts += len(s.Conflicts)
		if s.AwaitingReport {
			awaiting++
		}
	}
	var b strings.Builder
	b.WriteString(plural(len(r.Sites), "site", "sites"))
	b.WriteString(": ")
	b.WriteString(changes(c, nb))
	if refused > 0 {
		b.WriteString("; " + strconv.Itoa(refused) + " refused")
	}
	if conflicts > 0 {
		b.WriteString("; " + plural(conflicts, "conflict", "conflicts"))
	}
	if awaiting > 0 {
		b.WriteString("; " + strconv.Itoa(awaiting) + " awaiting report")
	}
	return truncate(b.String(), 140)
}

// netbirdTally gathers the NetBird group changes of several sites: the
// union of groups added and removed, and how many sites change.
type netbirdTally struct {
	sites int
	all   GroupChange
}

func (t *netbirdTally) add(c *GroupChange) {
	if c == nil {
		return
	}
	t.sites++
	for _, g := range c.Added {
		if !slices.Contains(t.all.Added, g) {
			t.all.Added = append(t.all.Added, g)
		}
	}
	for _, g := range c.Removed {
		if !slices.Contains(t.all.Removed, g) {
			t.all.Removed = append(t.all.Removed, g)
		}
	}
}

// String is "netbird groups +a -b", with " on N sites" when more than one
// site changes; "" when none does.
func (t netbirdTally) String() string {
	if t.sites == 0 {
		return ""
	}
	all := GroupChange{Added: slices.Sorted(slices.Values(t.all.Added)), Removed: slices.Sorted(slices.Values(t.all.Removed))}
	s := "netbird groups " + all.String()
	if t.sites > 1 {
		s += " on " + strconv.Itoa(t.sites) + " sites"
	}
	return s
}

// changes joins the VM counts and the NetBird part, for example
// "1 create, netbird groups +ot-gateways"; "no changes" when both are empty.
func changes(c counts, nb netbirdTally) string {
	vm, n := c.String(), nb.String()
	switch {
	case n == "":
		return vm
	case vm == "no changes":
		return n
	}
	return vm + ", " + n
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

const (
	ansiReset  = "\x1b[0m"
	ansiBold   = "\x1b[1m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiCyan   = "\x1b[36m"
	ansiDim    = "\x1b[2m"
)

type painter struct{ on bool }

func (p painter) paint(code, s string) string {
	if !p.on || s == "" {
		return s
	}
	return code + s + ansiReset
}

// symbol is the plan-preview marker of an action; the delete and create
// steps of a replace show as -/+ so a replace reads as one.
func symbol(a model.Action) (string, string) {
	if a.Reason == model.ReasonReplace && (a.Operation == model.OpDelete || a.Operation == model.OpCreate) {
		return "-/+", ansiYellow
	}
	switch a.Operation {
	case model.OpCreate:
		return "+", ansiGreen
	case model.OpDelete:
		return "-", ansiRed
	case model.OpResize:
		return "~", ansiYellow
	case model.OpStart:
		return ">", ansiGreen
	case model.OpStop:
		return "■", ansiRed
	}
	return "?", ""
}

// RenderText writes a plan preview: per site a header, one line per action
// (symbol, operation, VM, reason, changed fields, destructive call-out),
// a "~   netbird groups +a -b" line when the site's NetBird groups change,
// unmanaged VMs, conflicts, the refusal reason if any and a summary line;
// then a total line. ANSI colour only when o.Color.
func RenderText(w io.Writer, r Result, o RenderOptions) error {
	p := painter{on: o.Color}
	var b strings.Builder
	var total counts
	var totalNB netbirdTally
	refused, conflicts := 0, 0
	for i, s := range r.Sites {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s %s", p.paint(ansiBold, "site "+s.Site), p.paint(ansiDim, "(inventory v"+strconv.FormatInt(s.Plan.InventoryVersion, 10)))
		if s.Plan.ID != "" {
			b.WriteString(p.paint(ansiDim, ", plan "+short(s.Plan.ID)))
		}
		b.WriteString(p.paint(ansiDim, ")") + "\n")
		if s.AwaitingReport {
			b.WriteString("  " + p.paint(ansiYellow, "! agent has not reported yet: planned against an empty inventory") + "\n")
		}
		if s.Refused != "" {
			b.WriteString("  " + p.paint(ansiRed+ansiBold, "REFUSED: "+s.Refused) + "\n")
			b.WriteString("  " + p.paint(ansiRed, "nothing below will be applied") + "\n")
		}
		width := 0
		for _, a := range s.Plan.Actions {
			width = max(width, len(a.VM))
		}
		for _, a := range s.Plan.Actions {
			sym, col := symbol(a)
			var tail []string
			if a.Destructive {
				tail = append(tail, p.paint(ansiRed+ansiBold, "DESTRUCTIVE"))
			}
			if ch := renderChanges(a.Changes); ch != "" {
				tail = append(tail, ch)
			}
			reason := string(a.Reason)
			if len(tail) > 0 {
				reason = fmt.Sprintf("%-7s", reason) // width of the longest reason, "replace"
			}
			line := fmt.Sprintf("%-3s %-6s %-*s  %s", sym, a.Operation, width, a.VM, reason)
			b.WriteString("  " + p.paint(col, line))
			if len(tail) > 0 {
				b.WriteString("  " + strings.Join(tail, "  "))
			}
			b.WriteByte('\n')
		}
		if s.NetBird != nil {
			// Not an action: the control plane sets the peer's groups.
			b.WriteString("  " + p.paint(ansiYellow, "~   netbird groups "+s.NetBird.String()) + "\n")
		}
		for _, c := range s.Conflicts {
			b.WriteString("  " + p.paint(ansiRed, "! conflict "+c.VM+": "+c.Reason) + "\n")
		}
		if len(s.Plan.Unmanaged) > 0 {
			b.WriteString("  " + p.paint(ansiCyan, "unmanaged, left alone: "+strings.Join(s.Plan.Unmanaged, ", ")) + "\n")
		}
		var c counts
		c.add(s.Plan)
		line := c.String()
		if c.destructive > 0 {
			line += " (" + strconv.Itoa(c.destructive) + " destructive)"
		}
		if s.NetBird != nil {
			var nb netbirdTally
			nb.add(s.NetBird)
			if c == (counts{}) {
				line = nb.String()
			} else {
				line += ", " + nb.String()
			}
		}
		if s.Refused != "" {
			refused++
			line += "; refused"
		} else {
			total.add(s.Plan)
			totalNB.add(s.NetBird)
		}
		conflicts += len(s.Conflicts)
		b.WriteString("  = " + line + "\n")
	}
	if len(r.Sites) > 0 {
		b.WriteByte('\n')
	}
	line := "Total: " + plural(len(r.Sites), "site", "sites") + ": " + total.String()
	if total.destructive > 0 {
		line += " (" + strconv.Itoa(total.destructive) + " destructive)"
	}
	if n := totalNB.String(); n != "" {
		if total == (counts{}) {
			line = "Total: " + plural(len(r.Sites), "site", "sites") + ": " + n
		} else {
			line += ", " + n
		}
	}
	if refused > 0 {
		line += "; " + strconv.Itoa(refused) + " refused"
	}
	if conflicts > 0 {
		line += "; " + plural(conflicts, "conflict", "conflicts")
	}
	b.WriteString(p.paint(ansiBold, line) + "\n")
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("render plan: %w", err)
	}
	return nil
}

// renderChanges prints field changes as "cpus 2 → 4, memoryMiB 1024 → 2048";
// hashes are shortened to 12 characters.
func renderChanges(ch []model.FieldChange) string {
	parts := make([]string, 0, len(ch))
	for _, c := range ch {
		from, to := c.From, c.To
		if c.Field == "specHash" {
			from, to = short(from), short(to)
		}
		if from == "" {
			from = "(none)"
		}
		parts = append(parts, c.Field+" "+from+" → "+to)
	}
	return strings.Join(parts, ", ")
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// jsonResult is the machine-readable form of a Result.
type jsonResult struct {
	Summary string       `json:"summary"`
	Sites   []SiteResult `json:"sites"`
}

// RenderJSON writes r as indented JSON with a "summary" (Summary(r)) and
// "sites" (the SiteResults, each with its full plan).
func RenderJSON(w io.Writer, r Result) error {
	sites := r.Sites
	if sites == nil {
		sites = []SiteResult{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(jsonResult{Summary: Summary(r), Sites: sites}); err != nil {
		return fmt.Errorf("render plan as JSON: %w", err)
	}
	return nil
}
