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
	s, _ := openURL(t)
	return s
}

// openURL opens a store on a fresh database and returns its URL too, for
// tests that reach the database beside the store.
func openURL(t *testing.T) (*postgres.Store, string) {
	t.Helper()
	url := pgtest.URL(t)
	s, err := postgres.Open(t.Context(), url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, url
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

// Secrets are sealed before they reach the database.
func TestNoPlaintextSecrets(t *testing.T) {
	ctx := t.Context()
	s, url := openURL(t)
	admin := store.Actor{Kind: store.ActorAdmin, ID: "t"}
	const secret = "PLAINTEXT-4c1e"
	if _, err := s.CreateTenant(ctx, admin, store.Tenant{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutCredential(ctx, admin, store.Credential{Tenant: "acme", Name: "ci", Kind: store.CredentialToken, Host: "git.example"}, secret+"c"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: "acme", Name: "r", URL: "https://git.example/r"}, secret+"w"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSite(ctx, admin, "acme", "edge-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSiteNetBird(ctx, admin, "acme", "edge-1", "https://nb.example", secret+"n"); err != nil {
		t.Fatal(err)
	}
	q := storetest.PostgresQuery(t, url)
	var n int
	q(ctx, `SELECT (SELECT count(*) FROM credentials WHERE secret LIKE '%PLAINTEXT%')
		+ (SELECT count(*) FROM repositories WHERE webhook_secret LIKE '%PLAINTEXT%')
		+ (SELECT count(*) FROM sites WHERE netbird_setup_key LIKE '%PLAINTEXT%')
		+ (SELECT count(*) FROM audit_events WHERE detail LIKE '%PLAINTEXT%')`, &n)
	if n != 0 {
		t.Errorf("%d rows hold a secret in plain text", n)
	}
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

func TestDesiredKeyUpgrade(t *testing.T) {
	storetest.DesiredKeyUpgrade(t, func(t *testing.T) storetest.Reopen {
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
