package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/store"
)

// testSiteCertificates: a certificate is valid only while it is recorded
// for the site's current epoch and not revoked; revoking covers every
// certificate of the site, and deleting a site revokes them all, so the
// site created again under the same name accepts none of them.
func testSiteCertificates(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	check := func(site, serial string, want error) {
		t.Helper()
		_, err := s.CheckSiteCertificate(ctx, tenantA, site, serial)
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Fatalf("CheckSiteCertificate(%s, %s) = %v, want %v", site, serial, err, want)
		}
	}
	must(t, s.IssueSiteCertificate(ctx, agent, tenantA, siteA, store.CertAuth{}, "a1", epoch))
	st, err := s.CheckSiteCertificate(ctx, tenantA, siteA, "a1")
	must(t, err)
	if st.Epoch == "" || st.CertSerial != "a1" || st.EnrolledAt.IsZero() {
		t.Fatalf("site after enrollment = %+v, want an epoch, serial a1 and EnrolledAt", st)
	}
	check(siteA, "zz", store.ErrCertUnknown)
	check(siteB, "a1", store.ErrCertUnknown) // another site's certificate
	_, err = s.CheckSiteCertificate(ctx, tenantA, "nope", "a1")
	wantErr(t, err, store.ErrNotFound)

	// Renewal: both certificates work until revoked (the agent switches over).
	must(t, s.IssueSiteCertificate(ctx, agent, tenantA, siteA, store.CertAuth{Serial: "a1"}, "a2", epoch.Add(second)))
	check(siteA, "a1", nil)
	check(siteA, "a2", nil)
	// Renewing with a certificate the site never had records nothing.
	wantErr(t, s.IssueSiteCertificate(ctx, agent, tenantA, siteA, store.CertAuth{Serial: "forged"}, "a3", epoch), store.ErrCertUnknown)
	check(siteA, "a3", store.ErrCertUnknown)

	revoked, err := s.RevokeSiteCertificates(ctx, admin, tenantA, siteA, epoch.Add(2*second))
	must(t, err)
	if want := []string{"a1", "a2"}; !slices.Equal(revoked, want) {
		t.Fatalf("RevokeSiteCertificates = %v, want %v", revoked, want)
	}
	check(siteA, "a1", store.ErrCertRevoked)
	check(siteA, "a2", store.ErrCertRevoked)
	again, err := s.RevokeSiteCertificates(ctx, admin, tenantA, siteA, epoch.Add(3*second))
	must(t, err)
	if len(again) != 0 {
		t.Fatalf("second RevokeSiteCertificates = %v, want none", again)
	}
	// A renewal authenticated by a revoked certificate records nothing.
	wantErr(t, s.IssueSiteCertificate(ctx, agent, tenantA, siteA, store.CertAuth{Serial: "a2"}, "a4", epoch), store.ErrCertRevoked)
	check(siteA, "a4", store.ErrCertUnknown)
	if st, err := s.GetSite(ctx, tenantA, siteA); err != nil || st.CertSerial != "a2" {
		t.Fatalf("site after refused renewal = %+v, %v; want serial a2", st, err)
	}
	// Enrolling again (a redeemed token) works.
	must(t, s.IssueSiteCertificate(ctx, agent, tenantA, siteA, store.CertAuth{}, "a5", epoch.Add(4*second)))
	check(siteA, "a5", nil)

	// An enrollment whose token was redeemed before a revocation of the
	// site records nothing after it; one redeemed after it does.
	token := func(id string) {
		t.Helper()
		_, err := s.CreateEnrollmentToken(ctx, admin, store.EnrollmentToken{ID: id, Tenant: tenantA, Site: siteA, ExpiresAt: epoch.Add(time.Hour)}, store.HashSecret(id))
		must(t, err)
		_, err = s.RedeemEnrollmentToken(ctx, id, store.HashSecret(id), epoch)
		must(t, err)
	}
	token("tok-before")
	_, err = s.RevokeSiteCertificates(ctx, admin, tenantA, siteA, epoch.Add(5*second))
	must(t, err)
	wantErr(t, s.IssueSiteCertificate(ctx, agent, tenantA, siteA, store.CertAuth{EnrollmentToken: "tok-before"}, "e1", epoch), store.ErrCertRevoked)
	check(siteA, "e1", store.ErrCertUnknown)
	wantErr(t, s.IssueSiteCertificate(ctx, agent, tenantA, siteA, store.CertAuth{EnrollmentToken: "never-redeemed"}, "e2", epoch), store.ErrCertRevoked)
	token("tok-after")
	must(t, s.IssueSiteCertificate(ctx, agent, tenantA, siteA, store.CertAuth{EnrollmentToken: "tok-after"}, "e3", epoch))
	check(siteA, "e3", nil)

	// Delete and create again: a new epoch, and every old certificate revoked.
	must(t, s.DeleteSite(ctx, admin, tenantA, siteA))
	_, err = s.CheckSiteCertificate(ctx, tenantA, siteA, "a5")
	wantErr(t, err, store.ErrCertRevoked)
	_, err = s.CheckSiteCertificate(ctx, tenantA, siteA, "never-issued")
	wantErr(t, err, store.ErrNotFound)
	again2, err := s.CreateSite(ctx, admin, tenantA, siteA)
	must(t, err)
	if again2.Epoch == "" || again2.Epoch == st.Epoch {
		t.Fatalf("re-created site epoch %q, want a new one (old %q)", again2.Epoch, st.Epoch)
	}
	check(siteA, "a5", store.ErrCertRevoked)
	wantErr(t, s.IssueSiteCertificate(ctx, agent, tenantA, siteA, store.CertAuth{Serial: "a5"}, "a6", epoch), store.ErrCertRevoked)
	check(siteA, "a6", store.ErrCertUnknown)
	revs, err := s.ListRevokedSerials(ctx)
	must(t, err)
	var got []string
	for _, r := range revs {
		got = append(got, r.Serial)
	}
	slices.Sort(got)
	if want := []string{"a1", "a2", "a5", "e3"}; !slices.Equal(got, want) {
		t.Fatalf("revoked serials %v, want %v (the deleted site's last certificate included)", got, want)
	}

	// Deleting a tenant revokes its sites' certificates too.
	must(t, s.IssueSiteCertificate(ctx, agent, tenantB, siteB, store.CertAuth{}, "b1", epoch))
	must(t, s.DeleteTenant(ctx, admin, tenantB))
	revoked2, err := s.IsSerialRevoked(ctx, "b1")
	must(t, err)
	if !revoked2 {
		t.Fatal("certificate of a deleted tenant's site is not revoked")
	}
}

// testRevokeRenewRace races renewals against a revocation of the site, many
// times: after both are done, no certificate a renewal recorded may still
// be valid. Without serialisation a renewal that authenticated before the
// revoke records its new certificate after it, and that one works.
func testRevokeRenewRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	const rounds, renewals = 200, 4
	for round := range rounds {
		auth := fmt.Sprintf("r%d", round)
		must(t, s.IssueSiteCertificate(ctx, agent, tenantA, siteA, store.CertAuth{}, auth, epoch))
		var wg sync.WaitGroup
		issued := make(chan string, renewals)
		start := make(chan struct{})
		for i := range renewals {
			wg.Go(func() {
				<-start
				serial := fmt.Sprintf("%s-%d", auth, i)
				err := s.IssueSiteCertificate(ctx, agent, tenantA, siteA, store.CertAuth{Serial: auth}, serial, epoch)
				switch {
				case err == nil:
					issued <- serial
				case !errors.Is(err, store.ErrCertRevoked):
					t.Errorf("renewal: %v, want success or ErrCertRevoked", err)
				}
			})
		}
		wg.Go(func() {
			<-start
			if _, err := s.RevokeSiteCertificates(ctx, admin, tenantA, siteA, epoch); err != nil {
				t.Errorf("revoke: %v", err)
			}
		})
		close(start)
		wg.Wait()
		close(issued)
		for serial := range issued {
			if _, err := s.CheckSiteCertificate(ctx, tenantA, siteA, serial); !errors.Is(err, store.ErrCertRevoked) {
				t.Fatalf("round %d: certificate %s renewed around a revoke is still accepted (%v)", round, serial, err)
			}
		}
		if _, err := s.CheckSiteCertificate(ctx, tenantA, siteA, auth); !errors.Is(err, store.ErrCertRevoked) {
			t.Fatalf("round %d: the revoked certificate is accepted (%v)", round, err)
		}
	}
}
