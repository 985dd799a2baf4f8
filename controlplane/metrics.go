package controlplane

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"time"

	"github.com/nkudo/nkudo/pki"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus series, registered on a per-server
// registry so tests and several servers in one process do not collide.
type metrics struct {
	reg *prometheus.Registry
	// perSite enables the per-site lag gauge (tenant, site labels): one
	// series per site, which very large fleets switch off.
	perSite     bool
	lagPerSite  *prometheus.GaugeVec
	lagHist     prometheus.Histogram
	enrollments *prometheus.CounterVec
	actions     *prometheus.CounterVec
	httpDur     *prometheus.HistogramVec
	heartbeats  prometheus.Counter
	longPolls   prometheus.Gauge
	// lastSeen is the time of each site's last accepted heartbeat (per
	// site, like lagPerSite): what a "site offline" alert compares with
	// time(), since a lag is only observed when a heartbeat does arrive.
	lastSeen *prometheus.GaugeVec
}

// NewRegistry returns the registry a server makes when Options.Registry is
// nil: Go and process collectors. A caller that registers its own series
// beside the server's (the GitOps loop) makes it first and passes it in.
func NewRegistry() (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("register go collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("register process collector: %w", err)
	}
	return reg, nil
}

func newMetrics(reg *prometheus.Registry, perSite bool) (*metrics, error) {
	if reg == nil {
		var err error
		if reg, err = NewRegistry(); err != nil {
			return nil, err
		}
	}
	m := &metrics{
		reg:     reg,
		perSite: perSite,
		lagPerSite: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nkudo_heartbeat_lag_seconds",
			Help: "How late the site's last heartbeat arrived past the interval it was given (0 = on time).",
		}, []string{"tenant", "site"}),
		lagHist: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nkudo_heartbeat_lag_distribution_seconds",
			Help:    "Heartbeat lateness past the given interval, across all sites.",
			Buckets: []float64{0, 0.5, 1, 2, 5, 10, 30, 60, 300, 900},
		}),
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nkudo_enrollment_attempts_total",
			Help: "Enrollment attempts by result.",
		}, []string{"result"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nkudo_plan_actions_total",
			Help: "Plan action results reported by agents, by result.",
		}, []string{"result"}),
		httpDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nkudo_http_request_duration_seconds",
			Help:    "HTTP request duration by route pattern, method and status code.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "method", "code"}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nkudo_heartbeats_total",
			Help: "Heartbeats accepted.",
		}),
		longPolls: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nkudo_plan_long_polls",
			Help: "Plan long-polls currently waiting.",
		}),
	}
	m.lastSeen = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nkudo_site_last_heartbeat_timestamp_seconds",
		Help: "Unix time of the site's last heartbeat accepted by this replica (take the max across replicas).",
	}, []string{"tenant", "site"})
	cs := []prometheus.Collector{m.lagHist, m.enrollments, m.actions, m.httpDur, m.heartbeats, m.longPolls}
	if perSite {
		cs = append(cs, m.lagPerSite, m.lastSeen)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metric: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) observeLag(tenant, site string, lagSeconds float64) {
	m.lagHist.Observe(lagSeconds)
	if m.perSite {
		m.lagPerSite.WithLabelValues(tenant, site).Set(lagSeconds)
	}
}

func (m *metrics) forgetSite(tenant, site string) {
	if m.perSite {
		m.lagPerSite.DeleteLabelValues(tenant, site)
		m.lastSeen.DeleteLabelValues(tenant, site)
	}
}

// sawSite records an accepted heartbeat of the site at now.
func (m *metrics) sawSite(tenant, site string, now time.Time) {
	if m.perSite {
		m.lastSeen.WithLabelValues(tenant, site).Set(float64(now.Unix()))
	}
}

// watchCertificates exports the expiry of the CA and of the server
// certificate, read at each scrape so that a reloaded certificate shows.
func (m *metrics) watchCertificates(a *pki.Authority) error {
	certs := map[string]func() *x509.Certificate{
		"ca": a.CACert,
		"server": func() *x509.Certificate {
			sc := a.ServerCertificate()
			if sc.Leaf != nil {
				return sc.Leaf
			}
			if len(sc.Certificate) == 0 {
				return nil
			}
			c, err := x509.ParseCertificate(sc.Certificate[0])
			if err != nil {
				return nil
			}
			return c
		},
	}
	for _, name := range []string{"ca", "server"} {
		get := certs[name]
		g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "nkudo_certificate_expiry_timestamp_seconds",
			Help:        "Unix time at which the control plane's certificate (ca or server) expires.",
			ConstLabels: prometheus.Labels{"certificate": name},
		}, func() float64 {
			if c := get(); c != nil {
				return float64(c.NotAfter.Unix())
			}
			return 0
		})
		if err := m.reg.Register(g); err != nil {
			return fmt.Errorf("register certificate metric: %w", err)
		}
	}
	return nil
}

// methodLabel maps a request method onto a fixed set of label values: the
// method is chosen by the caller, and every distinct value would be a new
// series kept for the life of the process. The route label needs no such
// mapping: it is a pattern of the route table, or "unmatched".
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}
