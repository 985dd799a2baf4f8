package reconciler

import (
	"bytes"
	"fmt"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/schema"
	"github.com/nkudo/nkudo/store"
)

// planComment is what one pull request's plan comment shows.
type planComment struct {
	PR     int
	Commit string
	// Summary is the preview's summary line.
	Summary string
	// Result is the plan; nil when the head was not planned.
	Result *diff.Result
	// Errors are the head's validation errors, shown as file:line links.
	Errors schema.Errors
	// Message explains a head that was neither planned nor invalid by
	// schema (unsigned, no manifests).
	Message string
	// FileURL links to a file at a line of the head; nil means no links.
	FileURL func(file string, line int) string
	// FullURL is where the whole preview can be read; empty means none.
	FullURL string
	// Base is the branch commit in force ("" = none yet); Inventories the
	// inventory versions planned against (nil: not planned).
	Base        string
	Inventories map[string]int64
	// Changes say what moved since the last preview of the same head.
	Changes []string
}

// commentBudget keeps the whole comment under forge.CommentLimit with room
// for the marker line and the forge's own newline conversions.
const commentBudget = forge.CommentLimit - 2048

// detailsLines is the plan size above which a site's block is folded into
// <details>, so a large plan does not bury the conversation.
const detailsLines = 25

// renderPlanComment renders c as Markdown: the summary, then per changed
// site a fenced block with the markers of diff.RenderText, unchanged sites
// on one line, and for an invalid head its errors linked to the lines.
func renderPlanComment(c planComment) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### n-kudo plan for `%s`\n\n", short(c.Commit))
	fmt.Fprintf(&b, "**%s**\n\n", mdEscape(c.Summary))
	if len(c.Changes) > 0 {
		fmt.Fprintf(&b, "> Re-computed: %s.\n\n", mdEscape(strings.Join(c.Changes, "; ")))
	}
	switch {
	case len(c.Errors) > 0:
		b.WriteString("The head is invalid; nothing can be planned until these are fixed:\n\n")
		for _, e := range c.Errors {
			loc := e.File
			if e.Line > 0 {
				loc += ":" + strconv.Itoa(e.Line)
			}
			if c.FileURL != nil {
				loc = "[" + mdEscape(loc) + "](" + c.FileURL(e.File, e.Line) + ")"
			} else {
				loc = "`" + loc + "`"
			}
			rest := mdEscape(e.Message)
			if e.Path != "" {
				rest = "`" + e.Path + "`: " + rest
			}
			fmt.Fprintf(&b, "- %s: %s\n", loc, rest)
		}
	case c.Result == nil:
		if c.Message != "" {
			b.WriteString("```text\n" + fence(c.Message) + "\n```\n")
		}
	default:
		renderSites(&b, c)
	}
	b.WriteString("\n<sub>" + computedFor(c) + " Nothing is applied from a pull request.</sub>\n")
	out := b.String()
	if len(out) > commentBudget { // the per-site budget should prevent this
		out = out[:commentBudget] + "\n\n… cut at the forge's size limit\n"
	}
	return out
}

func renderSites(b *strings.Builder, c planComment) {
	var changed []diff.SiteResult
	var unchanged, waiting []string
	destructive := 0
	for _, s := range c.Result.Sites {
		if s.AwaitingReport {
			waiting = append(waiting, s.Site)
		}
		for _, a := range s.Plan.Actions {
			if a.Destructive {
				destructive++
			}
		}
		if s.Changed() {
			changed = append(changed, s)
		} else {
			unchanged = append(unchanged, s.Site)
		}
	}
	if destructive > 0 {
		fmt.Fprintf(b, "> [!WARNING]\n> **DESTRUCTIVE:** %d %s delete or replace VMs.\n\n", destructive, pluralWord(destructive, "action would", "actions would"))
	}
	for _, s := range changed {
		if s.Refused != "" {
			fmt.Fprintf(b, "- **REFUSED** at `%s`: %s\n", s.Site, mdEscape(s.Refused))
		}
	}
	if len(waiting) > 0 {
		fmt.Fprintf(b, "- Not reporting yet (planned against an empty inventory): %s\n", codeList(waiting))
	}
	b.WriteString("\n")
	budget := commentBudget - b.Len() - 1024 - 128*len(unchanged)
	per := budget
	if len(changed) > 0 {
		per = budget / len(changed)
	}
	for _, s := range changed {
		var t bytes.Buffer
		if err := diff.RenderText(&t, diff.Result{Sites: []diff.SiteResult{s}}, diff.RenderOptions{}); err != nil {
			fmt.Fprintf(b, "`%s`: could not render: %s\n", s.Site, mdEscape(err.Error()))
			continue
		}
		block := t.String()
		if i := strings.LastIndex(block, "\n\nTotal:"); i >= 0 {
			block = block[:i+1] // the per-site text without the run's total
		}
		lines := strings.Split(strings.TrimRight(block, "\n"), "\n")
		title := strings.TrimSpace(strings.TrimPrefix(lines[len(lines)-1], "  = "))
		block = truncateLines(lines, per-256, c.FullURL)
		head := "`" + s.Site + "`: " + mdEscape(title)
		if len(lines) > detailsLines {
			fmt.Fprintf(b, "<details><summary>%s</summary>\n\n```diff\n%s\n```\n\n</details>\n\n", head, block)
		} else {
			fmt.Fprintf(b, "%s\n\n```diff\n%s\n```\n\n", head, block)
		}
	}
	if len(unchanged) > 0 {
		fmt.Fprintf(b, "<details><summary>%s without changes</summary>\n\n%s\n\n</details>\n", pluralWord(len(unchanged), "1 site", strconv.Itoa(len(unchanged))+" sites"), codeList(unchanged))
	}
}

// truncateLines joins lines, leaving out the tail (with a count of what was
// left out) beyond limit bytes.
func truncateLines(lines []string, limit int, full string) string {
	var b strings.Builder
	for i, l := range lines {
		l = fence(l)
		if b.Len()+len(l)+1 > limit {
			fmt.Fprintf(&b, "… %d more %s left out", len(lines)-i, pluralWord(len(lines)-i, "line", "lines"))
			if full != "" {
				b.WriteString("; the full preview: " + full)
			}
			return b.String()
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(l)
	}
	return b.String()
}

// fence keeps text from closing the fenced block it is shown in.
func fence(s string) string { return strings.ReplaceAll(s, "```", "`\u200b``") }

// mdEscape keeps text from forming Markdown or HTML it did not mean.
func mdEscape(s string) string {
	return strings.NewReplacer("<", "&lt;", ">", "&gt;", "*", "\\*", "_", "\\_", "[", "\\[", "]", "\\]", "`", "\\`").Replace(s)
}

func codeList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = "`" + n + "`"
	}
	return strings.Join(q, ", ")
}

func pluralWord(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// closedComment is the comment of a pull request that was closed or
// merged: the plan no longer says anything.
func closedComment(pr int, merged bool) string {
	what := "closed"
	if merged {
		what = "merged"
	}
	return fmt.Sprintf("### n-kudo plan\n\nPull request #%d was %s; this plan is no longer updated.\n", pr, what)
}

// fileURL returns a function linking to a file of the repository at a
// commit on the forge's web UI, or nil when the clone URL is not an
// http(s) address the forge's web UI lives at.
func fileURL(repo store.Repository, sha string) func(string, int) string {
	u, err := url.Parse(repo.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil
	}
	u.User = nil
	u.RawQuery = ""
	web := strings.TrimSuffix(strings.TrimRight(u.String(), "/"), ".git")
	var mid string
	switch repo.ForgeKind {
	case store.ForgeGitHub:
		mid = "/blob/"
	case store.ForgeGitea:
		mid = "/src/commit/"
	case store.ForgeGitLab:
		mid = "/-/blob/"
	default:
		return nil
	}
	return func(file string, line int) string {
		p := path.Join(repo.Path, file)
		esc := make([]string, 0, 4)
		for _, seg := range strings.Split(p, "/") {
			esc = append(esc, url.PathEscape(seg))
		}
		s := web + mid + sha + "/" + strings.Join(esc, "/")
		if line > 0 {
			s += "#L" + strconv.Itoa(line)
		}
		return s
	}
}

// computedFor names what the comment was computed against: the head, the
// branch commit in force, and the inventory versions.
func computedFor(c planComment) string {
	s := "Computed for " + c.Commit
	if c.Base != "" {
		s += " on base " + short(c.Base)
	}
	if c.Inventories == nil {
		return s + "."
	}
	return s + " against " + inventoriesLine(c.Inventories) + "."
}
