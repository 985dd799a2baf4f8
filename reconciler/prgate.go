package reconciler

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/store"
)

// The destructive-label gate: a pull request whose plan deletes or
// replaces VMs fails nkudo/plan until it carries the repository's accept
// label, so branch protection on nkudo/plan asks a second person to look
// before a merge destroys anything. Labels come from the webhook payload
// when it lists them, else from the forge API; adding or removing a label
// previews the pull request again. The main-branch reconcile has no gate.

// prLabels remembers the labels webhook payloads listed, per pull request.
type prLabels struct {
	mu sync.Mutex
	m  map[string][]string // repo#pr → label names
}

// maxLabelled bounds prLabels: forgetting a pull request only costs a read
// of its labels from the forge API.
const maxLabelled = 4096

func (l *prLabels) set(key string, labels []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil || len(l.m) >= maxLabelled {
		l.m = map[string][]string{}
	}
	l.m[key] = slices.Clone(labels)
}

func (l *prLabels) get(key string) ([]string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.m[key]
	return v, ok
}

func (l *prLabels) forget(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, key)
}

// PreviewLabels is Preview for a delivery whose payload lists the pull
// request's labels: the gate reads them instead of asking the forge. It
// implements webhooks.LabelSink.
func (r *Reconciler) PreviewLabels(ctx context.Context, tenant, repoID string, pr int, headSHA string, labels []string) error {
	r.labels.set(prKey(repoID, pr), labels)
	return r.Preview(ctx, tenant, repoID, pr, headSHA)
}

// prLabelsOf returns the labels of a pull request: those its last webhook
// listed, else the forge's answer.
func (r *Reconciler) prLabelsOf(ctx context.Context, repo store.Repository, pr int) ([]string, error) {
	if l, ok := r.labels.get(prKey(repo.ID, pr)); ok {
		return l, nil
	}
	if _, err := r.reportersFor(ctx, repo); err != nil {
		return nil, fmt.Errorf("forge writers: %w", err)
	}
	rr, _ := r.reporters.get(repo.ID)
	if rr == nil || len(rr.labels) == 0 {
		return nil, fmt.Errorf("the repository's forge (%q) has no label API", repo.ForgeKind)
	}
	var out []string
	for _, lr := range rr.labels {
		ls, err := lr.Labels(ctx, pr)
		if err != nil {
			return nil, err
		}
		out = append(out, ls...)
	}
	return out, nil
}

// destructiveActions counts the actions of res that delete or replace a
// VM, at the sites whose plan is not refused.
func destructiveActions(res diff.Result) int {
	n := 0
	for _, s := range res.Sites {
		if s.Refused != "" {
			continue
		}
		for _, a := range s.Plan.Actions {
			if a.Destructive {
				n++
			}
		}
	}
	return n
}

// gatePlan is the nkudo/plan status of a pull request whose plan is not
// refused: success with summary, unless the plan destroys VMs and the pull
// request lacks the accept label (or its labels cannot be read: the gate
// stays shut rather than guess).
func (r *Reconciler) gatePlan(ctx context.Context, repo store.Repository, pr int, res diff.Result, summary string) (store.StatusState, string) {
	n := destructiveActions(res)
	if n == 0 {
		return store.StateSuccess, summary
	}
	label := repo.AcceptLabel()
	labels, err := r.prLabelsOf(ctx, repo, pr)
	if err == nil && slices.Contains(labels, label) {
		return store.StateSuccess, fmt.Sprintf("%s; %d destructive %s accepted by label %s", summary, n, pluralWord(n, "action", "actions"), label)
	}
	desc := fmt.Sprintf("%d destructive %s: add the label `%s` to accept", n, pluralWord(n, "action", "actions"), label)
	if err != nil {
		r.log.Warn("read pull request labels", "repo", repo.ID, "pr", pr, "err", err)
		desc += " (labels unreadable: " + forge.Trim(err.Error(), 200) + ")"
	}
	return store.StateFailure, desc
}
