// Package nbmgmt is a fake NetBird management server (v0.77.1): it serves
// the REST API's setup keys, groups and peers (/api/setup-keys, /api/groups,
// /api/peers) over real HTTP with the real server's token auth, IDs, key
// masking, usage limits and key states, the undeletable "All" group and
// {"message","code"} errors. The answers are checked against the OpenAPI
// document by a contract test.
//
// A real client logs in over gRPC, which the fake does not speak; instead
// the fake `netbird` CLI (tests/fakes/netbird) posts to POST /fake/login
// with its setup key and public key, and the fake registers (or re-logs in)
// the peer exactly as the management server would: the key is checked and
// consumed, and a new peer joins the key's auto_groups and "All".
//
// Faults are scriptable: Fail makes the next N API calls answer 500, Delay
// slows every answer, ExpireToken makes the token answer 401.
package nbmgmt

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// DefaultToken is the personal access token a zero Server accepts.
const DefaultToken = "nbp_faketoken0000000000000000000000000"

// Server is the fake management API. Its zero value works: it accepts
// DefaultToken and its account holds only the group "All".
type Server struct {
	// Token is the accepted personal access token ("Authorization: Token
	// …"); empty means DefaultToken.
	Token string
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu       sync.Mutex
	init     bool
	seq      int
	keys     map[string]*setupKey
	groups   map[string]*group
	peers    map[string]*peer
	fail     int
	failCode int
	delay    time.Duration
	expired  bool
	calls    []string
	minted   []string
}

type setupKey struct {
	ID, Name, Key, Type string
	Expires, UpdatedAt  time.Time
	LastUsed            time.Time
	Revoked, Ephemeral  bool
	ExtraDNS            bool
	UsedTimes, Limit    int
	AutoGroups          []string
}

type group struct {
	ID, Name, Issued string
	Peers            []string
}

type peer struct {
	ID, Name, Hostname, PublicKey, IP string
	Created, LastSeen                 time.Time
	Connected                         bool
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// lazy sets up the account; callers hold mu.
func (s *Server) lazy() {
	if s.init {
		return
	}
	s.init = true
	s.keys = map[string]*setupKey{}
	s.groups = map[string]*group{}
	s.peers = map[string]*peer{}
	s.groups[allID] = &group{ID: allID, Name: "All", Issued: "api"}
}

const allID = "d0allgroup0000000000"

// newID returns a NetBird-style xid-like ID (20 lowercase characters).
func (s *Server) newID(prefix string) string {
	s.seq++
	return fmt.Sprintf("%s%018d", prefix[:2], s.seq)
}

// Fail makes the next n API calls answer with HTTP status code (500 when
// code is zero); n < 0 means every call until Fail(0, 0).
func (s *Server) Fail(n, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if code == 0 {
		code = http.StatusInternalServerError
	}
	s.fail, s.failCode = n, code
}

// Delay slows every answer by d (zero: none).
func (s *Server) Delay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// ExpireToken makes the token answer 401 (expired) until it is called
// with false.
func (s *Server) ExpireToken(expired bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expired = expired
}

// Calls returns "METHOD /path" of every API call so far.
func (s *Server) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// MintedKeys returns every setup key created so far, in clear, deleted
// ones included: tests look for them where they must not be.
func (s *Server) MintedKeys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.minted)
}

// Group is a group as tests inspect it.
type Group struct {
	ID, Name string
	Peers    []string // peer IDs, sorted
}

// Groups returns the account's groups ordered by name.
func (s *Server) Groups() []Group {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lazy()
	var out []Group
	for _, g := range s.groups {
		p := slices.Clone(g.Peers)
		sort.Strings(p)
		out = append(out, Group{ID: g.ID, Name: g.Name, Peers: p})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// PeerGroups returns the names of the groups peer id is in, sorted ("All"
// included); nil if there is no such peer.
func (s *Server) PeerGroups(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lazy()
	if _, ok := s.peers[id]; !ok {
		return nil
	}
	out := []string{}
	for _, g := range s.groups {
		if slices.Contains(g.Peers, id) {
			out = append(out, g.Name)
		}
	}
	sort.Strings(out)
	return out
}

// Peers returns the IDs of the account's peers, sorted.
func (s *Server) Peers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lazy()
	out := make([]string, 0, len(s.peers))
	for id := range s.peers {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// PeerByKey returns the ID of the peer with WireGuard public key pub.
func (s *Server) PeerByKey(pub string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lazy()
	for _, p := range s.peers {
		if p.PublicKey == pub {
			return p.ID, true
		}
	}
	return "", false
}

// SetPeerGroups puts peer id in exactly the named groups (plus "All"),
// creating missing groups: an edit made in the NetBird UI, for drift tests.
func (s *Server) SetPeerGroups(id string, names ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lazy()
	for _, n := range names {
		if s.groupByName(n) == nil {
			g := &group{ID: s.newID("gr"), Name: n, Issued: "api"}
			s.groups[g.ID] = g
		}
	}
	for _, g := range s.groups {
		if g.ID == allID {
			continue
		}
		g.Peers = slices.DeleteFunc(g.Peers, func(p string) bool { return p == id })
		if slices.Contains(names, g.Name) {
			g.Peers = append(g.Peers, id)
		}
	}
}

// KeyCount returns the number of setup keys and how many are still valid.
func (s *Server) KeyCount() (total, valid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lazy()
	for _, k := range s.keys {
		total++
		if s.keyState(k) == "valid" {
			valid++
		}
	}
	return total, valid
}

func (s *Server) groupByName(name string) *group {
	for _, g := range s.groups {
		if g.Name == name {
			return g
		}
	}
	return nil
}

// apiError is util.ErrorResponse.
type apiError struct {
	Message string `json:"message"`
	Code    int    `json:"code"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, code int, format string, a ...any) {
	writeJSON(w, code, apiError{Message: fmt.Sprintf(format, a...), Code: code})
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.lazy()
	delay := s.delay
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.URL.Path == "/fake/login" && r.Method == http.MethodPost {
		s.login(w, r)
		return
	}
	s.calls = append(s.calls, r.Method+" "+r.URL.Path)
	if s.fail != 0 {
		if s.fail > 0 {
			s.fail--
		}
		writeErr(w, s.failCode, "internal server error")
		return
	}
	token := s.Token
	if token == "" {
		token = DefaultToken
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Token ")
	if !ok || got != token {
		writeErr(w, http.StatusUnauthorized, "token invalid")
		return
	}
	if s.expired {
		writeErr(w, http.StatusUnauthorized, "token expired")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/api/")
	if !ok {
		writeErr(w, http.StatusNotFound, "not found")
		return
	}
	coll, id, _ := strings.Cut(rest, "/")
	switch coll {
	case "setup-keys":
		s.setupKeys(w, r, id)
	case "groups":
		s.groupsAPI(w, r, id)
	case "peers":
		s.peersAPI(w, r, id)
	default:
		writeErr(w, http.StatusNotFound, "not found")
	}
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(v); err != nil {
		writeErr(w, http.StatusBadRequest, "couldn't parse JSON request")
		return false
	}
	return true
}

// keyState follows the management server: revoked wins, then expired,
// then overused.
func (s *Server) keyState(k *setupKey) string {
	switch {
	case k.Revoked:
		return "revoked"
	case !k.Expires.IsZero() && !s.now().Before(k.Expires):
		return "expired"
	case k.Limit > 0 && k.UsedTimes >= k.Limit:
		return "overused"
	}
	return "valid"
}

func (s *Server) keyJSON(k *setupKey, clear bool) map[string]any {
	key := k.Key
	if !clear {
		// The real server shows the first five characters and masks the rest.
		key = k.Key[:5] + "****"
	}
	state := s.keyState(k)
	groups := slices.Clone(k.AutoGroups)
	if groups == nil {
		groups = []string{}
	}
	return map[string]any{
		"id": k.ID, "name": k.Name, "key": key, "expires": k.Expires, "type": k.Type,
		"valid": state == "valid", "revoked": k.Revoked, "used_times": k.UsedTimes,
		"last_used": k.LastUsed, "state": state, "auto_groups": groups, "updated_at": k.UpdatedAt,
		"usage_limit": k.Limit, "ephemeral": k.Ephemeral, "allow_extra_dns_labels": k.ExtraDNS,
	}
}

func (s *Server) checkGroups(w http.ResponseWriter, ids []string) bool {
	for _, id := range ids {
		if _, ok := s.groups[id]; !ok {
			writeErr(w, http.StatusUnprocessableEntity, "group %s doesn't exist", id)
			return false
		}
	}
	return true
}

func (s *Server) setupKeys(w http.ResponseWriter, r *http.Request, id string) {
	if id == "" {
		switch r.Method {
		case http.MethodGet:
			out := []map[string]any{}
			for _, k := range s.sortedKeys() {
				out = append(out, s.keyJSON(k, false))
			}
			writeJSON(w, http.StatusOK, out)
		case http.MethodPost:
			var req struct {
				Name       string   `json:"name"`
				Type       string   `json:"type"`
				ExpiresIn  *int     `json:"expires_in"`
				AutoGroups []string `json:"auto_groups"`
				UsageLimit int      `json:"usage_limit"`
				Ephemeral  bool     `json:"ephemeral"`
				ExtraDNS   bool     `json:"allow_extra_dns_labels"`
			}
			if !decode(w, r, &req) {
				return
			}
			if req.Name == "" {
				writeErr(w, http.StatusUnprocessableEntity, "setup key name shouldn't be empty")
				return
			}
			if req.Type != "one-off" && req.Type != "reusable" {
				writeErr(w, http.StatusUnprocessableEntity, "invalid setup key type %q", req.Type)
				return
			}
			if req.ExpiresIn == nil || (*req.ExpiresIn != 0 && (*req.ExpiresIn < 86400 || *req.ExpiresIn > 31536000)) {
				writeErr(w, http.StatusUnprocessableEntity, "expiresIn should be between 1 day and 365 days")
				return
			}
			if !s.checkGroups(w, req.AutoGroups) {
				return
			}
			limit := req.UsageLimit
			if req.Type == "one-off" {
				limit = 1 // the server forces one use for one-off keys
			}
			now := s.now()
			k := &setupKey{ID: s.newID("sk"), Name: req.Name, Type: req.Type, Key: s.secret(),
				UpdatedAt: now, Limit: limit, AutoGroups: req.AutoGroups, Ephemeral: req.Ephemeral, ExtraDNS: req.ExtraDNS}
			if *req.ExpiresIn > 0 {
				k.Expires = now.Add(time.Duration(*req.ExpiresIn) * time.Second)
			}
			s.keys[k.ID] = k
			s.minted = append(s.minted, k.Key)
			writeJSON(w, http.StatusOK, s.keyJSON(k, true))
		default:
			writeErr(w, http.StatusMethodNotAllowed, "method not allowed")
		}
		return
	}
	k, ok := s.keys[id]
	if !ok {
		writeErr(w, http.StatusNotFound, "setup key %s not found", id)
		return
	}
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.keyJSON(k, false))
	case http.MethodPut:
		var req struct {
			Revoked    *bool    `json:"revoked"`
			AutoGroups []string `json:"auto_groups"`
		}
		if !decode(w, r, &req) {
			return
		}
		if req.Revoked == nil || req.AutoGroups == nil {
			writeErr(w, http.StatusBadRequest, "revoked and auto_groups are required")
			return
		}
		if !s.checkGroups(w, req.AutoGroups) {
			return
		}
		if k.Revoked && !*req.Revoked {
			writeErr(w, http.StatusUnprocessableEntity, "can't un-revoke a revoked setup key")
			return
		}
		k.Revoked, k.AutoGroups, k.UpdatedAt = *req.Revoked, req.AutoGroups, s.now()
		writeJSON(w, http.StatusOK, s.keyJSON(k, false))
	case http.MethodDelete:
		delete(s.keys, id)
		writeJSON(w, http.StatusOK, struct{}{})
	default:
		writeErr(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

func (s *Server) sortedKeys() []*setupKey {
	out := make([]*setupKey, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// secret makes a setup key in the real format (an upper-case random UUID),
// so a key cannot be guessed from another.
func (s *Server) secret() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return strings.ToUpper(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]))
}

func (s *Server) groupJSON(g *group) map[string]any {
	peers := []map[string]any{}
	for _, id := range g.Peers {
		if p, ok := s.peers[id]; ok {
			peers = append(peers, map[string]any{"id": p.ID, "name": p.Name})
		}
	}
	return map[string]any{"id": g.ID, "name": g.Name, "peers_count": len(peers), "resources_count": 0,
		"issued": g.Issued, "peers": peers, "resources": []any{}}
}

func (s *Server) sortedGroups() []*group {
	out := make([]*group, 0, len(s.groups))
	for _, g := range s.groups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (s *Server) groupsAPI(w http.ResponseWriter, r *http.Request, id string) {
	type groupReq struct {
		Name  string    `json:"name"`
		Peers *[]string `json:"peers"`
	}
	check := func(req groupReq) bool {
		if req.Name == "" {
			writeErr(w, http.StatusUnprocessableEntity, "group name shouldn't be empty")
			return false
		}
		if req.Peers != nil {
			for _, p := range *req.Peers {
				if _, ok := s.peers[p]; !ok {
					writeErr(w, http.StatusUnprocessableEntity, "peer %s not found", p)
					return false
				}
			}
		}
		return true
	}
	if id == "" {
		switch r.Method {
		case http.MethodGet:
			out := []map[string]any{}
			for _, g := range s.sortedGroups() {
				out = append(out, s.groupJSON(g))
			}
			writeJSON(w, http.StatusOK, out)
		case http.MethodPost:
			var req groupReq
			if !decode(w, r, &req) || !check(req) {
				return
			}
			if req.Name == "All" {
				writeErr(w, http.StatusUnprocessableEntity, "creating group with name All is not allowed")
				return
			}
			if s.groupByName(req.Name) != nil {
				writeErr(w, http.StatusConflict, "group with name %s already exists", req.Name)
				return
			}
			g := &group{ID: s.newID("gr"), Name: req.Name, Issued: "api"}
			if req.Peers != nil {
				g.Peers = slices.Clone(*req.Peers)
			}
			s.groups[g.ID] = g
			writeJSON(w, http.StatusOK, s.groupJSON(g))
		default:
			writeErr(w, http.StatusMethodNotAllowed, "method not allowed")
		}
		return
	}
	g, ok := s.groups[id]
	if !ok {
		writeErr(w, http.StatusNotFound, "group %s not found", id)
		return
	}
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.groupJSON(g))
	case http.MethodPut:
		if g.ID == allID {
			writeErr(w, http.StatusMethodNotAllowed, "updating group ALL is not allowed")
			return
		}
		var req groupReq
		if !decode(w, r, &req) || !check(req) {
			return
		}
		if other := s.groupByName(req.Name); other != nil && other.ID != g.ID {
			writeErr(w, http.StatusConflict, "group with name %s already exists", req.Name)
			return
		}
		g.Name = req.Name
		g.Peers = nil
		if req.Peers != nil {
			g.Peers = slices.Clone(*req.Peers)
		}
		writeJSON(w, http.StatusOK, s.groupJSON(g))
	case http.MethodDelete:
		if g.ID == allID {
			writeErr(w, http.StatusMethodNotAllowed, "deleting group ALL is not allowed")
			return
		}
		for _, k := range s.keys {
			if slices.Contains(k.AutoGroups, id) {
				writeErr(w, http.StatusUnprocessableEntity, "group is linked to setup key: %s", k.Name)
				return
			}
		}
		delete(s.groups, id)
		writeJSON(w, http.StatusOK, struct{}{})
	default:
		writeErr(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

func (s *Server) peerJSON(p *peer, batch bool) map[string]any {
	groups := []map[string]any{}
	for _, g := range s.sortedGroups() {
		if slices.Contains(g.Peers, p.ID) {
			groups = append(groups, map[string]any{"id": g.ID, "name": g.Name,
				"peers_count": len(g.Peers), "resources_count": 0, "issued": g.Issued})
		}
	}
	label := strings.ToLower(p.Name)
	m := map[string]any{
		"id": p.ID, "name": p.Name, "created_at": p.Created, "ip": p.IP, "connection_ip": "203.0.113.7",
		"connected": p.Connected, "last_seen": p.LastSeen, "os": "Linux", "kernel_version": "6.1.0",
		"geoname_id": 0, "version": "0.77.1", "groups": groups, "ssh_enabled": false, "user_id": "",
		"hostname": p.Hostname, "ui_version": "", "dns_label": label + ".netbird.cloud",
		"login_expiration_enabled": false, "login_expired": false, "last_login": p.Created,
		"inactivity_expiration_enabled": false, "approval_required": false, "country_code": "",
		"city_name": "", "serial_number": "", "extra_dns_labels": []string{}, "ephemeral": false,
	}
	if batch {
		m["accessible_peers_count"] = len(s.peers) - 1
	}
	return m
}

func (s *Server) peersAPI(w http.ResponseWriter, r *http.Request, id string) {
	if id == "" {
		if r.Method != http.MethodGet {
			writeErr(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		name, ip := r.URL.Query().Get("name"), r.URL.Query().Get("ip")
		ids := make([]string, 0, len(s.peers))
		for id := range s.peers {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		out := []map[string]any{}
		for _, id := range ids {
			p := s.peers[id]
			if (name != "" && p.Name != name) || (ip != "" && p.IP != ip) {
				continue
			}
			out = append(out, s.peerJSON(p, true))
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	p, ok := s.peers[id]
	if !ok {
		writeErr(w, http.StatusNotFound, "peer %s not found", id)
		return
	}
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.peerJSON(p, false))
	case http.MethodPut:
		var req struct {
			Name string `json:"name"`
		}
		if !decode(w, r, &req) {
			return
		}
		if req.Name == "" {
			writeErr(w, http.StatusUnprocessableEntity, "peer name shouldn't be empty")
			return
		}
		p.Name = req.Name
		writeJSON(w, http.StatusOK, s.peerJSON(p, false))
	case http.MethodDelete:
		delete(s.peers, id)
		for _, g := range s.groups {
			g.Peers = slices.DeleteFunc(g.Peers, func(x string) bool { return x == id })
		}
		writeJSON(w, http.StatusOK, struct{}{})
	default:
		writeErr(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

// LoginRequest is what the fake CLI posts to /fake/login.
type LoginRequest struct {
	SetupKey  string `json:"setupKey"`
	PublicKey string `json:"publicKey"`
	Hostname  string `json:"hostname"`
}

// LoginResponse names the registered peer.
type LoginResponse struct {
	PeerID string `json:"peerId"`
	IP     string `json:"ip"`
}

// login registers a peer with a setup key, or logs an existing peer (same
// public key) in again; a known peer needs no valid key.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req LoginRequest
	if !decode(w, r, &req) {
		return
	}
	if req.PublicKey == "" {
		writeErr(w, http.StatusBadRequest, "public key is required")
		return
	}
	now := s.now()
	for _, p := range s.peers {
		if p.PublicKey == req.PublicKey {
			p.Connected, p.LastSeen = true, now
			writeJSON(w, http.StatusOK, LoginResponse{PeerID: p.ID, IP: p.IP})
			return
		}
	}
	var key *setupKey
	for _, k := range s.keys {
		if k.Key == req.SetupKey {
			key = k
		}
	}
	if key == nil {
		writeErr(w, http.StatusUnauthorized, "invalid setup key")
		return
	}
	if st := s.keyState(key); st != "valid" {
		writeErr(w, http.StatusUnauthorized, "setup key is %s", st)
		return
	}
	key.UsedTimes++
	key.LastUsed = now
	name := req.Hostname
	if name == "" {
		name = "peer"
	}
	p := &peer{ID: s.newID("pe"), Name: name, Hostname: name, PublicKey: req.PublicKey,
		IP:      fmt.Sprintf("100.90.%d.%d", (len(s.peers)+1)/250, (len(s.peers)+1)%250+1),
		Created: now, LastSeen: now, Connected: true}
	s.peers[p.ID] = p
	s.groups[allID].Peers = append(s.groups[allID].Peers, p.ID)
	for _, gid := range key.AutoGroups {
		if g, ok := s.groups[gid]; ok {
			g.Peers = append(g.Peers, p.ID)
		}
	}
	writeJSON(w, http.StatusOK, LoginResponse{PeerID: p.ID, IP: p.IP})
}
