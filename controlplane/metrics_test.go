package controlplane_test

import (
	"crypto/tls"
	"net/url"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
)

// TestOperatorMetrics: the series the alert rules in deploy/prometheus
// need: each site's last heartbeat time (from the server's clock, gone with
// the site) and the expiry of the CA and of the server certificate.
func TestOperatorMetrics(t *testing.T) {
	clock := &cptest.Clock{}
	clock.Advance(1000 * time.Hour) // tell the server's clock from the wall clock
	env := cptest.Start(t, cptest.Options{Clock: clock})
	acme := env.NewTenant("acme")
	agent := env.Enroll("acme", "s1")
	before := clock.Now().Unix()
	if _, err := agent.Client.Heartbeat(t.Context(), api.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	after := clock.Now().Unix()

	gauges := func() map[string]float64 {
		t.Helper()
		mfs, err := env.Server().Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				key := mf.GetName()
				for _, l := range m.GetLabel() {
					key += "," + l.GetName() + "=" + l.GetValue()
				}
				out[key] = m.GetGauge().GetValue()
			}
		}
		return out
	}
	g := gauges()
	const seen = "nkudo_site_last_heartbeat_timestamp_seconds,site=s1,tenant=acme"
	if v, ok := g[seen]; !ok || int64(v) < before || int64(v) > after {
		t.Errorf("%s = %v (present %v), want within [%d, %d]", seen, v, ok, before, after)
	}

	// The certificates the server really presents.
	u, err := url.Parse(env.URL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true}) // only reading the chain
	if err != nil {
		t.Fatal(err)
	}
	chain := conn.ConnectionState().PeerCertificates
	conn.Close()
	for name, want := range map[string]time.Time{"server": chain[0].NotAfter, "ca": chain[len(chain)-1].NotAfter} {
		key := "nkudo_certificate_expiry_timestamp_seconds,certificate=" + name
		if v := g[key]; int64(v) != want.Unix() {
			t.Errorf("%s = %v, want %d", key, v, want.Unix())
		}
	}

	if err := acme.Client.DeleteSite(t.Context(), "s1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := gauges()[seen]; ok {
		t.Error("a removed site keeps its last-heartbeat series")
	}
}
