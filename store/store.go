// Package store owns n-kudo's persistence contract: the Store interface, the
// entity types it reads and writes, and the typed errors every backend
// returns. store/sqlite (embedded default) and store/postgres (production,
// several replicas) implement it; store/storetest is the conformance suite
// both pass; store/backend opens one from a database URL.
//
// Conventions that hold for every method:
//   - Reads of tenant data take the tenant ID; an object of another tenant
//     is reported as ErrNotFound, exactly like a missing one.
//   - Mutations that change tenant-visible state take an Actor and append
//     one hash-chained audit event in the same transaction as the change.
//     Telemetry writes (heartbeats, logs, commit statuses, deliveries,
//     leases) are not audited: they would grow the audit log per heartbeat.
//   - Errors for expected cases are the sentinels below, wrapped with
//     context; test them with errors.Is. Anything else is an I/O failure.
//   - Secrets (tokens, webhook secrets, setup keys, credentials) go in as
//     hashes where a hash suffices; the others are sealed with the server
//     key (store/seal), never returned by Get/List methods, only opened by
//     their one dedicated accessor.
//   - Times are stored with microsecond precision, in UTC.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/nkudo/nkudo/model"
)

// Sentinel errors. Backends wrap them with context ("get site edge-1: not found").
var (
	// ErrNotFound: the object does not exist, or belongs to another tenant.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique name is taken, or a state transition is not allowed
	// (for example a different result for an action that already finished).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the input breaks a rule the store enforces (empty ID, bad name, …).
	ErrInvalid = errors.New("invalid input")
	// ErrTokenUsed: an enrollment token was already redeemed.
	ErrTokenUsed = errors.New("token already used")
	// ErrTokenExpired: a token's expiry has passed.
	ErrTokenExpired = errors.New("token expired")
	// ErrSuperseded: the plan was superseded by a newer plan for its site.
	ErrSuperseded = errors.New("plan superseded")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
	// ErrCertRevoked: an agent certificate was revoked (by a revoke, or by
	// the deletion of its site or tenant).
	ErrCertRevoked = errors.New("certificate revoked")
	// ErrCertUnknown: an agent certificate was never recorded for the site's
	// current identity epoch (issued to an earlier site of the same name,
	// or discarded because a revocation won the race with its issuance).
	ErrCertUnknown = errors.New("certificate not issued to this site")
	// ErrAuditKey: the audit chain is keyed and this store was opened
	// without its key, so it cannot append (any audited mutation fails).
	ErrAuditKey = errors.New("audit chain is keyed: the store needs the audit key")
	// ErrQuota: storing the object would take its tenant over a quota.
	ErrQuota = errors.New("quota exceeded")
	// ErrBusy: a write waited as long as it may for a row another
	// transaction holds (a heartbeat of a site whose plans are being
	// stored); retrying later succeeds.
	ErrBusy = errors.New("busy: another write holds the record; retry later")
)

// Store is everything the control plane and the GitOps loop persist.
// Implementations are safe for concurrent use by many goroutines and, for
// Postgres, by many processes sharing one database.
type Store interface {
	Tenants
	Repositories
	Credentials
	NetBird
	Tokens
	Sites
	Plans
	Logs
	Statuses
	Webhooks
	Audit
	Coordination
	Maintenance
	Images
	UISessions

	// Ping reports whether the database answers (for /readyz).
	Ping(ctx context.Context) error
	// Close releases connections and ends subscriptions. Further calls return ErrClosed.
	Close() error
}

// Tenants manages tenants. Tenant IDs are chosen by the admin: a lower-case
// DNS label (a-z, 0-9, '-', 1–63 chars), because they appear in
// certificates, URLs and audit records.
type Tenants interface {
	// CreateTenant stores t (CreatedAt is set by the store).
	// ErrInvalid if t.ID is not a DNS label; ErrConflict if it exists.
	CreateTenant(ctx context.Context, actor Actor, t Tenant) (Tenant, error)
	// GetTenant returns one tenant. ErrNotFound if it does not exist.
	GetTenant(ctx context.Context, id string) (Tenant, error)
	// ListTenants returns all tenants ordered by ID.
	ListTenants(ctx context.Context) ([]Tenant, error)
	// DeleteTenant removes the tenant and purges everything it owns
	// (repositories, tokens, sites, plans, logs, statuses, previews) and
	// revokes every certificate its sites were issued. Audit events are kept: the log is append-only. ErrNotFound if absent.
	DeleteTenant(ctx context.Context, actor Actor, id string) error
}

// Repositories manages the git sources a tenant reconciles from.
type Repositories interface {
	// CreateRepository stores r; the store assigns ID (when empty) and
	// CreatedAt. webhookSecret may be empty (no webhook configured).
	// ErrNotFound if the tenant does not exist; ErrConflict if the tenant
	// already has a repository named r.Name; ErrInvalid if Name or URL is empty.
	CreateRepository(ctx context.Context, actor Actor, r Repository, webhookSecret Secret) (Repository, error)
	// GetRepository returns one repository (without its webhook secret).
	// ErrNotFound if absent or of another tenant.
	GetRepository(ctx context.Context, tenant, id string) (Repository, error)
	// ListRepositories returns the tenant's repositories ordered by name.
	ListRepositories(ctx context.Context, tenant string) ([]Repository, error)
	// ListAllRepositories returns every tenant's repositories (for the
	// reconcile loop, which runs for the whole installation).
	ListAllRepositories(ctx context.Context) ([]Repository, error)
	// UpdateRepository changes the settings named in u (nil fields stay).
	// ErrNotFound if absent; ErrConflict if a new name is taken; ErrInvalid
	// if u.Verify has an unknown mode, or a mode but no key.
	UpdateRepository(ctx context.Context, actor Actor, tenant, id string, u RepositoryUpdate) (Repository, error)
	// DeleteRepository removes the repository, its statuses, previews and
	// desired-state records (plans stay: they belong to sites). ErrNotFound if absent.
	DeleteRepository(ctx context.Context, actor Actor, tenant, id string) error
	// WebhookSecret returns the repository's webhook secret, needed to check
	// an HMAC signature ("" if none is set). HMAC verification needs the
	// key itself, so it is sealed with the server key rather than hashed;
	// this method alone opens it. ErrNotFound if the repository is absent.
	WebhookSecret(ctx context.Context, tenant, id string) (Secret, error)

	// MarkCommitSeen records the newest commit fetched from the branch
	// (not audited: bookkeeping). ErrNotFound if absent.
	MarkCommitSeen(ctx context.Context, tenant, id, commit string, now time.Time) error
	// MarkCommitApplied records the commit whose desired state is now in
	// force (the last valid commit) and clears LastError. Audited.
	// ErrNotFound if absent.
	MarkCommitApplied(ctx context.Context, actor Actor, tenant, id, commit string, now time.Time) error
	// SetRepositoryError records the last reconcile error ("" clears it).
	// ErrNotFound if absent.
	SetRepositoryError(ctx context.Context, tenant, id, msg string, now time.Time) error

	// SiteDesired returns the per-site desired-state hashes last planned
	// from this repository, keyed by site name (empty map when none), for
	// incremental reconciles. ErrNotFound if the repository is absent.
	SiteDesired(ctx context.Context, tenant, repoID string) (map[string]SiteDesired, error)
	// SetSiteDesired upserts one site's desired-state hash and commit.
	// ErrNotFound if the repository is absent.
	SetSiteDesired(ctx context.Context, tenant, repoID string, d SiteDesired) error
	// RecordSitePlan records one site as planned from repository repoID:
	// its desired state d (as SetSiteDesired) and, when plan is not nil,
	// the plan (as StorePlan, same rules and errors), in one transaction,
	// so the desired state any replica serves never disagrees with the
	// plans. Nothing is recorded when the plan cannot be stored (e.g.
	// ErrNotFound for a site not registered yet). stored is StorePlan's
	// answer (false when plan is nil).
	RecordSitePlan(ctx context.Context, actor Actor, tenant, repoID string, d SiteDesired, plan *model.Plan, now time.Time) (stored bool, err error)
	// RecordSitePlans is RecordSitePlan for many sites of one repository
	// in one transaction: records[i] is recorded, or not, exactly as
	// RecordSitePlan would record it alone, and results[i] is its answer
	// (Err wraps ErrNotFound for a plan of a site not registered yet:
	// nothing is recorded for that site, the others are). Any other
	// failure records nothing of the batch and is returned as err.
	RecordSitePlans(ctx context.Context, actor Actor, tenant, repoID string, records []SitePlanRecord, now time.Time) (results []SitePlanResult, err error)
	// DesiredState returns the desired state last planned for the tenant's
	// site, with its documents, from whichever of the tenant's repositories
	// recorded it most recently. ErrNotFound when no repository recorded
	// the site's documents (never planned, or planned before the store
	// kept them and not reconciled since).
	DesiredState(ctx context.Context, tenant, site string) (DesiredState, error)
	// SiteLabels returns the labels of every site of the tenant, from the
	// Site document of the record DesiredState would answer with, in one
	// read (the dashboard's fleet). Sites without such a record, or whose
	// document has no labels, are absent.
	SiteLabels(ctx context.Context, tenant string) (map[string]map[string]string, error)
}

// Credentials manages the secrets a tenant's repositories fetch and post
// statuses with. Each belongs to one tenant and is bound to one host; the
// secret is sealed with the server key (see store/seal) and only
// CredentialSecret returns it.
type Credentials interface {
	// PutCredential creates the tenant's credential c.Name or replaces its
	// kind, host, secret and known_hosts (CreatedAt is kept, UpdatedAt set;
	// the fingerprint is computed from secret). ErrInvalid if the name, kind
	// or host is malformed or the secret is empty (the error names the
	// field); ErrNotFound if the tenant does not exist. Audited (without
	// the secret).
	PutCredential(ctx context.Context, actor Actor, c Credential, secret Secret) (Credential, error)
	// GetCredential returns one credential without its secret. ErrNotFound
	// if absent or of another tenant.
	GetCredential(ctx context.Context, tenant, name string) (Credential, error)
	// ListCredentials returns the tenant's credentials ordered by name,
	// without secrets.
	ListCredentials(ctx context.Context, tenant string) ([]Credential, error)
	// DeleteCredential removes a credential. ErrNotFound if absent. Audited.
	DeleteCredential(ctx context.Context, actor Actor, tenant, name string) error
	// CredentialSecret returns the credential and its opened secret, the
	// only way to read it back. ErrNotFound if absent or of another
	// tenant; an error wrapping seal.ErrWrongKey or seal.ErrOpen if the
	// server key does not open it.
	CredentialSecret(ctx context.Context, tenant, name string) (Credential, Secret, error)
}

// NetBird keeps each tenant's NetBird integration: the management API
// the control plane mints setup keys and sets group membership with.
type NetBird interface {
	// PutNetBirdIntegration creates or replaces the tenant's integration
	// (CreatedAt is kept, UpdatedAt set). ErrInvalid if the URL is not an
	// http(s) URL or the credential name is malformed (the error names the
	// field); ErrNotFound if the tenant or the credential does not exist.
	// Audited.
	PutNetBirdIntegration(ctx context.Context, actor Actor, n NetBirdIntegration) (NetBirdIntegration, error)
	// GetNetBirdIntegration returns the tenant's integration. ErrNotFound
	// if it has none.
	GetNetBirdIntegration(ctx context.Context, tenant string) (NetBirdIntegration, error)
	// DeleteNetBirdIntegration removes it (the credential stays).
	// ErrNotFound if there is none. Audited.
	DeleteNetBirdIntegration(ctx context.Context, actor Actor, tenant string) error

	// PutNetBirdPeer creates or replaces the state of a site's peer; the
	// setup key is sealed. ErrNotFound if the tenant does not exist.
	PutNetBirdPeer(ctx context.Context, p NetBirdPeer) error
	// GetNetBirdPeer returns it with the key opened. ErrNotFound if none.
	GetNetBirdPeer(ctx context.Context, tenant, site string) (NetBirdPeer, error)
	// ListNetBirdPeers returns the tenant's peer states ordered by site,
	// keys opened.
	ListNetBirdPeers(ctx context.Context, tenant string) ([]NetBirdPeer, error)
	// DeleteNetBirdPeer removes one. ErrNotFound if none.
	DeleteNetBirdPeer(ctx context.Context, tenant, site string) error
}

// NetBirdPeer is what the control plane remembers of a site's NetBird
// peer (see netbird.SiteState).
type NetBirdPeer struct {
	Tenant, Site string
	// KeyID and SetupKey are the key minted for the site and not yet
	// used (sealed at rest); KeyGroups the groups it carries.
	KeyID     string
	SetupKey  Secret
	KeyGroups []string
	PeerID    string
	// Groups is the membership last applied.
	Groups []string
	// LastChange is the last membership change ("+a -b"), LastError the
	// last failure ("" after a success).
	LastChange string
	LastError  string
	UpdatedAt  time.Time
}

// NetBirdIntegration is a tenant's NetBird management API.
type NetBirdIntegration struct {
	Tenant string
	// URL is the management server, e.g. https://api.netbird.io.
	URL string
	// Credential names the tenant's token credential for the API.
	Credential string
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// CredentialKind says what a credential's secret is and how it is sent.
type CredentialKind string

const (
	// CredentialToken is a bearer token (HTTP basic auth with user
	// x-access-token for git; Authorization header for forge APIs).
	CredentialToken CredentialKind = "token"
	// CredentialBasic is "user:password" for HTTP basic auth.
	CredentialBasic CredentialKind = "basic"
	// CredentialSSHKey is a PEM private key; KnownHosts pins the host keys.
	CredentialSSHKey CredentialKind = "ssh-key"
)

// Valid reports whether k is one of the kinds above.
func (k CredentialKind) Valid() bool {
	switch k {
	case CredentialToken, CredentialBasic, CredentialSSHKey:
		return true
	}
	return false
}

// Credential is a tenant's named secret, as listed: never the secret itself.
type Credential struct {
	Tenant string         `json:"tenant"`
	Name   string         `json:"name"` // unique per tenant; see ValidCredentialName
	Kind   CredentialKind `json:"kind"`
	// Host is the host (optionally host:port) the credential may be sent
	// to, lower case; a repository or forge URL on another host cannot use it.
	Host string `json:"host"`
	// Fingerprint is "sha256:" and the first 16 hex digits of the secret's
	// SHA-256, safe to show, to tell which secret is set.
	Fingerprint string `json:"fingerprint"`
	// KnownHosts pins SSH host keys (known_hosts format; "" for HTTP kinds).
	// Public data: stored and listed as is.
	KnownHosts string    `json:"knownHosts,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
}

// ValidCredentialName reports whether name can name a credential: 1–128
// characters of letters, digits, '.', '_' and '-', starting with a letter
// or digit (the file names operators used for credentials before).
func ValidCredentialName(name string) bool {
	if name == "" || len(name) > 128 {
		return false
	}
	for i, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// CredentialFingerprint returns the Fingerprint of secret.
func CredentialFingerprint(secret Secret) string {
	sum := sha256.Sum256([]byte(secret.Reveal()))
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// Tokens manages API tokens (people, CLI) and enrollment tokens (agents).
// Only hashes are stored: HashSecret(secret), lower-case hex SHA-256.
type Tokens interface {
	// CreateAPIToken stores a token by its hash; the store assigns ID (when
	// empty) and CreatedAt. t.Tenant "" with t.Admin true is an admin token.
	// ErrInvalid if hash is empty, or neither tenant nor admin is given;
	// ErrNotFound if the tenant does not exist; ErrConflict if the hash exists.
	CreateAPIToken(ctx context.Context, actor Actor, t APIToken, hash string) (APIToken, error)
	// APITokenByHash finds a token for authentication. ErrNotFound if no
	// token has that hash; ErrTokenExpired if it has expired at now.
	APITokenByHash(ctx context.Context, hash string, now time.Time) (APIToken, error)
	// TouchAPIToken sets LastUsedAt (cheap, not audited). ErrNotFound if absent.
	TouchAPIToken(ctx context.Context, id string, now time.Time) error
	// ListAPITokens returns the tenant's tokens, or the admin tokens when
	// tenant is "". Hashes are never returned.
	ListAPITokens(ctx context.Context, tenant string) ([]APIToken, error)
	// DeleteAPIToken revokes a token. ErrNotFound if absent or of another tenant.
	DeleteAPIToken(ctx context.Context, actor Actor, tenant, id string) error

	// CreateEnrollmentToken stores a one-time token. t.ID is the public
	// half of "id.secret" (see NewEnrollmentToken), secretHash the hash of
	// the secret half. ErrNotFound if the tenant or site does not exist;
	// ErrConflict if the ID exists; ErrInvalid if ID, hash or expiry is missing.
	CreateEnrollmentToken(ctx context.Context, actor Actor, t EnrollmentToken, secretHash string) (EnrollmentToken, error)
	// RedeemEnrollmentToken atomically marks the token used (compare-and-set
	// on UsedAt): of two concurrent redemptions exactly one succeeds.
	// ErrNotFound if the ID is unknown or the secret hash does not match
	// (compared in constant time); ErrTokenUsed if already redeemed;
	// ErrTokenExpired if now is past ExpiresAt. Audited (actor "enroll:<id>").
	RedeemEnrollmentToken(ctx context.Context, id, secretHash string, now time.Time) (EnrollmentToken, error)
	// CheckEnrollmentToken makes RedeemEnrollmentToken's checks (with its
	// errors, in its order: secret first) without redeeming the token, so a
	// request can be refused for another reason without burning it.
	CheckEnrollmentToken(ctx context.Context, id, secretHash string, now time.Time) (EnrollmentToken, error)
	// ListEnrollmentTokens returns the tenant's enrollment tokens, newest first.
	ListEnrollmentTokens(ctx context.Context, tenant string) ([]EnrollmentToken, error)
	// DeleteEnrollmentToken removes a token. ErrNotFound if absent.
	DeleteEnrollmentToken(ctx context.Context, actor Actor, tenant, id string) error
}

// Sites manages edge sites, their agents' identity and their reports.
type Sites interface {
	// CreateSite registers a site. ErrInvalid if name is not a DNS label;
	// ErrNotFound if the tenant does not exist; ErrConflict if it exists.
	CreateSite(ctx context.Context, actor Actor, tenant, name string) (Site, error)
	// GetSite returns one site. ErrNotFound if absent.
	GetSite(ctx context.Context, tenant, name string) (Site, error)
	// ListSites returns the tenant's sites ordered by name.
	ListSites(ctx context.Context, tenant string) ([]Site, error)
	// DeleteSite removes a site with its inventory, plans, logs and
	// enrollment tokens, and revokes every certificate it was issued (a
	// site created again with the same name starts a new epoch).
	// ErrNotFound if absent.
	DeleteSite(ctx context.Context, actor Actor, tenant, name string) error

	// SetSiteCertificate records the serial of the certificate just issued
	// to the site's agent (enrollment or renewal); the first call sets
	// EnrolledAt. Audited. ErrNotFound if the site is absent.
	SetSiteCertificate(ctx context.Context, actor Actor, tenant, site, serial string, now time.Time) error
	// RevokeSerial revokes a certificate serial of the site. Revoking twice
	// is not an error. Audited. ErrNotFound if the site is absent.
	RevokeSerial(ctx context.Context, actor Actor, tenant, site, serial string, now time.Time) error
	// IsSerialRevoked reports whether a serial was revoked (checked on every
	// agent handshake; serials are unique per CA, so no tenant is needed).
	IsSerialRevoked(ctx context.Context, serial string) (bool, error)
	// ListRevokedSerials returns every revoked serial (for the CRL), oldest first.
	ListRevokedSerials(ctx context.Context) ([]RevokedSerial, error)

	// IssueSiteCertificate records a certificate just signed for the site in
	// its current identity epoch and makes it the site's CertSerial, under
	// the site's row lock, so it serialises with RevokeSiteCertificates and
	// DeleteSite. auth is what authenticated the request: when it no longer
	// holds (the renewing certificate was revoked or is not of this epoch:
	// ErrCertRevoked, ErrCertUnknown; the site was revoked after the
	// enrollment token was redeemed: ErrCertRevoked) nothing is recorded and
	// the new certificate must be discarded. The first issue sets
	// EnrolledAt. Audited. ErrNotFound if the site is absent.
	IssueSiteCertificate(ctx context.Context, actor Actor, tenant, site string, auth CertAuth, serial string, now time.Time) error
	// CheckSiteCertificate returns the site when serial is a certificate
	// recorded for its current epoch and not revoked: the check of every
	// agent request. ErrCertRevoked if the serial was revoked (also when
	// the site is gone); ErrNotFound if the site is absent otherwise;
	// ErrCertUnknown if it was never issued to this site's current epoch.
	CheckSiteCertificate(ctx context.Context, tenant, site, serial string) (Site, error)
	// RevokeSiteCertificates revokes every certificate the site's current
	// epoch was issued that is not revoked yet and returns their serials
	// (empty when there was none). Audited when it revoked anything.
	// ErrNotFound if the site is absent.
	RevokeSiteCertificates(ctx context.Context, actor Actor, tenant, site string, now time.Time) ([]string, error)

	// SetSiteNetBird stores the NetBird management URL and setup key handed
	// to the site's agent at enrollment. An empty key clears it. Audited
	// (without the key). ErrNotFound if the site is absent.
	SetSiteNetBird(ctx context.Context, actor Actor, tenant, site, managementURL string, setupKey Secret) error
	// SiteNetBird returns the management URL and setup key (the only way to
	// read the key back). ErrNotFound if the site is absent.
	SiteNetBird(ctx context.Context, tenant, site string) (managementURL string, setupKey Secret, err error)

	// RecordHeartbeat is the hottest write: it updates the site's one row
	// (facts, last heartbeat, interval, inventory) and grows no history.
	// The inventory's Version increments only when the normalised VM set
	// (sorted by name) differs from the stored one; the first report always
	// counts as a change. Not audited. ErrNotFound if the site is absent;
	// ErrInvalid if facts are not JSON or a VM name is empty or repeated.
	RecordHeartbeat(ctx context.Context, tenant, site string, hb Heartbeat) (HeartbeatResult, error)
	// Inventory returns the site's last reported inventory (Reported false,
	// Version 0 and no VMs when the agent never reported). ErrNotFound if
	// the site is absent.
	Inventory(ctx context.Context, tenant, site string) (model.Inventory, error)
	// Inventories returns every site's inventory keyed by site name (the
	// shape diff.Plan takes).
	Inventories(ctx context.Context, tenant string) (map[string]model.Inventory, error)
}

// Plans stores planner output and the agents' progress through it.
type Plans interface {
	// StorePlan stores p with its actions in one transaction and makes it
	// the site's active plan: the site's older pending and in-progress
	// plans become superseded (SupersededBy = p.ID) atomically, and the
	// site's plan topic is notified. The tenant is p.Tenant; repoID may be
	// "" (a plan not from a repository).
	//
	// A plan whose ID already exists is not stored again (stored false),
	// also under concurrency: of two simultaneous calls exactly one reports
	// stored. The one exception: an existing plan that was superseded is
	// made active again (stored true), because the desired state went back
	// to it. ErrInvalid if p has no ID, tenant, site or actions;
	// ErrNotFound if the tenant or site does not exist. Audited when stored.
	StorePlan(ctx context.Context, actor Actor, p model.Plan, repoID string, now time.Time) (stored bool, err error)
	// GetPlan returns a plan with its actions. ErrNotFound if absent.
	GetPlan(ctx context.Context, tenant, id string) (StoredPlan, error)
	// SupersedeActivePlan ends the site's pending or in-progress plan
	// without storing a new one, because commit no longer wants it: the
	// site's new desired state needs no action, or its plan was refused.
	// The plan becomes superseded with an empty SupersededBy and
	// SupersededByCommit = commit, atomically; the site's plan topic is
	// notified, so an agent long-polling sees it at once. As with any
	// superseded plan, the agent finishes the action it is in and
	// StartAction refuses the rest (ErrSuperseded). reason goes into the
	// audit event. Returns the plan as it now is; ErrNotFound if the site
	// (or its tenant) does not exist or has no active plan. Audited.
	SupersedeActivePlan(ctx context.Context, actor Actor, tenant, site, commit, reason string, now time.Time) (StoredPlan, error)
	// ActivePlan returns the site's pending or in-progress plan with its
	// actions (at most one exists). ErrNotFound if the site has none.
	ActivePlan(ctx context.Context, tenant, site string) (StoredPlan, error)
	// ListPlans returns the tenant's plans matching f, newest first.
	// Actions are filled only when f.WithActions is set.
	ListPlans(ctx context.Context, tenant string, f PlanFilter) ([]StoredPlan, error)
	// ActivePlanIDs returns the IDs of the pending and in-progress plans
	// stored from repository repoID, each with its site (empty map when
	// none): one query, nothing decoded, for following a commit's plans.
	ActivePlanIDs(ctx context.Context, tenant, repoID string) (map[string]string, error)

	// StartAction marks a pending action running and its plan in progress.
	// An action already running or finished is left as it is (nil error), so
	// a repeated or late report is harmless. ErrNotFound if the plan or
	// action is absent or the plan is not the site's; ErrSuperseded if the
	// action is pending and its plan was superseded (do not start it).
	StartAction(ctx context.Context, tenant, site, planID, actionID string, now time.Time) error
	// RecordActionResult records a finished action (r.Status succeeded,
	// failed or skipped). The same result reported again is accepted once:
	// New is false the second time. A different result for a finished
	// action is ErrConflict. Results for superseded plans are recorded (the
	// agent finishes the action it is in) but do not change the plan's
	// status. Otherwise the plan becomes failed on the first failed action
	// and succeeded once every action succeeded or was skipped; PlanStatus
	// reports the plan's status after the call. Audited when new.
	// ErrNotFound if the plan or action is absent, or the plan is not the
	// given site's; ErrInvalid for a non-terminal status.
	RecordActionResult(ctx context.Context, actor Actor, tenant, site string, r ActionResult) (ResultOutcome, error)
	// RecordActionResults records several finished actions of the site as
	// RecordActionResult does, in one transaction: all or none (the error
	// names the first refused result). An agent reports a batch at once,
	// and one transaction appends to the audit chain once for all of them.
	RecordActionResults(ctx context.Context, actor Actor, tenant, site string, rs []ActionResult) ([]ResultOutcome, error)
	// StartActions marks several actions of the site running as
	// StartAction does, in order and in one transaction: all or none (the
	// error wraps the first refusal, ErrNotFound or ErrSuperseded, and
	// names its action). An agent reports its starts in batches under a
	// rollout, and a transaction per start queued them on the pool.
	StartActions(ctx context.Context, tenant, site string, starts []ActionStart) error
}

// Logs stores execution log lines streamed by agents.
type Logs interface {
	// AppendLogs stores a batch of lines of one site's plans. Lines whose
	// (plan, seq) is already stored are ignored; inserted counts the new
	// ones. Notifies LogTopic(plan) for each plan that got lines. Not
	// audited. ErrNotFound if a line names a plan that is not the site's.
	AppendLogs(ctx context.Context, tenant, site string, lines []LogLine) (inserted int, err error)
	// Logs returns a plan's lines with Seq > afterSeq in Seq order, at most
	// limit (0 = 1000). Missing sequence numbers are gaps: see Gaps.
	// ErrNotFound if the plan is absent.
	Logs(ctx context.Context, tenant, planID string, afterSeq int64, limit int) ([]LogLine, error)
	// AppendLogsWithin is AppendLogs under byte quotas (see LogQuota). A
	// new line that would take its plan or its site over quota is not
	// stored, and neither is any later line of a plan that had lines
	// dropped, so what is stored of a plan has no holes; dropped lines are
	// counted per plan (LogUsage). Errors as AppendLogs.
	AppendLogsWithin(ctx context.Context, tenant, site string, lines []LogLine, q LogQuota) (LogAppend, error)
	// LogSeqs returns the sequence numbers of a plan's stored lines with
	// afterSeq < Seq ≤ toSeq, in order, without reading their text (gap
	// checks). ErrNotFound if the plan is absent.
	LogSeqs(ctx context.Context, tenant, planID string, afterSeq, toSeq int64) ([]int64, error)
	// LogPage returns a plan's lines with Seq > afterSeq in Seq order: at
	// most limit lines (0 = 1000) and, after the first line, at most
	// maxBytes of line text (0 = no byte bound). more is true when lines
	// were left for a next page (read it with afterSeq = the last Seq).
	// ErrNotFound if the plan is absent.
	LogPage(ctx context.Context, tenant, planID string, afterSeq int64, limit int, maxBytes int64) (lines []LogLine, more bool, err error)
	// LogUsage reports what a plan's log holds and what was dropped.
	// ErrNotFound if the plan is absent.
	LogUsage(ctx context.Context, tenant, planID string) (LogUsage, error)
}

// LogLineOverhead is what a stored log line counts against the quotas on
// top of its text, so that many empty lines are bounded too.
const LogLineOverhead = 64

// LogQuota bounds the log bytes (text plus LogLineOverhead per line) kept
// per plan and per site. Zero means unbounded.
type LogQuota struct {
	PlanBytes int64
	SiteBytes int64
}

// LogQuotaScope names which quota a plan's log reached.
type LogQuotaScope string

const (
	LogQuotaPlan LogQuotaScope = "plan"
	LogQuotaSite LogQuotaScope = "site"
)

// LogAppend says what AppendLogsWithin did.
type LogAppend struct {
	Inserted int // new lines stored
	Dropped  int // new lines not stored: a quota was reached
	// Over names each plan of the batch whose log is closed, with the
	// quota that closed it (this batch or earlier).
	Over map[string]LogQuotaScope
}

// LogUsage is what a plan's log holds and what was dropped from it.
type LogUsage struct {
	Bytes        int64 // counted against the quotas
	DroppedLines int64
	DroppedBytes int64
	// Closed names the quota that closed the log ("" while open).
	Closed LogQuotaScope
}

// Statuses stores commit statuses and pull-request previews.
type Statuses interface {
	// SetCommitStatus upserts the status of (repo, commit, context). When
	// state, description or target URL change, Posted is reset to false and
	// changed is true; otherwise nothing is written. ErrNotFound if the
	// repository is absent; ErrInvalid for an unknown state.
	SetCommitStatus(ctx context.Context, tenant string, s CommitStatus) (changed bool, err error)
	// SetCommitStatusOnce is SetCommitStatus for a context that ends once
	// (nkudo/apply): while the stored state is pending (or there is none)
	// it behaves the same; once a final state (success, failure, error) is
	// stored, nothing changes it and changed is false. Several replicas
	// may race to finish one commit: the first final state written wins,
	// and only its writer sees changed. Errors as SetCommitStatus.
	SetCommitStatusOnce(ctx context.Context, tenant string, s CommitStatus) (changed bool, err error)
	// MarkCommitStatusPosted records that the forge accepted the status
	// with this exact state (a newer state set meanwhile stays unposted).
	// ErrNotFound if absent.
	MarkCommitStatusPosted(ctx context.Context, tenant string, s CommitStatus, now time.Time) error
	// CommitStatuses returns the statuses of one commit ordered by context.
	CommitStatuses(ctx context.Context, tenant, repoID, commit string) ([]CommitStatus, error)
	// RecentCommitStatuses returns the repository's statuses of every
	// commit, most recently updated first (ties by commit, then context),
	// at most limit (0 = 100): what a dashboard lists as recent commits.
	RecentCommitStatuses(ctx context.Context, tenant, repoID string, limit int) ([]CommitStatus, error)
	// CommitsWithPrefix returns the full SHAs of the tenant's commits that
	// have a status or a plan (of repoID; of every repository when repoID
	// is "") and start with prefix: distinct, sorted, at most limit. It
	// lets people name a commit by the short form the CLI prints.
	// ErrInvalid unless prefix is 4 to 64 lowercase hex digits.
	CommitsWithPrefix(ctx context.Context, tenant, repoID, prefix string, limit int) ([]string, error)
	// UnpostedCommitStatuses returns statuses not yet accepted by the forge
	// (all tenants, oldest first, at most limit; 0 = 100), for the poster's retry loop.
	UnpostedCommitStatuses(ctx context.Context, limit int) ([]CommitStatus, error)

	// PutPreview upserts the preview of (repo, PR number, commit). Its
	// State is ignored: a new preview takes the pull request's recorded
	// state (PreviewOpen for its first), and an upsert keeps it.
	// ErrNotFound if the repository is absent.
	PutPreview(ctx context.Context, tenant string, p Preview) error
	// GetPreview returns the newest preview of a pull request. ErrNotFound if none.
	GetPreview(ctx context.Context, tenant, repoID string, pr int) (Preview, error)
	// ListPreviews returns the repository's previews, newest first.
	ListPreviews(ctx context.Context, tenant, repoID string) ([]Preview, error)
	// SetPreviewState records that a pull request was closed, merged or
	// reopened, on every stored preview of it: a preview stored later keeps
	// that state (PutPreview), so a preview queued before the close never
	// brings the pull request back after a restart. ErrNotFound if the pull
	// request has no stored preview; ErrInvalid for an unknown state.
	SetPreviewState(ctx context.Context, tenant, repoID string, pr int, state PreviewState) error
	// OpenPreviews returns the newest preview of each open pull request of
	// the repository (as GetPreview picks it), ordered by PR number,
	// without PlanText and PlanJSON: what a refresh needs to know.
	OpenPreviews(ctx context.Context, tenant, repoID string) ([]Preview, error)
}

// Webhooks de-duplicates forge deliveries.
type Webhooks interface {
	// RecordDelivery remembers a delivery ID per forge; duplicate is true
	// when it was seen before (the caller then ignores the delivery).
	RecordDelivery(ctx context.Context, forge, deliveryID string, now time.Time) (duplicate bool, err error)
	// PruneDeliveries forgets deliveries (IDs and payload hashes)
	// received before cutoff and returns how many.
	PruneDeliveries(ctx context.Context, cutoff time.Time) (int64, error)
	// RecordPayload remembers the hash of a verified delivery body of a
	// repository; duplicate is true when the same hash was recorded at or
	// after now-window (the caller then drops the delivery as a replay). An
	// older record is renewed. ErrInvalid if repoID or bodyHash is empty or
	// window is not positive.
	RecordPayload(ctx context.Context, repoID, bodyHash string, now time.Time, window time.Duration) (duplicate bool, err error)
}

// Audit reads and extends the hash-chained audit log.
type Audit interface {
	// AppendAudit records an event that is not a store mutation (for
	// example a reconcile trigger or a failed login). Seq, Time and the
	// hashes are set by the store; Detail must be a JSON object or empty.
	AppendAudit(ctx context.Context, e AuditEvent) (AuditEvent, error)
	// ListAudit returns the tenant's events with Seq > afterSeq, oldest
	// first, at most limit (0 = 100). tenant "" returns every tenant's
	// events (admin view).
	ListAudit(ctx context.Context, tenant string, afterSeq int64, limit int) ([]AuditEvent, error)
	// VerifyAudit recomputes the whole chain and reports the first broken
	// link (an edited, inserted or deleted event); error only for I/O. With
	// an audit key it also checks every MAC from the audit.keyed event on,
	// and that there is such an event, so an edit followed by a re-chain
	// done without the key shows.
	VerifyAudit(ctx context.Context) (AuditVerification, error)
}

// Maintenance keeps the tables that grow with use bounded.
type Maintenance interface {
	// PrunePlans deletes finished plans (succeeded, failed or superseded)
	// last updated before cutoff, with their actions and logs, for every
	// tenant; active plans are never touched. Audited (one event with the
	// count) when it deleted anything.
	PrunePlans(ctx context.Context, actor Actor, cutoff time.Time) (int64, error)
}

// Images records which tenant owns which content-addressed image. The
// bytes are not in the database: the control plane keeps one file per
// digest and asks the store who owns it. Ownership is per tenant, so a
// tenant never sees, fetches or deletes an image only another tenant
// pushed, even when both pushed the same bytes.
type Images interface {
	// PutImage records that img.Tenant owns the image with digest
	// img.SHA256 (64 lower-case hex digits) of img.Size bytes, named
	// img.Name. When the tenant already owns the digest the record is kept
	// (created false; a different non-empty name replaces the old one).
	// A new record that would take the tenant's images over quota bytes in
	// total is refused with ErrQuota (quota 0 = no quota). ErrInvalid if
	// the digest, size or name is malformed (the error names the field);
	// ErrNotFound if the tenant does not exist. Audited when created or
	// renamed.
	PutImage(ctx context.Context, actor Actor, img Image, quota int64, now time.Time) (out Image, created bool, err error)
	// GetImage returns the tenant's record of a digest. ErrNotFound if the
	// tenant does not own it (whoever else does).
	GetImage(ctx context.Context, tenant, sha256 string) (Image, error)
	// ListImages returns the tenant's images ordered by name, then digest.
	ListImages(ctx context.Context, tenant string) ([]Image, error)
	// ImageBytes returns the total size of the tenant's images.
	ImageBytes(ctx context.Context, tenant string) (int64, error)
	// DeleteImage removes the tenant's record of a digest; orphaned is true
	// when no tenant owns the digest any more (its file may go).
	// ErrNotFound if the tenant does not own it. Audited.
	DeleteImage(ctx context.Context, actor Actor, tenant, sha256 string) (orphaned bool, err error)
	// MarkImagesReferenced sets ReferencedAt to now on the tenant's images
	// among digests (others are ignored). Not audited: bookkeeping.
	MarkImagesReferenced(ctx context.Context, tenant string, digests []string, now time.Time) error
	// ImageOwned reports whether any tenant owns the digest.
	ImageOwned(ctx context.Context, sha256 string) (bool, error)
}

// Image is one tenant's record of a content-addressed image.
type Image struct {
	Tenant string `json:"tenant"`
	// SHA256 is the digest of the bytes, 64 lower-case hex digits.
	SHA256 string `json:"sha256"`
	// Name is the pusher's label (the file name by default); not unique.
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"createdAt"`
	// ReferencedAt is when a manifest of the tenant was last seen naming
	// the digest (zero = never).
	ReferencedAt time.Time `json:"referencedAt,omitzero"`
}

// ValidImageDigest reports whether d is a digest as Image.SHA256 keeps it.
func ValidImageDigest(d string) bool {
	if len(d) != 64 {
		return false
	}
	for _, c := range d {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ValidImageName reports whether name can label an image: the rule of
// credential names (1–128 letters, digits, '.', '_', '-'), which file
// names of kernels and disk images fit.
func ValidImageName(name string) bool { return ValidCredentialName(name) }

// UISessions keeps the dashboard's browser sessions, so every control
// plane replica knows every session. A session is stored under the
// SHA-256 of its cookie value, never the value itself, and holds the hash
// of the API token it was opened with (re-checked by the caller on every
// request). Sessions are not audited (sign-in and sign-out are, by the
// control plane) and go with their tenant.
type UISessions interface {
	// CreateUISession records a new session. Expired sessions (by l) are
	// dropped first; then, when the token has l.PerToken sessions, its
	// least recently used is ended, and when the store holds l.Max, the
	// least recently used of all. ErrInvalid if IDHash, TokenHash or
	// Tenant is empty; ErrNotFound if the tenant does not exist.
	CreateUISession(ctx context.Context, sess UISession, l UISessionLimits, now time.Time) error
	// GetUISession returns the session stored under idHash. ErrNotFound
	// if there is none, or it was idle longer than l.Idle or opened longer
	// than l.Lifetime ago at now (it is then deleted). With touch its last
	// use becomes now, written only when that moves it by more than
	// UISessionTouch, so a busy page is not a write per request.
	GetUISession(ctx context.Context, idHash string, l UISessionLimits, now time.Time, touch bool) (UISession, error)
	// DeleteUISession ends the session stored under idHash (no error when
	// there is none).
	DeleteUISession(ctx context.Context, idHash string) error

	// CreateUISignInCode records a single-use sign-in code (by its hash)
	// that exchanges for a session of the API token TokenHash on Tenant
	// until ExpiresAt; expired codes are dropped first. Then, when the
	// token has l.PerToken live codes, its oldest are dropped (a token can
	// only spend its own links), and when the tenant has l.PerTenant, the
	// code is refused with ErrQuota (one token must not void another's
	// links). ErrInvalid if a field is empty; ErrNotFound if the tenant
	// does not exist.
	CreateUISignInCode(ctx context.Context, c UISignInCode, l UISignInCodeLimits, now time.Time) error
	// RedeemUISignInCode consumes the code stored under codeHash: the first
	// call before it expires returns it, every other call (or one after
	// ExpiresAt) gets ErrNotFound.
	RedeemUISignInCode(ctx context.Context, codeHash string, now time.Time) (UISignInCode, error)
}

// UISignInCode is a short-lived, single-use code that signs a browser in
// to the dashboard without the API token ever being in a URL.
type UISignInCode struct {
	CodeHash  string    `json:"codeHash"`  // hex SHA-256 of the code
	TokenHash string    `json:"tokenHash"` // HashSecret of the API token
	Tenant    string    `json:"tenant"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// UISignInCodeLimits bound the live sign-in codes; a zero field is no
// bound.
type UISignInCodeLimits struct {
	PerToken  int // codes of one API token: the oldest beyond are dropped
	PerTenant int // codes of one tenant: a new one beyond is refused
}

// UISessionTouch is how far a session's last use must move before
// GetUISession writes it.
const UISessionTouch = time.Minute

// UISession is one signed-in browser of the dashboard.
type UISession struct {
	// IDHash is the hex SHA-256 of the session's cookie value.
	IDHash string `json:"idHash"`
	// TokenHash is HashSecret of the API token used to sign in.
	TokenHash string    `json:"tokenHash"`
	Tenant    string    `json:"tenant"` // the tenant the session acts on
	CreatedAt time.Time `json:"createdAt"`
	SeenAt    time.Time `json:"seenAt"` // last use (to within UISessionTouch)
}

// UISessionLimits bound the dashboard's sessions; a zero field is no bound.
type UISessionLimits struct {
	Idle     time.Duration // unused this long: ended
	Lifetime time.Duration // opened this long ago: ended
	PerToken int           // sessions of one API token
	Max      int           // sessions in all
}

// Coordination is what lets several control-plane replicas share work.
type Coordination interface {
	// AcquireLease takes or renews the named lease for holder until ttl
	// from now (database time on Postgres). It returns false, nil when
	// another holder has an unexpired lease.
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	// RenewLease extends a lease holder already has; false when it was lost
	// (expired and taken by another holder, or released).
	RenewLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	// ReleaseLease gives up the lease if holder has it (no error otherwise).
	ReleaseLease(ctx context.Context, name, holder string) error

	// Subscribe returns a channel that receives a value (coalesced, buffer
	// of one) after every Notify of topic by any replica, until cancel is
	// called or ctx ends. Subscribe before reading state, then read, then
	// wait: a change between read and wait is not lost. Wake-ups can be
	// spurious or repeated; they say "look again", never what changed.
	Subscribe(ctx context.Context, topic string) (<-chan struct{}, func())
	// Notify wakes the subscribers of topic on every replica. Stores call
	// it themselves after plan and log writes; callers may use other topics.
	Notify(ctx context.Context, topic string) error
	// NotifyTopics wakes the subscribers of every topic in topics, as
	// Notify does for one, with a single write for all of them: callers
	// that coalesce wake-ups pay one transaction per batch. A topic given
	// twice is notified once or twice; an empty list writes nothing.
	NotifyTopics(ctx context.Context, topics []string) error

	// RequestReconcile records that a reconcile of the repository was
	// accepted (a webhook push, an API trigger), so that it outlives the
	// replica that accepted it.
	RequestReconcile(ctx context.Context, tenant, repoID string) error
	// ReconcileRequested returns the repository's count of requests so far
	// (0: none); a reconcile reads it when it starts and hands it to
	// ReconcileHandled when it finishes.
	ReconcileRequested(ctx context.Context, repoID string) (int64, error)
	// ReconcileHandled records that a reconcile attempt covering the first
	// seq requests finished; it never moves the count back.
	ReconcileHandled(ctx context.Context, repoID string, seq int64) error
	// PendingReconciles lists the repositories, not suspended, with
	// requests no finished attempt covered and no unexpired lease named
	// leasePrefix+repoID: work the replica that accepted it did not finish.
	PendingReconciles(ctx context.Context, leasePrefix string) ([]ReconcileRequest, error)
}

// ReconcileRequest is a repository with reconcile requests not yet handled.
type ReconcileRequest struct {
	Tenant, RepoID string
	// Requested and Handled are the counts of requests so far and of those
	// a finished reconcile attempt covered.
	Requested, Handled int64
}

// PlanTopic is notified when a site's active plan changes to another
// plan or is superseded: a plan is stored, revived or superseded, or the
// site deleted. A plan that succeeds or fails does not notify it (no
// long-poll's answer changes); FleetTopic is notified then.
func PlanTopic(tenant, site string) string { return "plan/" + tenant + "/" + site }

// LogTopic is notified when log lines of a plan arrive.
func LogTopic(planID string) string { return "logs/" + planID }

// FleetTopic is notified when a site of the tenant changes in a way a
// fleet overview shows: by the store whenever it notifies the site's
// PlanTopic or a plan finishes, and by the control plane after heartbeats that change a
// site's state and after action reports.
func FleetTopic(tenant string) string { return "fleet/" + tenant }

// Actor names who made a change, for the audit log.
type Actor struct {
	// Kind is one of the ActorKind constants.
	Kind ActorKind `json:"kind"`
	// ID identifies the actor within its kind: token ID, "tenant/site" for
	// an agent, component name for the system.
	ID string `json:"id"`
}

// ActorKind says what kind of principal an Actor is.
type ActorKind string

const (
	ActorAdmin  ActorKind = "admin"  // an admin API token or the local CLI
	ActorToken  ActorKind = "token"  // a tenant-scoped API token
	ActorAgent  ActorKind = "agent"  // an edge agent (mTLS identity)
	ActorSystem ActorKind = "system" // the control plane itself (reconciler, …)
	ActorEnroll ActorKind = "enroll" // an enrollment-token redemption
)

// String renders "kind:id".
func (a Actor) String() string { return string(a.Kind) + ":" + a.ID }

// Secret is a value that must not reach a log: it prints as "[redacted]".
type Secret string

// String hides the value.
func (Secret) String() string { return "[redacted]" }

// GoString hides the value from %#v.
func (Secret) GoString() string { return "[redacted]" }

// MarshalJSON hides the value from JSON encoders.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }

// Reveal returns the secret itself, for the one place that needs it.
func (s Secret) Reveal() string { return string(s) }

// Tenant is one customer of the installation.
type Tenant struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"` // display name; "" = ID
	CreatedAt time.Time `json:"createdAt"`
}

// ForgeKind names the commit-status writer of a repository.
type ForgeKind string

const (
	ForgeNone     ForgeKind = ""         // no statuses posted
	ForgeGitHub   ForgeKind = "github"   // GitHub (and GitHub Enterprise)
	ForgeGitea    ForgeKind = "gitea"    // Gitea and Forgejo
	ForgeGitLab   ForgeKind = "gitlab"   // GitLab
	ForgeGitNotes ForgeKind = "gitnotes" // git notes under refs/notes/nkudo
)

// Repository is a git source of one tenant's manifests.
type Repository struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	Name   string `json:"name"` // unique per tenant
	URL    string `json:"url"`
	Branch string `json:"branch"` // "" = the remote's default branch
	Path   string `json:"path"`   // directory inside the repository; "" = root
	// CredentialsRef names the tenant's Credential used to fetch ("" = none).
	CredentialsRef string `json:"credentialsRef,omitempty"`
	// HasWebhookSecret reports whether a webhook secret is set (see WebhookSecret).
	HasWebhookSecret bool `json:"hasWebhookSecret"`
	Suspended        bool `json:"suspended"` // true: reconcile paused, drift not repaired

	ForgeKind ForgeKind `json:"forgeKind,omitempty"`
	// ForgeAPIURL is the forge's API base ("" = the public default for the kind).
	ForgeAPIURL string `json:"forgeApiUrl,omitempty"`
	// ForgeProject is "owner/name" (GitHub, Gitea) or the project path or ID (GitLab).
	ForgeProject string `json:"forgeProject,omitempty"`
	// ForgeCredentialsRef names the tenant's Credential used to post statuses.
	ForgeCredentialsRef string `json:"forgeCredentialsRef,omitempty"`

	LastSeenCommit    string    `json:"lastSeenCommit,omitempty"`
	LastSeenAt        time.Time `json:"lastSeenAt,omitzero"`
	LastAppliedCommit string    `json:"lastAppliedCommit,omitempty"` // last valid commit in force
	LastAppliedAt     time.Time `json:"lastAppliedAt,omitzero"`
	LastError         string    `json:"lastError,omitempty"`
	LastErrorAt       time.Time `json:"lastErrorAt,omitzero"`
	CreatedAt         time.Time `json:"createdAt"`
	// Verify is the commit signature policy; its zero value verifies nothing.
	Verify VerifyPolicy `json:"verify,omitzero"`
	// DestructiveLabel is the pull-request label that accepts a plan that
	// deletes or replaces VMs ("" = DefaultDestructiveLabel).
	DestructiveLabel string `json:"destructiveLabel,omitempty"`
}

// DefaultDestructiveLabel is Repository.DestructiveLabel's default.
const DefaultDestructiveLabel = "nkudo/destructive-ok"

// AcceptLabel is the label that accepts destructive plans of the repository.
func (r Repository) AcceptLabel() string {
	if r.DestructiveLabel == "" {
		return DefaultDestructiveLabel
	}
	return r.DestructiveLabel
}

// VerifyMode says which commits a VerifyPolicy checks.
type VerifyMode string

// Verify modes.
const (
	// VerifyHead: the commit reconciled must be signed by a trusted key.
	VerifyHead VerifyMode = "head"
	// VerifyAll: every commit since the last verified one must be.
	VerifyAll VerifyMode = "all"
)

// VerifyPolicy is a repository's commit signature policy. Keys are public,
// so they are stored as they are. The store checks only Mode; the reconciler
// and the API parse the keys.
type VerifyPolicy struct {
	// Mode is "" (no verification), VerifyHead or VerifyAll.
	Mode VerifyMode `json:"mode,omitempty"`
	// AllowedSigners is git's gpg.ssh.allowedSignersFile text ("" = no SSH keys).
	AllowedSigners string `json:"allowedSigners,omitempty"`
	// GPGKeys is an armoured OpenPGP public key ring ("" = no OpenPGP keys).
	GPGKeys string `json:"gpgKeys,omitempty"`
}

// Enabled reports whether commits are verified at all.
func (p VerifyPolicy) Enabled() bool { return p.Mode != "" }

// RepositoryUpdate changes repository settings; nil fields are left as they are.
type RepositoryUpdate struct {
	Name                *string
	URL                 *string
	Branch              *string
	Path                *string
	CredentialsRef      *string
	WebhookSecret       *Secret // "" clears it
	Suspended           *bool
	ForgeKind           *ForgeKind
	ForgeAPIURL         *string
	ForgeProject        *string
	ForgeCredentialsRef *string
	// Verify replaces the commit signature policy (a zero policy turns
	// verification off).
	Verify *VerifyPolicy
	// DestructiveLabel names the label accepting destructive pull-request
	// plans ("" = the default).
	DestructiveLabel *string
}

// SiteDesired is the desired state of one site as last planned from a repository.
type SiteDesired struct {
	Site string `json:"site"`
	// Hash is the content hash of the site's documents ("" for a site
	// gone from git); with InventoryVersion it is the incremental key.
	Hash             string    `json:"hash"`
	InventoryVersion int64     `json:"inventoryVersion"`
	Commit           string    `json:"commit"`
	UpdatedAt        time.Time `json:"updatedAt"`
	// Documented reports whether Document and VMs were recorded (false
	// only for records older than the store's desired-state documents).
	// SiteDesired lists it but leaves Document and VMs empty; they are
	// read with DesiredState.
	Documented bool `json:"documented"`
	// Document is the site's Site document (nil: none in git).
	Document *model.Site `json:"document,omitempty"`
	// VMs are the site's VirtualMachine documents, ordered by name.
	VMs []model.VirtualMachine `json:"vms,omitempty"`
}

// SitePlanRecord is one site's entry in RecordSitePlans: its desired state
// and, when not nil, its plan.
type SitePlanRecord struct {
	Desired SiteDesired
	Plan    *model.Plan
}

// SitePlanResult is RecordSitePlans' answer for one record: RecordSitePlan's
// stored, or the error that kept the site from being recorded.
type SitePlanResult struct {
	Stored bool
	Err    error
}

// DesiredState is a site's desired state as the user API shows it: the
// record last planned, with the repository it came from.
type DesiredState struct {
	SiteDesired
	RepoID string `json:"repoId"`
	// AppliedCommit is the repository's last valid commit, the commit
	// whose desired state is in force.
	AppliedCommit string `json:"appliedCommit"`
}

// APIToken is a bearer token for people and the CLI. Its hash never leaves the store.
type APIToken struct {
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant,omitempty"` // "" for admin tokens
	Admin     bool      `json:"admin"`
	Name      string    `json:"name"` // free text ("ci", "alice's laptop")
	CreatedAt time.Time `json:"createdAt"`
	// ExpiresAt zero means the token does not expire.
	ExpiresAt  time.Time `json:"expiresAt,omitzero"`
	LastUsedAt time.Time `json:"lastUsedAt,omitzero"` // zero = never used
}

// EnrollmentToken is a one-time token that lets an agent enroll one site.
type EnrollmentToken struct {
	ID        string    `json:"id"` // public half of "id.secret"
	Tenant    string    `json:"tenant"`
	Site      string    `json:"site"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt"`
	UsedAt    time.Time `json:"usedAt,omitzero"` // zero = not redeemed
}

// Site is one edge location as the control plane knows it.
type Site struct {
	Tenant     string    `json:"tenant"`
	Name       string    `json:"name"`
	CreatedAt  time.Time `json:"createdAt"`
	EnrolledAt time.Time `json:"enrolledAt,omitzero"` // zero = never enrolled
	// CertSerial is the serial of the newest certificate issued to the agent.
	CertSerial string `json:"certSerial,omitempty"`
	// Epoch identifies this incarnation of the site: random, made when the
	// site is created ("" for sites created before epochs existed). A site
	// deleted and created again with the same name gets a new one, and no
	// certificate of the old one is valid for it.
	Epoch string `json:"epoch,omitempty"`
	// Facts is the host facts JSON of the last heartbeat (nil = none yet).
	Facts         json.RawMessage `json:"facts,omitempty"`
	LastHeartbeat time.Time       `json:"lastHeartbeat,omitzero"` // zero = never
	// HeartbeatInterval is the interval the agent was told to use (zero = unknown).
	HeartbeatInterval    time.Duration `json:"heartbeatInterval,omitempty"`
	InventoryVersion     int64         `json:"inventoryVersion"`
	NetBirdManagementURL string        `json:"netbirdManagementUrl,omitempty"`
	HasNetBirdSetupKey   bool          `json:"hasNetbirdSetupKey"`
}

// CertAuth is what authenticated a request for a certificate; the zero
// value checks nothing (an operator recording a certificate by hand).
type CertAuth struct {
	// Serial is the certificate a renewal presented.
	Serial string
	// EnrollmentToken is the ID of the token an enrollment redeemed.
	EnrollmentToken string
}

// RevokedSerial is one revoked agent certificate.
type RevokedSerial struct {
	Serial    string    `json:"serial"`
	Tenant    string    `json:"tenant"`
	Site      string    `json:"site"`
	RevokedAt time.Time `json:"revokedAt"`
}

// Heartbeat is one agent report.
type Heartbeat struct {
	Facts    json.RawMessage    // host facts; nil (or {}) keeps the stored facts
	VMs      []model.ObservedVM // the complete VM inventory
	Interval time.Duration      // the interval the agent was told to use (zero = keep)
	Time     time.Time          // when it arrived
}

// HeartbeatResult says what a heartbeat did to the inventory.
type HeartbeatResult struct {
	InventoryVersion int64
	Changed          bool // true when the VM set differed (the planner should look)
	// NetBirdSetupKey is the site's pending NetBird setup key (what
	// GetNetBirdPeer's SetupKey says), read by the heartbeat's own
	// statement so a heartbeat needs no second read; empty when none is
	// pending, or when it cannot be opened (logged; GetNetBirdPeer says why).
	NetBirdSetupKey Secret
}

// StoredPlan is a plan with its lifecycle (model.StoredPlan, the type the
// API serves). Actions is nil from ListPlans unless PlanFilter.WithActions.
type StoredPlan = model.StoredPlan

// ActionRecord is one action of a stored plan with its progress
// (model.ActionRecord).
type ActionRecord = model.ActionRecord

// PlanFilter selects plans in ListPlans; zero fields match everything.
type PlanFilter struct {
	Site        string
	Commit      string
	RepoID      string
	Status      model.PlanStatus
	Limit       int // 0 = 100
	WithActions bool
}

// ActionResult is an agent's report of an action (model.ActionResult, the
// type the agent sends); RecordActionResult takes the final ones.
type ActionResult = model.ActionResult

// ActionStart is one action an agent reports running, for StartActions.
type ActionStart struct {
	PlanID, ActionID string
	Time             time.Time // when it started
}

// ResultOutcome says what RecordActionResult did.
type ResultOutcome struct {
	New        bool             // false: the same result was already recorded
	PlanStatus model.PlanStatus // the plan's status after the call
}

// LogStream names where a log line came from (model.LogStream).
type LogStream = model.LogStream

const (
	StreamStdout = model.StreamStdout
	StreamStderr = model.StreamStderr
	StreamAgent  = model.StreamAgent // the agent's own messages about the action
)

// LogLine is one line of execution output (model.LogLine).
type LogLine = model.LogLine

// StatusState is a commit status state (model.StatusState, shared with
// the forge writers).
type StatusState = model.StatusState

const (
	StatePending = model.StatusPending
	StateSuccess = model.StatusSuccess
	StateFailure = model.StatusFailure
	StateError   = model.StatusError
)

// CommitStatus is one status context on one commit.
type CommitStatus struct {
	Tenant      string      `json:"tenant"`
	RepoID      string      `json:"repoId"`
	Commit      string      `json:"commit"`
	Context     string      `json:"context"` // "nkudo/validate", "nkudo/plan", "nkudo/apply"
	State       StatusState `json:"state"`
	Description string      `json:"description,omitempty"`
	TargetURL   string      `json:"targetUrl,omitempty"`
	UpdatedAt   time.Time   `json:"updatedAt"`
	Posted      bool        `json:"posted"`
	PostedAt    time.Time   `json:"postedAt,omitzero"`
}

// Preview is the plan a pull request's head would produce, never applied
// (model.Preview, the type the API serves).
type Preview = model.Preview

// PreviewState is the state of a previewed pull request (open, closed or
// merged; see SetPreviewState).
type PreviewState = model.PreviewState

// Preview states.
const (
	PreviewOpen   = model.PreviewOpen
	PreviewClosed = model.PreviewClosed
	PreviewMerged = model.PreviewMerged
)

// AuditEvent is one entry of the append-only audit log.
type AuditEvent struct {
	Seq    int64     `json:"seq"` // 1, 2, 3, … without gaps
	Time   time.Time `json:"time"`
	Tenant string    `json:"tenant,omitempty"` // "" for installation-wide events
	Actor  string    `json:"actor"`            // Actor.String()
	Action string    `json:"action"`           // "site.create", "plan.store", …
	Object string    `json:"object,omitempty"` // "site/edge-1", "plan/<id>", …
	// Detail is a compact JSON object with event specifics (never secrets).
	Detail   json.RawMessage `json:"detail,omitempty"`
	PrevHash string          `json:"prevHash"` // Hash of event Seq-1 ("" for the first)
	Hash     string          `json:"hash"`     // see AuditHash
	// MAC is AuditKey.MAC(Hash) ("" for events before the chain was keyed).
	MAC string `json:"mac,omitempty"`
}

// AuditVerification is the outcome of VerifyAudit.
type AuditVerification struct {
	Events int64 `json:"events"` // how many events were checked
	// FirstBroken is the Seq of the first event whose link is broken (0 =
	// the chain is intact). For a deleted event it is the Seq that is missing.
	FirstBroken int64  `json:"firstBroken,omitempty"`
	Reason      string `json:"reason,omitempty"`
	// KeyedFrom is the Seq of the audit.keyed event where the keyed chain
	// starts (0 = no event carries a MAC).
	KeyedFrom int64 `json:"keyedFrom,omitempty"`
	// KeyChecked says the MACs were checked with the audit key; false when
	// the store was opened without it (then only the hashes were checked,
	// which someone with database access can recompute).
	KeyChecked bool `json:"keyChecked"`
	// HeadHash and HeadMAC are the chain head's hash and MAC: exported
	// elsewhere as a checkpoint, they let a later check find a truncation
	// below them, which the chain alone cannot show.
	HeadHash string `json:"headHash,omitempty"`
	HeadMAC  string `json:"headMac,omitempty"`
}

// OK reports whether the chain is intact.
func (v AuditVerification) OK() bool { return v.FirstBroken == 0 }
