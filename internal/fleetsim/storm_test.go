package fleetsim

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/api"
)

// The agents' failed requests are sorted by what real failures return:
// a closed port, a connection cut during the TLS handshake, a 503 with
// Retry-After, and anything else.
func TestClassifyRealFailures(t *testing.T) {
	heartbeat := func(t *testing.T, base string, c *http.Client) error {
		t.Helper()
		cl, err := api.NewClient(api.ClientConfig{BaseURL: base, HTTPClient: c})
		if err != nil {
			t.Fatal(err)
		}
		_, err = cl.Heartbeat(t.Context(), api.HeartbeatRequest{})
		if err == nil {
			t.Fatal("heartbeat succeeded")
		}
		return err
	}

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close()

	cut, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer cut.Close()
	go func() {
		for {
			c, err := cut.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	status := func(code int) *httptest.Server {
		srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "3")
			http.Error(w, "busy", code)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	overloaded, notFound := status(http.StatusServiceUnavailable), status(http.StatusNotFound)

	for _, tc := range []struct {
		name string
		err  func(t *testing.T) error
		want errClass
	}{
		{"refused", func(t *testing.T) error { return heartbeat(t, "https://"+addr, nil) }, errRefused},
		{"cut in the handshake", func(t *testing.T) error { return heartbeat(t, "https://"+cut.Addr().String(), nil) }, errTLSReset},
		{"503", func(t *testing.T) error { return heartbeat(t, overloaded.URL, overloaded.Client()) }, errOverload},
		{"404", func(t *testing.T) error { return heartbeat(t, notFound.URL, notFound.Client()) }, errOther},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err(t)
			if got := classify(err); got != tc.want {
				t.Errorf("classify(%v) = %d, want %d", err, got, tc.want)
			}
		})
	}
}

// An agent that did not come back, or a site whose VMs changed across the
// storm, makes the run fail; a storm without either does not.
func TestStormProblems(t *testing.T) {
	rep := Report{Sites: 10, Storm: &Storm{Bound: 300}}
	if p := rep.Problems(); len(p) != 0 {
		t.Errorf("problems of a clean storm: %q", p)
	}
	rep.Storm.GaveUp, rep.Storm.NotHolding = 2, 1
	p := strings.Join(rep.Problems(), "\n")
	for _, want := range []string{"2 of 10 agents gave up", "1 sites' hypervisors do not hold their desired VMs"} {
		if !strings.Contains(p, want) {
			t.Errorf("problems %q: want %q", p, want)
		}
	}
}
