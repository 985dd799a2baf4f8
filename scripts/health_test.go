package scripts_test

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestHealthCheck(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("SKIP: curl is not installed; health-check.sh needs it")
	}
	script := filepath.Join(repoRoot(t), "scripts", "health-check.sh")
	tests := []struct {
		name     string
		ready    int
		metrics  string
		wantCode int
		wantOut  string
	}{
		{"healthy", http.StatusOK, "nkudo_sites_online 3\n", 0, "OK       /readyz"},
		{"database down", http.StatusServiceUnavailable, "nkudo_sites_online 3\n", 2, `CRITICAL /readyz: HTTP 503 {"error":{"code":"unavailable"`},
		{"no metrics", http.StatusOK, "go_goroutines 7\n", 1, "WARNING  /metrics: HTTP 200, no nkudo_ metrics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
			mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.ready)
				if tt.ready != http.StatusOK {
					fmt.Fprintln(w, `{"error":{"code":"unavailable","message":"database unreachable"}}`)
				}
			})
			mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, tt.metrics) })
			srv := httptest.NewTLSServer(mux)
			t.Cleanup(srv.Close)
			ca := filepath.Join(t.TempDir(), "ca.crt")
			if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := run(t, t.TempDir(), nil, script, "--url", srv.URL, "--cacert", ca)
			if got := exitCode(t, err); got != tt.wantCode {
				t.Errorf("exit code %d, want %d\n%s", got, tt.wantCode, out)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("output lacks %q:\n%s", tt.wantOut, out)
			}
		})
	}

	t.Run("unverified certificate is critical", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(http.NotFoundHandler())
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
		srv.StartTLS()
		t.Cleanup(srv.Close)
		out, err := run(t, t.TempDir(), nil, script, "--url", srv.URL)
		if got := exitCode(t, err); got != 2 || !strings.Contains(out, "CRITICAL /healthz: HTTP 000") {
			t.Errorf("exit code %d, want 2 with an unreachable /healthz:\n%s", got, out)
		}
	})
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("run: %v", err)
	}
	return ee.ExitCode()
}
