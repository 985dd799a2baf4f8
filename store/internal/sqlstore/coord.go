package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/nkudo/nkudo/store"
)

// RecordDelivery implements store.Webhooks.
func (s *Store) RecordDelivery(ctx context.Context, forge, deliveryID string, now time.Time) (bool, error) {
	if forge == "" || deliveryID == "" {
		return false, fmt.Errorf("record delivery: %w", errInvalid("forge and delivery id are required"))
	}
	var dup bool
	err := s.write(ctx, func(t *wtx) error {
		n, err := t.Exec(ctx, `INSERT INTO webhook_deliveries (forge, delivery_id, received_at) VALUES ($1, $2, $3)
			ON CONFLICT (forge, delivery_id) DO NOTHING`, forge, deliveryID, us(store.Micro(now)))
		dup = n == 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("record delivery %s/%s: %w", forge, deliveryID, err)
	}
	return dup, nil
}

// PruneDeliveries implements store.Webhooks.
func (s *Store) PruneDeliveries(ctx context.Context, cutoff time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(t *wtx) (err error) {
		n, err = t.Exec(ctx, `DELETE FROM webhook_deliveries WHERE received_at < $1`, us(store.Micro(cutoff)))
		if err != nil {
			return err
		}
		m, err := t.Exec(ctx, `DELETE FROM webhook_payloads WHERE received_at < $1`, us(store.Micro(cutoff)))
		n += m
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune deliveries: %w", err)
	}
	return n, nil
}

// RecordPayload implements store.Webhooks. One upsert decides, so two
// replays racing each other cannot both pass: the row is written only when
// it is new or older than the window.
func (s *Store) RecordPayload(ctx context.Context, repoID, bodyHash string, now time.Time, window time.Duration) (bool, error) {
	if repoID == "" || bodyHash == "" || window <= 0 {
		return false, fmt.Errorf("record payload: %w", errInvalid("repository, body hash and a positive window are required"))
	}
	var dup bool
	err := s.write(ctx, func(t *wtx) error {
		n, err := t.Exec(ctx, `INSERT INTO webhook_payloads (repo_id, body_sha256, received_at) VALUES ($1, $2, $3)
			ON CONFLICT (repo_id, body_sha256) DO UPDATE SET received_at = excluded.received_at
			WHERE webhook_payloads.received_at < $4`,
			repoID, bodyHash, us(store.Micro(now)), us(store.Micro(now.Add(-window))))
		dup = n == 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("record payload of %s: %w", repoID, err)
	}
	return dup, nil
}

// AcquireLease implements store.Coordination. One upsert decides: the row
// is written only when it is free, expired, or already the holder's.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	if name == "" || holder == "" || ttl <= 0 {
		return false, fmt.Errorf("acquire lease: %w", errInvalid("name, holder and a positive ttl are required"))
	}
	// Registered before the write: a concurrent acquire by another holder
	// of this process must never take the lease for an earlier process's.
	if s.processLeases {
		s.holders.Store(holder, true)
	}
	var got bool
	err := s.write(ctx, func(t *wtx) error {
		if s.processLeases {
			if err := s.takeOverStale(ctx, t, name, holder); err != nil {
				return err
			}
		}
		var h string
		err := t.QueryRow(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, `+s.d.NowMicros+` + $3)
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
			WHERE leases.holder = excluded.holder OR leases.expires_at <= `+s.d.NowMicros+`
			RETURNING holder`, name, holder, ttl.Microseconds()).Scan(&h)
		if s.b.IsNoRows(err) {
			got = false
			return nil
		}
		got = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	return got, nil
}

// takeOverStale frees the lease name when a holder this Store never
// granted holds it: with a single-process database that holder belonged to
// an earlier process (killed mid-reconcile, say), and waiting for its lease
// to expire would only stall the work for its whole TTL.
func (s *Store) takeOverStale(ctx context.Context, t *wtx, name, holder string) error {
	var h string
	err := t.QueryRow(ctx, `SELECT holder FROM leases WHERE name = $1`, name).Scan(&h)
	switch {
	case s.b.IsNoRows(err):
		return nil
	case err != nil:
		return err
	case h == holder:
		return nil
	}
	if _, mine := s.holders.Load(h); mine {
		return nil
	}
	if _, err := t.Exec(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, name, h); err != nil {
		return err
	}
	s.log.Info("took over a lease left by an earlier process", "component", "store", "lease", name, "previous_holder", h)
	return nil
}

// RenewLease implements store.Coordination.
func (s *Store) RenewLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	var n int64
	err := s.write(ctx, func(t *wtx) (err error) {
		n, err = t.Exec(ctx, `UPDATE leases SET expires_at = `+s.d.NowMicros+` + $1 WHERE name = $2 AND holder = $3`,
			ttl.Microseconds(), name, holder)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("renew lease %s: %w", name, err)
	}
	return n > 0, nil
}

// ReleaseLease implements store.Coordination.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	err := s.write(ctx, func(t *wtx) error {
		_, err := t.Exec(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, name, holder)
		return err
	})
	if err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}

// Subscribe implements store.Coordination.
func (s *Store) Subscribe(ctx context.Context, topic string) (<-chan struct{}, func()) {
	return s.hub.Subscribe(ctx, topic)
}

// Notify implements store.Coordination.
func (s *Store) Notify(ctx context.Context, topic string) error {
	err := s.write(ctx, func(t *wtx) error {
		t.notify(topic)
		return nil
	})
	if err != nil {
		return fmt.Errorf("notify %s: %w", topic, err)
	}
	return nil
}

// NotifyTopics implements store.Coordination.
func (s *Store) NotifyTopics(ctx context.Context, topics []string) error {
	if len(topics) == 0 {
		return nil
	}
	err := s.write(ctx, func(t *wtx) error {
		for _, topic := range topics {
			t.notify(topic)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("notify %d topics: %w", len(topics), err)
	}
	return nil
}
