package storetest

import (
	"fmt"
	"sync"
	"testing"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// Concurrent audited writes (from several goroutines, on Postgres from
// several connections) still form one unbroken chain.
func testAuditConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	must2(s.CreateTenant(ctx, admin, store.Tenant{ID: tenantA}))(t)
	const workers, each = 6, 8
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				var err error
				if i%2 == 0 {
					_, err = s.CreateSite(ctx, admin, tenantA, fmt.Sprintf("w%d-s%d", w, i))
				} else {
					_, err = s.AppendAudit(ctx, store.AuditEvent{Tenant: tenantA, Actor: "system:test", Action: "test.event"})
				}
				if err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	v, err := s.VerifyAudit(ctx)
	must(t, err)
	if !v.OK() || v.Events != 1+workers*each {
		t.Errorf("VerifyAudit = %+v, want %d events intact", v, 1+workers*each)
	}
}

// Concurrent heartbeats of one site: every change gets its own version and
// the final version counts the changes exactly.
func testHeartbeatConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	sets := [][]model.ObservedVM{
		{{Name: "a", State: model.VMRunning}},
		{{Name: "a", State: model.VMStopped}},
	}
	const workers, each = 4, 10
	var mu sync.Mutex
	versions := map[int64]int{}
	changes := 0
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				res, err := s.RecordHeartbeat(ctx, tenantA, siteA, store.Heartbeat{VMs: sets[(w+i)%2], Time: epoch})
				if err != nil {
					t.Error(err)
					return
				}
				if res.Changed {
					mu.Lock()
					versions[res.InventoryVersion]++
					changes++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for v, n := range versions {
		if n != 1 {
			t.Errorf("version %d reported as a change %d times", v, n)
		}
	}
	inv, err := s.Inventory(ctx, tenantA, siteA)
	must(t, err)
	if inv.Version != int64(changes) {
		t.Errorf("final version %d, but %d heartbeats reported a change", inv.Version, changes)
	}
}
