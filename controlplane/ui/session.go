package ui

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"
)

// Session is one signed-in browser. It holds the hash of the API token it
// was opened with, never the token: every request re-checks that hash
// against the store, so deleting or expiring the token ends its sessions.
type Session struct {
	// TokenHash is store.HashSecret of the API token used to sign in.
	TokenHash string
	// Tenant is the tenant the session acts on.
	Tenant string
	// CSRF is the token every form of this session must carry.
	CSRF    string
	created time.Time
	seen    time.Time
	done    chan struct{} // closed when the session ends
	streams atomic.Int32  // open event streams
}

// MaxStreams is how many event streams one session may hold open at once
// (a few tabs); each holds a goroutine and store subscriptions.
const MaxStreams = 8

// OpenStream counts an event stream of the session; false when it has
// MaxStreams already. Call CloseStream when the stream ends.
func (s *Session) OpenStream() bool {
	if s.streams.Add(1) > MaxStreams {
		s.streams.Add(-1)
		return false
	}
	return true
}

// CloseStream is the end of a stream OpenStream counted.
func (s *Session) CloseStream() { s.streams.Add(-1) }

// Done is closed when the session ends (sign-out, idle timeout or
// lifetime), so event streams of the session stop with it.
func (s *Session) Done() <-chan struct{} { return s.done }

// CheckCSRF reports whether tok is the session's CSRF token (constant time).
func (s *Session) CheckCSRF(tok string) bool {
	return tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.CSRF)) == 1
}

// SessionKey is a session's cookie value. It does not print itself.
type SessionKey string

func (SessionKey) String() string   { return "[session]" }
func (SessionKey) GoString() string { return "[session]" }

// Hash is the hex SHA-256 of the cookie value: what the store keeps and
// what names the session anywhere else.
func (k SessionKey) Hash() string {
	h := keyOf(k)
	return hex.EncodeToString(h[:])
}

// CSRFOf is the CSRF token of the session with cookie value k. It is
// derived from the cookie value rather than stored, so every replica
// computes the same token, and the store (which keeps only the cookie's
// hash) cannot give it away.
func CSRFOf(k SessionKey) string {
	h := sha256.Sum256([]byte("nkudo-csrf\x00" + string(k)))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// Sessions holds the dashboard's sessions one replica is serving, in
// memory, keyed by the SHA-256 of the cookie value: what a session's open
// event streams need locally (the channel that ends them, their count).
// The store is the record every replica shares; the control plane checks
// it on every request and adopts here a session opened elsewhere.
type Sessions struct {
	// Idle ends a session not used for this long; Lifetime ends it
	// regardless. Max bounds the number of sessions (the oldest is
	// dropped). PerToken bounds the sessions of one API token (its oldest
	// is dropped), so one tenant signing in over and over cannot push every
	// other tenant's sessions out of Max. Zero values: 15 minutes, 12 hours,
	// 10,000, 32.
	Idle     time.Duration
	Lifetime time.Duration
	Max      int
	PerToken int
	// Now is the clock (nil: time.Now).
	Now func() time.Time

	mu sync.Mutex
	m  map[[32]byte]*Session
}

func (s *Sessions) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Sessions) limits() (idle, life time.Duration, max int) {
	idle, life, max = s.Idle, s.Lifetime, s.Max
	if idle <= 0 {
		idle = 15 * time.Minute
	}
	if life <= 0 {
		life = 12 * time.Hour
	}
	if max <= 0 {
		max = 10_000
	}
	return idle, life, max
}

// RandomToken returns 32 random bytes, base64url-encoded.
func RandomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b)
}

func keyOf(k SessionKey) [32]byte { return sha256.Sum256([]byte(k)) }

// Create opens a session and returns its cookie value.
func (s *Sessions) Create(tokenHash, tenant string) (SessionKey, *Session) {
	k := SessionKey(RandomToken())
	return k, s.Adopt(k, tokenHash, tenant)
}

// Adopt holds the session of cookie value k here, as opened with
// tokenHash for tenant: a session the store knows, opened on another
// replica or before this one restarted. An existing session of k is
// returned as it is.
func (s *Sessions) Adopt(k SessionKey, tokenHash, tenant string) *Session {
	now := s.now()
	_, _, max := s.limits()
	sess := &Session{TokenHash: tokenHash, Tenant: tenant, CSRF: CSRFOf(k), created: now, seen: now, done: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.m[keyOf(k)]; old != nil {
		return old
	}
	if s.m == nil {
		s.m = map[[32]byte]*Session{}
	}
	s.sweep(now)
	perToken := s.PerToken
	if perToken <= 0 {
		perToken = 32
	}
	if s.count(tokenHash) >= perToken {
		s.endOldest(func(o *Session) bool { return o.TokenHash == tokenHash })
	}
	if len(s.m) >= max {
		s.endOldest(func(*Session) bool { return true })
	}
	s.m[keyOf(k)] = sess
	return sess
}

// Limits are the session bounds in force (with their defaults).
func (s *Sessions) Limits() (idle, lifetime time.Duration, max, perToken int) {
	idle, lifetime, max = s.limits()
	perToken = s.PerToken
	if perToken <= 0 {
		perToken = 32
	}
	return idle, lifetime, max, perToken
}

// Get returns the live session of cookie value k and, when touch is set,
// marks it used now; nil when there is none or it timed out.
func (s *Sessions) Get(k SessionKey, touch bool) *Session {
	if k == "" {
		return nil
	}
	now := s.now()
	idle, life, _ := s.limits()
	id := keyOf(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.m[id]
	if sess == nil {
		return nil
	}
	if now.Sub(sess.seen) > idle || now.Sub(sess.created) > life {
		s.end(id)
		return nil
	}
	if touch {
		sess.seen = now
	}
	return sess
}

// Delete ends the session of cookie value k (sign-out).
func (s *Sessions) Delete(k SessionKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.end(keyOf(k))
}

// Len is the number of sessions held, expired ones included until swept.
func (s *Sessions) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

func (s *Sessions) end(id [32]byte) {
	if sess := s.m[id]; sess != nil {
		close(sess.done)
		delete(s.m, id)
	}
}

// count is the number of sessions of one token.
func (s *Sessions) count(tokenHash string) int {
	n := 0
	for _, o := range s.m {
		if o.TokenHash == tokenHash {
			n++
		}
	}
	return n
}

// endOldest ends the least recently used session that match selects.
func (s *Sessions) endOldest(match func(*Session) bool) {
	var oldest [32]byte
	var at time.Time
	found := false
	for id, o := range s.m {
		if match(o) && (!found || o.seen.Before(at)) {
			oldest, at, found = id, o.seen, true
		}
	}
	if found {
		s.end(oldest)
	}
}

// sweep drops timed-out sessions; called on Create, so memory stays bounded
// by the sessions opened within one idle period.
func (s *Sessions) sweep(now time.Time) {
	idle, life, _ := s.limits()
	for id, sess := range s.m {
		if now.Sub(sess.seen) > idle || now.Sub(sess.created) > life {
			s.end(id)
		}
	}
}
