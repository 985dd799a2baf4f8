// Package netbird is the control plane's client of a tenant's NetBird
// management API (v0.77.1's REST API): groups, one-off setup keys and
// peers, and the two operations built on them, resolving a Site's group
// names to IDs and making a peer's membership equal a Site's groups.
//
// The service-user token and the setup keys the API mints are Secrets:
// they never print, and no error of this package contains them.
package netbird

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"
)

// Secret is a token or a setup key: it prints as "[redacted]".
type Secret string

// String hides the value.
func (Secret) String() string { return "[redacted]" }

// GoString hides the value from %#v.
func (Secret) GoString() string { return "[redacted]" }

// MarshalJSON hides the value from JSON encoders.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }

// Reveal returns the secret itself, for the one place that needs it.
func (s Secret) Reveal() string { return string(s) }

// AllGroup is the group every peer is in; it cannot be changed, so
// membership is never reconciled for it.
const AllGroup = "All"

// Sentinels wrapped by *Error, by the API's HTTP status.
var (
	ErrUnauthorized = errors.New("netbird token refused")
	ErrNotFound     = errors.New("netbird object not found")
	ErrUnavailable  = errors.New("netbird management unavailable")
)

// Error is an answer of the API other than 200.
type Error struct {
	Op      string // "GET /api/groups"
	Status  int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("netbird %s: %d %s", e.Op, e.Status, e.Message)
}

// Unwrap maps the status to a sentinel.
func (e *Error) Unwrap() error {
	switch {
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		return ErrUnauthorized
	case e.Status == http.StatusNotFound:
		return ErrNotFound
	case e.Status >= 500:
		return ErrUnavailable
	}
	return nil
}

// Client calls one management API with one token.
type Client struct {
	// URL is the management server, e.g. https://api.netbird.io.
	URL   string
	Token Secret
	// HTTP sends the requests; nil means a client with a 30s timeout. The
	// control plane passes one that dials through its egress policy.
	HTTP *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) http() *http.Client {
	if c.HTTP == nil {
		return &http.Client{Timeout: 30 * time.Second}
	}
	return c.HTTP
}

// call sends one request; out (when non-nil) receives the JSON answer.
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	op := method + " " + path
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("netbird %s: %w", op, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.URL, "/")+path, body)
	if err != nil {
		return fmt.Errorf("netbird %s: %w", op, err)
	}
	req.Header.Set("Authorization", "Token "+c.Token.Reveal())
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return fmt.Errorf("netbird %s: %w", op, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("netbird %s: read answer: %w", op, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(b, &e)
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
		return &Error{Op: op, Status: resp.StatusCode, Message: e.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("netbird %s: decode answer: %w", op, err)
	}
	return nil
}

// PeerRef names a peer in a group.
type PeerRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Group is a group of the account.
type Group struct {
	ID    string    `json:"id"`
	Name  string    `json:"name"`
	Peers []PeerRef `json:"peers"`
}

// GroupRef names a group a peer is in.
type GroupRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Peer is a peer of the account.
type Peer struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Hostname  string     `json:"hostname"`
	IP        string     `json:"ip"`
	Connected bool       `json:"connected"`
	Groups    []GroupRef `json:"groups"`
}

// SetupKey is a setup key as listed: its key is masked.
type SetupKey struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	State      string    `json:"state"` // valid, overused, expired or revoked
	Valid      bool      `json:"valid"`
	Revoked    bool      `json:"revoked"`
	UsedTimes  int       `json:"used_times"`
	UsageLimit int       `json:"usage_limit"`
	AutoGroups []string  `json:"auto_groups"`
	Expires    time.Time `json:"expires"`
	LastUsed   time.Time `json:"last_used"`
}

// NewKey is a setup key just created, with the key in clear: the one
// answer that carries it.
type NewKey struct {
	SetupKey
	Key Secret
}

// Groups lists the account's groups.
func (c *Client) Groups(ctx context.Context) ([]Group, error) {
	var out []Group
	return out, c.call(ctx, http.MethodGet, "/api/groups", nil, &out)
}

// CreateGroup creates an empty group.
func (c *Client) CreateGroup(ctx context.Context, name string) (Group, error) {
	var out Group
	return out, c.call(ctx, http.MethodPost, "/api/groups", map[string]any{"name": name}, &out)
}

// PutGroup sets the group's name and its full list of peers.
func (c *Client) PutGroup(ctx context.Context, id, name string, peers []string) (Group, error) {
	if peers == nil {
		peers = []string{}
	}
	var out Group
	return out, c.call(ctx, http.MethodPut, "/api/groups/"+id, map[string]any{"name": name, "peers": peers}, &out)
}

// CreateSetupKey creates a one-off key (usage limit 1) that puts the peer
// it registers in groupIDs and expires after expiresIn (the API's minimum
// is a day).
func (c *Client) CreateSetupKey(ctx context.Context, name string, groupIDs []string, expiresIn time.Duration) (NewKey, error) {
	if groupIDs == nil {
		groupIDs = []string{}
	}
	var out struct {
		SetupKey
		Key string `json:"key"`
	}
	err := c.call(ctx, http.MethodPost, "/api/setup-keys", map[string]any{
		"name": name, "type": "one-off", "expires_in": int(expiresIn / time.Second),
		"auto_groups": groupIDs, "usage_limit": 1,
	}, &out)
	if err != nil {
		return NewKey{}, err
	}
	return NewKey{SetupKey: out.SetupKey, Key: Secret(out.Key)}, nil
}

// SetupKey returns a key (masked).
func (c *Client) SetupKey(ctx context.Context, id string) (SetupKey, error) {
	var out SetupKey
	return out, c.call(ctx, http.MethodGet, "/api/setup-keys/"+id, nil, &out)
}

// DeleteSetupKey removes a key; a key already gone is not an error.
func (c *Client) DeleteSetupKey(ctx context.Context, id string) error {
	err := c.call(ctx, http.MethodDelete, "/api/setup-keys/"+id, nil, nil)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// Peers lists the account's peers.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var out []Peer
	return out, c.call(ctx, http.MethodGet, "/api/peers", nil, &out)
}

// Peer returns one peer; ErrNotFound if there is none.
func (c *Client) Peer(ctx context.Context, id string) (Peer, error) {
	var out Peer
	return out, c.call(ctx, http.MethodGet, "/api/peers/"+id, nil, &out)
}

// DeletePeer removes a peer from the account; a peer already gone is not
// an error.
func (c *Client) DeletePeer(ctx context.Context, id string) error {
	err := c.call(ctx, http.MethodDelete, "/api/peers/"+id, nil, nil)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// ResolveGroups returns the IDs of the named groups in the order given,
// creating the groups that do not exist. "All" is refused: every peer is
// in it already and it cannot be assigned.
func (c *Client) ResolveGroups(ctx context.Context, names []string) ([]string, error) {
	groups, err := c.Groups(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]string{}
	for _, g := range groups {
		byName[g.Name] = g.ID
	}
	ids := make([]string, 0, len(names))
	for _, n := range names {
		if n == AllGroup {
			return nil, fmt.Errorf("netbird group %q: every peer is in it; it cannot be assigned", n)
		}
		id, ok := byName[n]
		if !ok {
			g, err := c.CreateGroup(ctx, n)
			if err != nil {
				return nil, fmt.Errorf("create group %q: %w", n, err)
			}
			id = g.ID
			byName[n] = id
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// Change is what SetPeerGroups did: group names joined and left.
type Change struct {
	Added, Removed []string
}

// Empty is true when membership was already right.
func (c Change) Empty() bool { return len(c.Added) == 0 && len(c.Removed) == 0 }

// String renders the change as "+a -b".
func (c Change) String() string {
	var parts []string
	for _, g := range c.Added {
		parts = append(parts, "+"+g)
	}
	for _, g := range c.Removed {
		parts = append(parts, "-"+g)
	}
	return strings.Join(parts, " ")
}

// SetPeerGroups makes the groups peer is in (other than "All") exactly
// names, creating missing groups, by putting each group it must join or
// leave with its new peer list.
func (c *Client) SetPeerGroups(ctx context.Context, peerID string, names []string) (Change, error) {
	var ch Change
	if slices.Contains(names, AllGroup) {
		return ch, fmt.Errorf("netbird group %q: every peer is in it; it cannot be assigned", AllGroup)
	}
	groups, err := c.Groups(ctx)
	if err != nil {
		return ch, err
	}
	have := map[string]bool{}
	for _, g := range groups {
		if g.Name == AllGroup {
			continue
		}
		ids := make([]string, 0, len(g.Peers))
		member := false
		for _, p := range g.Peers {
			ids = append(ids, p.ID)
			member = member || p.ID == peerID
		}
		want := slices.Contains(names, g.Name)
		have[g.Name] = true
		switch {
		case want && !member:
			if _, err := c.PutGroup(ctx, g.ID, g.Name, append(ids, peerID)); err != nil {
				return ch, fmt.Errorf("add peer to group %q: %w", g.Name, err)
			}
			ch.Added = append(ch.Added, g.Name)
		case !want && member:
			ids = slices.DeleteFunc(ids, func(id string) bool { return id == peerID })
			if _, err := c.PutGroup(ctx, g.ID, g.Name, ids); err != nil {
				return ch, fmt.Errorf("remove peer from group %q: %w", g.Name, err)
			}
			ch.Removed = append(ch.Removed, g.Name)
		}
	}
	for _, n := range names {
		if have[n] {
			continue
		}
		g, err := c.CreateGroup(ctx, n)
		if err != nil {
			return ch, fmt.Errorf("create group %q: %w", n, err)
		}
		if _, err := c.PutGroup(ctx, g.ID, n, []string{peerID}); err != nil {
			return ch, fmt.Errorf("add peer to group %q: %w", n, err)
		}
		have[n] = true
		ch.Added = append(ch.Added, n)
	}
	sort.Strings(ch.Added)
	sort.Strings(ch.Removed)
	return ch, nil
}
