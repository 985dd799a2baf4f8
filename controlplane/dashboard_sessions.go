package controlplane

import (
	"context"
	"errors"
	"fmt"

	"github.com/nkudo/nkudo/controlplane/ui"
	"github.com/nkudo/nkudo/store"
)

// Dashboard sessions live in the store, so any replica serves any
// browser: a session opened on one replica is found by the others, and a
// sign-out on one ends the session everywhere. Each replica also holds
// the sessions it serves in memory (ui.Sessions) for what only it can
// do: close the session's event streams here when it ends, and count
// them.

// sessionTopic is notified when a session ends, so its event streams on
// every replica stop at once rather than at their next keep-alive.
func sessionTopic(k ui.SessionKey) string { return "uisession/" + k.Hash() }

func (s *Server) sessionLimits() store.UISessionLimits {
	idle, life, max, perToken := s.sessions.Limits()
	return store.UISessionLimits{Idle: idle, Lifetime: life, PerToken: perToken, Max: max}
}

// openSession records a new session of the API token (by hash) for
// tenant and returns its cookie value.
func (s *Server) openSession(ctx context.Context, tokenHash, tenant string) (ui.SessionKey, error) {
	key, _ := s.sessions.Create(tokenHash, tenant)
	u := store.UISession{IDHash: key.Hash(), TokenHash: tokenHash, Tenant: tenant}
	if err := s.store.CreateUISession(ctx, u, s.sessionLimits(), s.now()); err != nil {
		s.sessions.Delete(key)
		return "", fmt.Errorf("open dashboard session: %w", err)
	}
	return key, nil
}

// findSession returns the live session of cookie value key (nil when it
// ended or never was), adopting here one opened on another replica.
func (s *Server) findSession(ctx context.Context, key ui.SessionKey, touch bool) (*ui.Session, error) {
	u, err := s.store.GetUISession(ctx, key.Hash(), s.sessionLimits(), s.now(), touch)
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.sessions.Delete(key) // ended elsewhere: end its streams here too
		return nil, nil
	case err != nil:
		return nil, err
	}
	sess := s.sessions.Get(key, touch)
	if sess == nil {
		sess = s.sessions.Adopt(key, u.TokenHash, u.Tenant)
	}
	return sess, nil
}

// endSession ends a session everywhere: in the store, on this replica,
// and (through its topic) in the streams other replicas hold.
func (s *Server) endSession(ctx context.Context, key ui.SessionKey) {
	if err := s.store.DeleteUISession(ctx, key.Hash()); err != nil {
		s.log.Warn("end dashboard session", "err", err)
	}
	s.sessions.Delete(key)
	if err := s.store.Notify(ctx, sessionTopic(key)); err != nil {
		s.log.Warn("notify dashboard session end", "err", err)
	}
}

// streamSessionLive reports whether a stream's session goes on: its API
// token still exists and has not expired, and the session was not ended
// on any replica. An ended session is ended here too, which closes the
// session's other streams.
func (s *Server) streamSessionLive(ctx context.Context, c *caller) bool {
	if !s.tokenLive(ctx, c.session) {
		s.endSession(ctx, c.sessionKey)
		return false
	}
	_, err := s.store.GetUISession(ctx, c.sessionKey.Hash(), s.sessionLimits(), s.now(), false)
	if errors.Is(err, store.ErrNotFound) {
		s.sessions.Delete(c.sessionKey)
		return false
	}
	return true // a store error counts as live: the next check decides
}
