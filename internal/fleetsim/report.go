package fleetsim

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Seconds is a duration reported in seconds.
type Seconds float64

func (s Seconds) String() string {
	if s < 1 {
		return fmt.Sprintf("%.0fms", float64(s)*1000)
	}
	return fmt.Sprintf("%.2fs", float64(s))
}

// Dist is a distribution over sites.
type Dist struct {
	N   int     `json:"n"`
	P50 Seconds `json:"p50"`
	P99 Seconds `json:"p99"`
	Max Seconds `json:"max"`
}

func distribution(ds []time.Duration) Dist {
	if len(ds) == 0 {
		return Dist{}
	}
	slices.Sort(ds)
	at := func(q float64) Seconds {
		i := int(math.Ceil(q*float64(len(ds)))) - 1
		return Seconds(ds[max(i, 0)].Seconds())
	}
	return Dist{N: len(ds), P50: at(0.5), P99: at(0.99), Max: Seconds(ds[len(ds)-1].Seconds())}
}

func (d Dist) String() string {
	if d.N == 0 {
		return "-"
	}
	return fmt.Sprintf("%s / %s / %s", d.P50, d.P99, d.Max)
}

// Phase is one commit of the scenario and how the fleet followed it.
type Phase struct {
	Name   string `json:"name"`
	Commit string `json:"commit"`
	// Sites is how many sites the commit changed.
	Sites int `json:"sites"`
	// PlansStored is how many of them got a plan for the commit, and
	// CommitToPlansStored the time from the push to the last one's first plan.
	PlansStored         int     `json:"plansStored"`
	CommitToPlansStored Seconds `json:"commitToPlansStored"`
	// Converge is push → the site's hypervisor holding its desired VMs,
	// per changed site; Pickup is plan stored → the agent's first
	// hypervisor call.
	Converge Dist `json:"converge"`
	Pickup   Dist `json:"pickup"`
	// Apply is the final nkudo/apply state, ApplyFinal when it was seen
	// (from the push), ApplyFinals how many final nkudo/apply statuses the
	// forge received for the commit (one is right).
	Apply       string  `json:"apply"`
	ApplyFinal  Seconds `json:"applyFinal"`
	ApplyFinals int     `json:"applyFinals"`
}

// Report is the outcome of a run.
type Report struct {
	Sites    int       `json:"sites"`
	VMs      int       `json:"vmsPerSite"`
	Replicas int       `json:"replicas"`
	Started  time.Time `json:"started"`
	Elapsed  Seconds   `json:"elapsed"`
	// Enroll is the time to create and enroll every site.
	Enroll Seconds `json:"enroll"`
	Phases []Phase `json:"phases"`
	// HeartbeatsPerSecond is the acknowledged heartbeats from every agent's
	// first one to the end of the scenario, per second.
	HeartbeatsPerSecond float64 `json:"heartbeatsPerSecond"`
	HeartbeatErrors     int64   `json:"heartbeatErrors"`
	HypervisorCalls     int     `json:"hypervisorCalls"`
	HypervisorFailures  int     `json:"hypervisorFailures"`
	// DuplicateCalls are hypervisor calls made twice with the same VM,
	// operation and arguments; DuplicatePlans plans stored twice for one
	// site, commit and inventory version. Both are empty in a correct run.
	DuplicateCalls  []string `json:"duplicateCalls"`
	DuplicatePlans  []string `json:"duplicatePlans"`
	StatusesWritten int      `json:"statusesWritten"`
	ControlPlane    *Usage   `json:"controlPlane,omitempty"`
	DatabaseBytes   int64    `json:"databaseBytes,omitempty"`
	ReplicaKilled   bool     `json:"replicaKilled,omitempty"`
	// KilledAtConverged is how many sites had converged in the rollout
	// when the replica was killed.
	KilledAtConverged int `json:"killedAtConverged,omitempty"`
	KilledReplica     int `json:"killedReplica,omitempty"`
	// RSS is the control plane's current RSS before the sites and with
	// every agent connected (nil: not reported).
	RSS *ConnectedRSS `json:"rss,omitempty"`
	// Storm is the reconnect storm (nil: not run).
	Storm *Storm `json:"reconnectStorm,omitempty"`
}

// Problems lists what makes the run incorrect: duplicates, a commit
// without exactly one final nkudo/apply, or one that did not succeed, an
// agent that did not come back from the reconnect storm, or a site whose
// VMs changed across it.
func (r *Report) Problems() []string {
	var out []string
	for _, d := range r.DuplicateCalls {
		out = append(out, "duplicate hypervisor call: "+d)
	}
	for _, d := range r.DuplicatePlans {
		out = append(out, "duplicate plan: "+d)
	}
	for _, p := range r.Phases {
		if p.Apply != "success" {
			out = append(out, fmt.Sprintf("%s: nkudo/apply is %q on %s", p.Name, p.Apply, p.Commit))
		}
		if p.ApplyFinals != 1 {
			out = append(out, fmt.Sprintf("%s: %d final nkudo/apply statuses on %s, want 1", p.Name, p.ApplyFinals, p.Commit))
		}
	}
	if st := r.Storm; st != nil {
		if st.GaveUp > 0 {
			out = append(out, fmt.Sprintf("reconnect storm: %d of %d agents gave up (no heartbeat acknowledged within %s)", st.GaveUp, r.Sites, st.Bound))
		}
		if st.NotHolding > 0 {
			out = append(out, fmt.Sprintf("reconnect storm: %d sites' hypervisors do not hold their desired VMs afterwards", st.NotHolding))
		}
	}
	return out
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// WriteTable writes the report for people.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "fleet\t%d sites × %d VMs, %d replica(s)\n", r.Sites, r.VMs, max(r.Replicas, 1))
	fmt.Fprintf(tw, "enroll\t%s\n", r.Enroll)
	fmt.Fprintln(tw)
	if len(r.Phases) > 0 {
		fmt.Fprintln(tw, "phase\tsites\tcommit → plans stored\tconverged p50 / p99 / max\tpickup p50 / p99 / max\tnkudo/apply")
		for _, p := range r.Phases {
			plans := "-"
			if p.PlansStored > 0 {
				plans = fmt.Sprintf("%s (%d)", p.CommitToPlansStored, p.PlansStored)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s after %s (%d final)\n", p.Name, p.Sites, plans, p.Converge, p.Pickup, p.Apply, p.ApplyFinal, p.ApplyFinals)
		}
		fmt.Fprintln(tw)
	}
	if r.HeartbeatsPerSecond > 0 {
		fmt.Fprintf(tw, "heartbeats\t%.0f/s sustained, %d failed\n", r.HeartbeatsPerSecond, r.HeartbeatErrors)
	} else {
		fmt.Fprintf(tw, "heartbeats\t%d failed\n", r.HeartbeatErrors)
	}
	fmt.Fprintf(tw, "hypervisor calls\t%d (%d failed by injection), %d duplicate\n", r.HypervisorCalls, r.HypervisorFailures, len(r.DuplicateCalls))
	fmt.Fprintf(tw, "duplicate plans\t%d\n", len(r.DuplicatePlans))
	fmt.Fprintf(tw, "statuses written\t%d\n", r.StatusesWritten)
	if u := r.ControlPlane; u != nil {
		fmt.Fprintf(tw, "control plane\tpeak RSS %s, CPU %.1fs%s\n", mib(u.PeakRSSBytes), u.CPUSeconds, note(u.Note))
	}
	if m := r.RSS; m != nil {
		after := ""
		if m.AfterStormBytes > 0 {
			after = ", after the storm " + mib(m.AfterStormBytes)
		}
		fmt.Fprintf(tw, "connected RSS\t%s with every agent connected, %s before: %.1f KiB per agent%s%s\n",
			mib(m.ConnectedBytes), mib(m.BeforeBytes), float64(m.PerAgentBytes)/1024, after, note(m.Note))
	}
	if r.DatabaseBytes > 0 {
		fmt.Fprintf(tw, "database\t%s\n", mib(r.DatabaseBytes))
	}
	if st := r.Storm; st != nil {
		all := "not all (bound " + st.Bound.String() + ")"
		if st.GaveUp == 0 {
			all = st.AllConnected.String()
		}
		fmt.Fprintf(tw, "reconnect storm\tstop %s, ready %s after; all connected after %s, per agent p50 / p99 / max %s\n",
			st.Stop, st.Ready, all, st.Reconnect)
		e := st.Errors
		fmt.Fprintf(tw, "\t%d agent requests failed (%d heartbeats; refused %d, TLS or reset %d, overloaded %d, other %d); %d of %d agents gave up; %d sites not holding their VMs\n",
			st.RequestErrors, st.HeartbeatErrors, e.Refused, e.TLSOrReset, e.Overloaded, e.Other, st.GaveUp, r.Sites, st.NotHolding)
	}
	if r.ReplicaKilled {
		fmt.Fprintf(tw, "replica killed\treplica %d, kill -9, with %d of %d sites converged in the rollout\n", r.KilledReplica, r.KilledAtConverged, r.Sites)
	}
	fmt.Fprintf(tw, "elapsed\t%s\n", r.Elapsed)
	if p := r.Problems(); len(p) > 0 {
		fmt.Fprintf(tw, "PROBLEMS\t%s\n", strings.Join(p, "\n\t"))
	}
	return tw.Flush()
}

func note(n string) string {
	if n == "" {
		return ""
	}
	return " (" + n + ")"
}
