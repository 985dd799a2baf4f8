package storetest

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/store"
)

// testRepositoryVerify checks that a repository's signature policy is
// stored with it, replaced as a whole, turned off by a zero policy, and
// refused when it could never verify anything.
func testRepositoryVerify(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	pol := store.VerifyPolicy{Mode: store.VerifyHead, AllowedSigners: "alice@example.com ssh-ed25519 AAAAC3Nza alice\n"}
	r, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "signed", URL: "u", Verify: pol}, "")
	must(t, err)
	got, err := s.GetRepository(ctx, tenantA, r.ID)
	must(t, err)
	if diff := cmp.Diff(pol, got.Verify); diff != "" {
		t.Errorf("policy after create (-want +got):\n%s", diff)
	}

	pol2 := store.VerifyPolicy{Mode: store.VerifyAll, GPGKeys: "-----BEGIN PGP PUBLIC KEY BLOCK-----\n…\n"}
	up, err := s.UpdateRepository(ctx, admin, tenantA, r.ID, store.RepositoryUpdate{Verify: &pol2})
	must(t, err)
	if diff := cmp.Diff(pol2, up.Verify); diff != "" {
		t.Errorf("policy after update (-want +got):\n%s", diff)
	}
	list, err := s.ListRepositories(ctx, tenantA)
	must(t, err)
	if len(list) != 1 || list[0].Verify != pol2 {
		t.Errorf("ListRepositories policy = %+v, want %+v", list, pol2)
	}
	// Other updates leave the policy alone.
	susp := true
	up, err = s.UpdateRepository(ctx, admin, tenantA, r.ID, store.RepositoryUpdate{Suspended: &susp})
	must(t, err)
	if up.Verify != pol2 {
		t.Errorf("policy after an unrelated update = %+v, want %+v", up.Verify, pol2)
	}

	for name, bad := range map[string]store.VerifyPolicy{
		"unknown mode":  {Mode: "some", AllowedSigners: "x"},
		"mode, no key":  {Mode: store.VerifyHead},
		"keys, no mode": {GPGKeys: "x"},
	} {
		_, err := s.UpdateRepository(ctx, admin, tenantA, r.ID, store.RepositoryUpdate{Verify: &bad})
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: UpdateRepository error = %v, want ErrInvalid", name, err)
		}
	}
	_, err = s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "bad", URL: "u", Verify: store.VerifyPolicy{Mode: store.VerifyAll}}, "")
	wantErr(t, err, store.ErrInvalid)

	off := store.VerifyPolicy{}
	up, err = s.UpdateRepository(ctx, admin, tenantA, r.ID, store.RepositoryUpdate{Verify: &off})
	must(t, err)
	if up.Verify.Enabled() {
		t.Errorf("policy after turning off = %+v, want zero", up.Verify)
	}
	got, err = s.GetRepository(ctx, tenantA, r.ID)
	must(t, err)
	if got.Verify != (store.VerifyPolicy{}) {
		t.Errorf("stored policy after turning off = %+v, want zero", got.Verify)
	}
}
