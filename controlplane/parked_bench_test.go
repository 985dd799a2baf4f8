package controlplane_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
)

// parkedAgentsEnv, when set, makes the test binary the fleet of
// BenchmarkParkedLongPolls: it reads the agents' credentials from the
// directory it names, parks one long-poll per agent and waits for stdin
// to close. The agents run in their own process so that the server's
// memory and goroutines are measured alone.
const parkedAgentsEnv = "NKUDO_BENCH_PARKED_AGENTS"

type parkedFleet struct {
	URL   string   `json:"url"`
	CA    string   `json:"ca"`
	Certs []string `json:"certs"` // PEM: certificate, then EC key
}

func init() {
	dir := os.Getenv(parkedAgentsEnv)
	if dir == "" {
		return
	}
	os.Exit(runParkedFleet(dir))
}

func runParkedFleet(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "fleet.json"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var f parkedFleet
	if err := json.Unmarshal(b, &f); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The child's main: no test context to derive from.
	ctx := context.Background()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(f.CA))
	for _, c := range f.Certs {
		cert, err := tls.X509KeyPair([]byte(c), []byte(c))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		client, err := api.NewClient(api.ClientConfig{BaseURL: f.URL, RootCAs: pool,
			Certificate: func() (*tls.Certificate, error) { return &cert, nil }})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go func() {
			for {
				// As the agent does: a heartbeat on the same connection
				// first, then the long-poll, re-armed when it returns.
				if _, err := client.Heartbeat(ctx, api.HeartbeatRequest{}); err != nil {
					fmt.Fprintln(os.Stderr, "heartbeat:", err)
				}
				for {
					if _, err := client.WaitPlan(ctx, "", time.Hour); err != nil {
						fmt.Fprintln(os.Stderr, "poll:", err)
						time.Sleep(time.Second)
					}
				}
			}
		}()
	}
	fmt.Println("started")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
	return 0
}

// BenchmarkParkedLongPolls measures what one connected, idle agent costs
// the server: n agents (each its own mTLS connection, in another process)
// heartbeat once and park a plan long-poll; the server's live heap and
// goroutines are compared with those before they connected. b.N is
// ignored beyond running once per size:
//
//	go test ./controlplane -run '^$' -bench BenchmarkParkedLongPolls -benchtime 1x
//
// On the 2-core CI machine (SQLite): about 55-56 KiB and 3 goroutines per
// agent, of which ~30 KiB are the three goroutines' stacks (the HTTP/2
// connection's reader and server loop, and the handler); 4 goroutines
// before the store's wake-up hub stopped running one per subscriber, and
// ~37 KiB of stacks before the TLS handshake moved off the connection's
// goroutine (handshakeListener).
func BenchmarkParkedLongPolls(b *testing.B) {
	for _, n := range []int{100, 500} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			o := cptest.Options{}
			noEnrollLimit(&o)
			env := cptest.Start(b, o)
			env.NewTenant("bench")
			f := parkedFleet{URL: env.URL, CA: string(env.PKI.CAPEM())}
			for i := range n {
				a := env.Enroll("bench", fmt.Sprintf("site-%04d", i))
				key, err := x509.MarshalECPrivateKey(a.Key)
				if err != nil {
					b.Fatal(err)
				}
				f.Certs = append(f.Certs, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Cert.Certificate[0]}))+
					string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: key})))
			}
			dir := b.TempDir()
			js, _ := json.Marshal(f)
			if err := os.WriteFile(filepath.Join(dir, "fleet.json"), js, 0o600); err != nil {
				b.Fatal(err)
			}
			srv := env.Server()
			heap0, stack0, g0 := settle()

			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), parkedAgentsEnv+"="+dir)
			cmd.Stderr = os.Stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() { stdin.Close(); _ = cmd.Wait() }()
			deadline := time.Now().Add(2 * time.Minute)
			for srv.LongPolls() < n {
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d long-polls parked", srv.LongPolls(), n)
				}
				time.Sleep(50 * time.Millisecond)
			}
			heap1, stack1, g1 := settle()
			perAgent := func(after, before uint64) float64 { return float64(int64(after)-int64(before)) / float64(n) / 1024 }
			b.ReportMetric(perAgent(heap1+stack1, heap0+stack0), "KiB/agent")
			b.ReportMetric(perAgent(heap1, heap0), "heap-KiB/agent")
			b.ReportMetric(perAgent(stack1, stack0), "stack-KiB/agent")
			b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/agent")
		})
	}
}

// settle collects garbage until the heap is steady (and parked
// goroutines' stacks have shrunk) and returns the heap in use, the
// goroutine stacks in use and the goroutine count.
func settle() (heap, stack uint64, goroutines int) {
	var ms runtime.MemStats
	for range 3 {
		runtime.GC()
		debug.FreeOSMemory()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine()
}
