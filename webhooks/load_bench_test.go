package webhooks_test

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/webhooks"
)

// zeros is an endless body of spaces that costs the sender no memory.
type zeros struct{ left int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.left <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), z.left)
	for i := range p[:n] {
		p[i] = ' '
	}
	z.left -= n
	return int(n), nil
}

// rssKiB reads a field of /proc/self/status (VmRSS, VmHWM) in KiB.
func rssKiB(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}

// BenchmarkLargeUnauthenticatedPosts sends 40 concurrent 25 MB deliveries
// over TLS, to an unknown repository and, signed with a wrong secret, to a
// known one, and reports the peak heap in use and the process's RSS growth
// while they are answered. Run it alone (it measures the whole process):
//
//	go test ./webhooks/ -run '^$' -bench LargeUnauthenticatedPosts -benchtime 1x
func BenchmarkLargeUnauthenticatedPosts(b *testing.B) {
	const (
		posts = 40
		size  = 25_000_000
	)
	for _, target := range []string{"unknown-repo", "known-repo-bad-signature"} {
		b.Run(target, func(b *testing.B) {
			st := &memStore{
				repos:      []store.Repository{{ID: "r1", Tenant: "acme", Branch: "main"}},
				secrets:    map[string]string{"acme/r1": secret},
				deliveries: map[string]bool{},
			}
			h := webhooks.New(webhooks.Options{Store: st, Sink: &sink{}})
			mux := http.NewServeMux()
			// As the control plane mounts it: behind its 25 MiB body limit.
			mux.Handle("POST /v1/webhooks/{repo}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r.Body = http.MaxBytesReader(w, r.Body, 25<<20)
				h.ServeHTTP(w, r)
			}))
			srv := httptest.NewUnstartedServer(mux)
			srv.EnableHTTP2 = true
			srv.StartTLS()
			defer srv.Close()
			c := srv.Client()
			repo := "nope"
			if target != "unknown-repo" {
				repo = "r1"
			}
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			heap0, rss0 := ms.HeapInuse, rssKiB("VmRSS")
			var peak atomic.Uint64
			stop := make(chan struct{})
			var sampler sync.WaitGroup
			sampler.Go(func() {
				t := time.NewTicker(5 * time.Millisecond)
				defer t.Stop()
				for {
					var m runtime.MemStats
					runtime.ReadMemStats(&m)
					if m.HeapInuse > peak.Load() {
						peak.Store(m.HeapInuse)
					}
					select {
					case <-stop:
						return
					case <-t.C:
					}
				}
			})
			codes := map[int]int{}
			var mu sync.Mutex
			for b.Loop() {
				var wg sync.WaitGroup
				for range posts {
					wg.Go(func() {
						req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/webhooks/"+repo, &zeros{left: size})
						req.ContentLength = size
						req.Header.Set("X-GitHub-Event", "push")
						req.Header.Set("X-Hub-Signature-256", "sha256="+sign("not this body"))
						resp, err := c.Do(req)
						code := -1
						if err == nil {
							code = resp.StatusCode
							resp.Body.Close()
						}
						mu.Lock()
						codes[code]++
						mu.Unlock()
					})
				}
				wg.Wait()
			}
			close(stop)
			sampler.Wait()
			rss1 := rssKiB("VmHWM")
			b.ReportMetric(float64(peak.Load()-min(peak.Load(), heap0))/(1<<20), "peak-heap-growth-MiB")
			b.ReportMetric(float64(rss1-rss0)/1024, "peak-rss-growth-MiB")
			b.Logf("%d posts of %d bytes to %s: answers %v", posts, size, target, codes)
		})
	}
}
