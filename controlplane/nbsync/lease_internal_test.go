package nbsync

import (
	"testing"
	"time"
)

// TestLeaseOutlivesATenantPass: the lease, renewed before each tenant,
// must not expire while one tenant's pass may still run.
func TestLeaseOutlivesATenantPass(t *testing.T) {
	for _, o := range []Options{
		{Interval: 30 * time.Second},
		{Interval: time.Second, TenantTimeout: 10 * time.Minute},
		{Interval: 5 * time.Minute, TenantTimeout: time.Second},
	} {
		s := &Syncer{o: o}
		if ttl, pass := s.leaseTTL(), s.tenantTimeout(); ttl <= pass {
			t.Errorf("interval %s, tenant timeout %s: lease TTL %s does not outlive a tenant's pass", o.Interval, pass, ttl)
		}
	}
}
