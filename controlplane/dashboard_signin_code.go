package controlplane

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/ui"
	"github.com/nkudo/nkudo/store"
)

// One-time sign-in links. A token holder asks for a link (POST
// /v1/dashboard/signin-codes); it carries a random code, never the token,
// which the store keeps by hash and which signs one browser in once,
// within signInCodeTTL, as that token. Opening the link shows a form; only
// posting it uses the code, so a link preview or prefetch cannot spend it.

// signInCodeTTL is how long a sign-in link is valid.
const signInCodeTTL = 10 * time.Minute

// The live sign-in links are bounded: a token asking for more than
// signInCodesPerToken voids its own oldest, and a tenant's tokens together
// hold at most signInCodesPerTenant, so no caller grows the table without
// bound or voids another token's links.
const (
	signInCodesPerToken  = 5
	signInCodesPerTenant = 100
)

func (s *Server) handleCreateSignInCode(w http.ResponseWriter, r *http.Request, c *caller) error {
	tok := strings.TrimSpace(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	code := ui.RandomToken()
	now := s.now()
	exp := now.Add(signInCodeTTL)
	if err := s.store.CreateUISignInCode(r.Context(), store.UISignInCode{CodeHash: store.HashSecret(code), TokenHash: store.HashSecret(tok),
		Tenant: c.tenant, ExpiresAt: exp}, store.UISignInCodeLimits{PerToken: signInCodesPerToken, PerTenant: signInCodesPerTenant}, now); err != nil {
		if errors.Is(err, store.ErrQuota) {
			w.Header().Set("Retry-After", strconv.Itoa(int(signInCodeTTL.Seconds())))
			return errorf(http.StatusTooManyRequests, api.CodeRateLimited, "%v: use one, or wait until they expire (%s after they were made)", err, signInCodeTTL)
		}
		return err
	}
	if _, err := s.store.AppendAudit(r.Context(), store.AuditEvent{Tenant: c.tenant, Actor: c.actor().String(),
		Action: "ui.signinlink", Object: "token/" + c.tokenID, Detail: store.Detail(map[string]any{"expiresAt": exp.UTC()})}); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, api.DashboardSignInLink{URL: s.baseURL(r) + ui.PathSignInCode + "?code=" + url.QueryEscape(code), ExpiresAt: exp.UTC()})
	return nil
}

// handleSignInCodePage shows the form that uses a sign-in link's code.
func (s *Server) handleSignInCodePage(w http.ResponseWriter, r *http.Request, _ *caller) error {
	ui.SecurityHeaders(w.Header())
	code := r.URL.Query().Get("code")
	if code == "" || len(code) > 256 {
		return s.renderSignIn(w, http.StatusBadRequest, "query parameter code is missing or malformed: open the whole sign-in link, or paste an API token")
	}
	tok := ui.RandomToken()
	http.SetCookie(w, secureCookie(ui.SignInCookie, tok, 3600))
	return s.ui.Render(w, http.StatusOK, "signincode.html", ui.SignInCodePage{Layout: ui.Layout{Title: "Sign in", CSRF: tok}, Code: code})
}

// handleSignInCode uses a sign-in link's code: CSRF-checked like the
// sign-in form and under the same rate limits, then the code is redeemed
// (once) and its token re-checked before the session opens.
func (s *Server) handleSignInCode(w http.ResponseWriter, r *http.Request, c *caller) error {
	ui.SecurityHeaders(w.Header())
	if refused, err := s.limitSignIn(w, c); refused {
		return err
	}
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return s.renderSignIn(w, http.StatusBadRequest, "the form could not be read: "+err.Error())
	}
	ck, err := r.Cookie(ui.SignInCookie)
	if form := r.PostForm.Get("csrf"); err != nil || form == "" || !(&ui.Session{CSRF: ck.Value}).CheckCSRF(form) {
		return s.renderSignIn(w, http.StatusForbidden, "the sign-in form expired or came from another site (field csrf): open the link again")
	}
	code := r.PostForm.Get("code")
	if code == "" {
		return s.renderSignIn(w, http.StatusBadRequest, "field code is empty: open the whole sign-in link")
	}
	sc, err := s.store.RedeemUISignInCode(r.Context(), store.HashSecret(code), s.now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return s.renderSignIn(w, http.StatusUnauthorized, "this sign-in link (field code) was used already or expired: ask for a new one, or paste an API token")
	case err != nil:
		return err
	}
	t, err := s.store.APITokenByHash(r.Context(), sc.TokenHash, s.now())
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrTokenExpired):
		return s.renderSignIn(w, http.StatusUnauthorized, "the API token this sign-in link was made for was deleted or expired")
	case err != nil:
		return fmt.Errorf("token of a sign-in link: %w", err)
	}
	return s.startSession(w, r, c, sc.TokenHash, t, sc.Tenant)
}
