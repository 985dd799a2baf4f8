package egress_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nkudo/nkudo/internal/egress"
)

func TestPolicyCheck(t *testing.T) {
	allow, err := egress.ParseAllow([]string{"10.1.0.0/16", "fd00:1::/32", "192.168.7.7"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ip            string
		deny, denyAll bool // under the zero policy; under the allow-list above
	}{
		{"8.8.8.8", false, false},
		{"2606:4700::1111", false, false},
		{"127.0.0.1", true, true},
		{"127.255.0.9", true, true},
		{"::1", true, true},
		{"::ffff:127.0.0.1", true, true}, // IPv4-mapped loopback
		{"0.0.0.0", true, true},
		{"::", true, true},
		{"10.0.0.1", true, true},
		{"10.1.2.3", true, false}, // re-opened by 10.1.0.0/16
		{"::ffff:10.1.2.3", true, false},
		{"172.16.0.1", true, true},
		{"172.31.255.255", true, true},
		{"172.32.0.1", false, false},
		{"192.168.1.1", true, true},
		{"192.168.7.7", true, false}, // a single address
		{"169.254.169.254", true, true},
		{"::ffff:169.254.169.254", true, true},
		{"fe80::1", true, true},
		{"fc00::1", true, true},
		{"fd00:1::5", true, false},
		{"fd00:2::5", true, true},
		{"224.0.0.1", true, true},
		{"ff02::1", true, true},
		{"255.255.255.255", true, true},
		{"100.64.0.1", true, true},
	} {
		ip := netip.MustParseAddr(tc.ip)
		if err := (egress.Policy{}).Check(ip); (err != nil) != tc.deny || (err != nil && !errors.Is(err, egress.ErrDenied)) {
			t.Errorf("default policy, %s: err = %v, want denied %v", tc.ip, err, tc.deny)
		}
		if err := (egress.Policy{Allow: allow}).Check(ip); (err != nil) != tc.denyAll {
			t.Errorf("allow-list policy, %s: err = %v, want denied %v", tc.ip, err, tc.denyAll)
		}
	}
}

func TestParseAllowNamesTheBadEntry(t *testing.T) {
	_, err := egress.ParseAllow([]string{"127.0.0.0/8", "not-a-cidr"})
	if err == nil || !strings.Contains(err.Error(), `"not-a-cidr"`) {
		t.Fatalf("err = %v, want it to name the entry", err)
	}
}

// counter is a real HTTP server on addr that counts its requests.
func counter(t *testing.T, addr string, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("SKIP: listen %s: %v", addr, err)
	}
	var n atomic.Int64
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if h != nil {
			h(w, r)
		}
	})}}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &n
}

// A name that resolves to loopback (the shape of DNS rebinding: the name
// looks external, its address is not) is refused at dial time.
func TestHTTPClientRefusesNameResolvingToLoopback(t *testing.T) {
	srv, hits := counter(t, "127.0.0.1:0", nil)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	c := egress.Policy{}.HTTPClient(5 * time.Second)
	resp, err := c.Get("http://localhost:" + port + "/")
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, egress.ErrDenied) {
		t.Fatalf("GET via localhost: err = %v, want ErrDenied", err)
	}
	if hits.Load() != 0 {
		t.Errorf("the loopback server got %d requests", hits.Load())
	}
	// The same server is reachable once the operator allows loopback.
	resp, err = egress.Policy{Allow: egress.Loopback()}.HTTPClient(5 * time.Second).Get("http://127.0.0.1:" + port + "/")
	if err != nil {
		t.Fatalf("with loopback allowed: %v", err)
	}
	resp.Body.Close()
}

// An allowed server redirecting to a denied address does not get the
// client there.
func TestHTTPClientRefusesRedirectToDeniedAddress(t *testing.T) {
	denied, deniedHits := counter(t, "127.0.0.2:0", nil)
	allowed, _ := counter(t, "127.0.0.1:0", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, denied.URL+"/latest/meta-data/", http.StatusFound)
	})
	p := egress.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	resp, err := p.HTTPClient(5 * time.Second).Get(allowed.URL + "/")
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, egress.ErrDenied) {
		t.Fatalf("redirect to %s: err = %v, want ErrDenied", denied.URL, err)
	}
	if deniedHits.Load() != 0 {
		t.Errorf("the denied server got %d requests", deniedHits.Load())
	}
}

func TestCheckAddr(t *testing.T) {
	p := egress.Policy{}
	if err := p.CheckAddr(&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 22}); !errors.Is(err, egress.ErrDenied) {
		t.Errorf("loopback ssh address: %v", err)
	}
	if err := p.CheckAddr(&net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 22}); err != nil {
		t.Errorf("public ssh address: %v", err)
	}
	if err := p.CheckAddr(nil); err == nil {
		t.Error("nil address accepted")
	}
}
