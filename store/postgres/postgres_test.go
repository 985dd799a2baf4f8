package postgres_test

import (
	"testing"

	"github.com/nkudo/nkudo/internal/pgtest"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/postgres"
	"github.com/nkudo/nkudo/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func open(t *testing.T) store.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), pgtest.URL(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, open)
}

// BenchmarkStore runs against the pgtest cluster (fsync=off,
// synchronous_commit=off) unless NKUDO_TEST_DATABASE_URL names another server.
func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store {
		s, err := postgres.Open(b.Context(), pgtest.URL(b), postgres.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	})
}

func TestAuditKeyed(t *testing.T) {
	storetest.AuditKeyed(t, func(t *testing.T) storetest.Reopen {
		url := pgtest.URL(t)
		return func(key store.AuditKey, fresh bool) store.Store {
			s, err := postgres.Open(t.Context(), url, postgres.Options{AuditKey: key, AuditKeyFresh: fresh})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
	})
}
