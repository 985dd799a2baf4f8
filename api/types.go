package api

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nkudo/nkudo/model"
)

// Duration is a time.Duration that travels as a Go duration string ("30s").
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string such as "1m30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string such as "90s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// ---- Agent: enrollment and renewal ----

// EnrollRequest redeems a one-time enrollment token for a client certificate.
type EnrollRequest struct {
	// Token is the "id.secret" enrollment token.
	Token string `json:"token"`
	// CSR is a PEM certificate request for an ECDSA P-256 key. Its names are
	// ignored: the identity comes from the token.
	CSR string `json:"csr"`
	// Tenant and Site, when set, must match the token's binding; a mismatch is
	// refused without consuming the token.
	Tenant string `json:"tenant,omitempty"`
	Site   string `json:"site,omitempty"`
	// Hostname is informational (audit log).
	Hostname        string `json:"hostname,omitempty"`
	ProtocolVersion int    `json:"protocolVersion"`
}

// RenewRequest asks for a fresh certificate for the identity of the current one.
type RenewRequest struct {
	CSR             string `json:"csr"`
	ProtocolVersion int    `json:"protocolVersion"`
}

// CertResponse answers enroll and renew.
type CertResponse struct {
	Tenant string `json:"tenant"`
	Site   string `json:"site"`
	// Certificate is the PEM client certificate; CA is the PEM CA bundle to
	// trust for the control plane (and to present the certificate under).
	Certificate string    `json:"certificate"`
	CA          string    `json:"ca"`
	NotAfter    time.Time `json:"notAfter"`
	// NetBird is the site's NetBird configuration, nil when none is set.
	NetBird *NetBirdConfig `json:"netbird,omitempty"`
	// HeartbeatInterval is when to send the first heartbeat.
	HeartbeatInterval Duration `json:"heartbeatInterval"`
	ProtocolVersion   int      `json:"protocolVersion"`
}

// NetBirdConfig is what the agent needs to join the site to NetBird. The
// setup key is a secret: agents must not log it.
type NetBirdConfig struct {
	ManagementURL string `json:"managementUrl,omitempty"`
	SetupKey      string `json:"setupKey,omitempty"`
}

// ---- Agent: heartbeat ----

// HeartbeatRequest carries host facts and the complete VM inventory.
// Unknown fields are rejected.
type HeartbeatRequest struct {
	ProtocolVersion int                `json:"protocolVersion"`
	AgentVersion    string             `json:"agentVersion,omitempty"`
	Facts           HostFacts          `json:"facts"`
	VMs             []model.ObservedVM `json:"vms"`
}

// HostFacts describe the edge host. Zero values mean "not known".
type HostFacts struct {
	Hostname      string `json:"hostname,omitempty"`
	OS            string `json:"os,omitempty"`
	Arch          string `json:"arch,omitempty"`
	KernelVersion string `json:"kernelVersion,omitempty"`
	CPUs          int    `json:"cpus,omitempty"`
	MemoryMiB     int64  `json:"memoryMiB,omitempty"`
	// DiskTotalGiB and DiskFreeGiB describe the filesystem holding VM disks.
	DiskTotalGiB float64 `json:"diskTotalGiB,omitempty"`
	DiskFreeGiB  float64 `json:"diskFreeGiB,omitempty"`
	// KVM reports whether /dev/kvm is usable.
	KVM        bool            `json:"kvm"`
	Hypervisor HypervisorFacts `json:"hypervisor,omitzero"`
	NetBird    NetBirdFacts    `json:"netbird,omitzero"`
	// BootTime is when the host booted (zero = unknown).
	BootTime time.Time `json:"bootTime,omitzero"`
	// Labels are free-form facts the agent wants to show.
	Labels map[string]string `json:"labels,omitempty"`

	// The fields below are sent only to a control plane that lists
	// FeatureTypedFacts (see HeartbeatResponse.Features); to an older one the
	// agent sends them as the legacy labels (LegacyLabels).

	// CPUModel is the CPU's model name ("" = unknown).
	CPUModel string `json:"cpuModel,omitempty"`
	// AgentVersion is the agent's release version ("" = unknown).
	AgentVersion string `json:"agentVersion,omitempty"`
	// KVMError says why /dev/kvm is not usable when KVM is false.
	KVMError string `json:"kvmError,omitempty"`
	// Unknown names each fact the agent could not read, with the reason
	// (fact → reason). Fact names are the JSON field names of this struct
	// ("cpuModel", "memoryMiB", "bootTime", …; "disk" for both disk fields).
	Unknown map[string]string `json:"unknown,omitempty"`
	// OutboxDropped counts results and log lines the agent dropped, over its
	// lifetime, because its on-disk buffer was full during an outage.
	OutboxDropped int64 `json:"outboxDropped,omitempty"`
	// AgeRecipient is the site's age X25519 public key ("age1…"); secrets
	// encrypted to it can be read only on the site (docs/secrets.md).
	AgeRecipient string `json:"ageRecipient,omitempty"`
}

// FeatureTypedFacts, listed in HeartbeatResponse.Features, says that the
// control plane accepts HostFacts' typed fields CPUModel, AgentVersion,
// KVMError, Unknown and OutboxDropped.
const FeatureTypedFacts = "typedFacts"

// Label keys under which agents that predate the typed fields (and agents
// talking to a control plane that predates them) report those facts.
const (
	LegacyLabelCPUModel      = "cpuModel"
	LegacyLabelAgentVersion  = "agentVersion"
	LegacyLabelKVMError      = "kvmError"
	LegacyLabelOutboxDropped = "outboxDropped"
	LegacyLabelAgeRecipient  = "ageRecipient"
	// LegacyLabelUnknownPrefix + fact holds the reason the fact is unknown.
	LegacyLabelUnknownPrefix = "unknown."
)

// LegacyLabels returns f with the typed fields moved into Labels under the
// legacy keys, the form a control plane without FeatureTypedFacts accepts.
func (f HostFacts) LegacyLabels() HostFacts {
	if f.CPUModel == "" && f.AgentVersion == "" && f.KVMError == "" && len(f.Unknown) == 0 && f.OutboxDropped == 0 && f.AgeRecipient == "" {
		return f
	}
	labels := make(map[string]string, len(f.Labels)+len(f.Unknown)+4)
	maps.Copy(labels, f.Labels)
	set := func(k, v string) {
		if v != "" {
			labels[k] = v
		}
	}
	set(LegacyLabelCPUModel, f.CPUModel)
	set(LegacyLabelAgentVersion, f.AgentVersion)
	set(LegacyLabelKVMError, f.KVMError)
	set(LegacyLabelAgeRecipient, f.AgeRecipient)
	if f.OutboxDropped != 0 {
		labels[LegacyLabelOutboxDropped] = strconv.FormatInt(f.OutboxDropped, 10)
	}
	for fact, why := range f.Unknown {
		labels[LegacyLabelUnknownPrefix+fact] = why
	}
	f.Labels = labels
	f.CPUModel, f.AgentVersion, f.KVMError, f.Unknown, f.OutboxDropped = "", "", "", nil, 0
	f.AgeRecipient = ""
	return f
}

// Typed returns f with the legacy labels moved into the typed fields (a
// typed field already set wins), so that facts from any agent read alike.
// A legacy outboxDropped label that is not a number stays a label.
func (f HostFacts) Typed() HostFacts {
	if len(f.Labels) == 0 {
		return f
	}
	labels := make(map[string]string, len(f.Labels))
	var unknown map[string]string
	for k, v := range f.Labels {
		switch {
		case k == LegacyLabelCPUModel:
			f.CPUModel = cmp.Or(f.CPUModel, v)
		case k == LegacyLabelAgentVersion:
			f.AgentVersion = cmp.Or(f.AgentVersion, v)
		case k == LegacyLabelKVMError:
			f.KVMError = cmp.Or(f.KVMError, v)
		case k == LegacyLabelAgeRecipient:
			f.AgeRecipient = cmp.Or(f.AgeRecipient, v)
		case k == LegacyLabelOutboxDropped:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				labels[k] = v
			} else if f.OutboxDropped == 0 {
				f.OutboxDropped = n
			}
		case strings.HasPrefix(k, LegacyLabelUnknownPrefix) && len(k) > len(LegacyLabelUnknownPrefix):
			if unknown == nil {
				unknown = map[string]string{}
			}
			unknown[k[len(LegacyLabelUnknownPrefix):]] = v
		default:
			labels[k] = v
		}
	}
	if len(unknown) > 0 {
		merged := make(map[string]string, len(unknown)+len(f.Unknown))
		maps.Copy(merged, unknown)
		maps.Copy(merged, f.Unknown) // typed reasons win
		f.Unknown = merged
	}
	if len(labels) == 0 {
		labels = nil
	}
	f.Labels = labels
	return f
}

// HypervisorFacts describe the hypervisor binary found on the host.
type HypervisorFacts struct {
	Name    string `json:"name,omitempty"` // "cloud-hypervisor" or "qemu"
	Version string `json:"version,omitempty"`
	Path    string `json:"path,omitempty"`
	Error   string `json:"error,omitempty"` // why it is not usable, if it is not
}

// NetBirdFacts describe the NetBird client state.
type NetBirdFacts struct {
	Installed           bool   `json:"installed"`
	State               string `json:"state,omitempty"` // "Connected", "NeedsLogin", …
	IP                  string `json:"ip,omitempty"`
	FQDN                string `json:"fqdn,omitempty"`
	ManagementConnected bool   `json:"managementConnected"`
	PeersConnected      int    `json:"peersConnected,omitempty"`
	PeersTotal          int    `json:"peersTotal,omitempty"`
	Error               string `json:"error,omitempty"`
}

// HeartbeatResponse tells the agent when to come back.
type HeartbeatResponse struct {
	// NextHeartbeat is the interval to wait before the next heartbeat; it
	// grows with the fleet so the server's heartbeat rate stays bounded.
	NextHeartbeat Duration `json:"nextHeartbeat"`
	// InventoryVersion is the version the server holds after this report.
	InventoryVersion int64     `json:"inventoryVersion"`
	ServerTime       time.Time `json:"serverTime"`
	// RenewAfter is when the agent should renew its certificate (zero = unknown).
	RenewAfter time.Time `json:"renewAfter,omitzero"`
	// Features lists additions to the agent requests this control plane
	// accepts within the current ProtocolVersion (FeatureTypedFacts). An
	// agent sends such an addition only after a heartbeat answer listed it;
	// empty from a control plane that predates the list.
	Features []string `json:"features,omitempty"`
	// NetBird, when set, is a setup key the control plane minted for this
	// site (its tenant has a NetBird integration) and the management URL
	// to join with: an agent whose NetBird client is not joined with it
	// runs `netbird up` again, without a restart. A secret: never logged.
	NetBird *NetBirdConfig `json:"netbird,omitempty"`
}

// Has reports whether the answer lists feature.
func (r HeartbeatResponse) Has(feature string) bool { return slices.Contains(r.Features, feature) }

// ---- Agent: plans, results, logs ----

// AgentPlan is the long-poll answer: the site's active plan, or (only to
// Client.WatchPlan) the plan the agent named in after, with Status
// superseded, when that plan ended without an active successor.
type AgentPlan struct {
	Plan   model.Plan       `json:"plan"`
	Status model.PlanStatus `json:"status"`
	// SupersededBy and SupersededByCommit are set on a superseded plan: the
	// plan that replaced it ("" when it was cancelled without one) and the
	// commit whose desired state ended it.
	SupersededBy       string `json:"supersededBy,omitempty"`
	SupersededByCommit string `json:"supersededByCommit,omitempty"`
}

// ResultsRequest reports one or more action outcomes. Results are idempotent:
// the same result twice is accepted once.
type ResultsRequest struct {
	Results []ActionResult `json:"results"`
}

// ActionResult is the outcome of one action (model.ActionResult, the type
// the store records). Status "running" marks an action started;
// succeeded, failed and skipped are final.
type ActionResult = model.ActionResult

// ResultsResponse says what happened to each reported result, in order.
type ResultsResponse struct {
	Results []ResultAck `json:"results"`
}

// ResultAck acknowledges one result.
type ResultAck struct {
	ActionID string `json:"actionId"`
	// New is false when the same result had been recorded before.
	New bool `json:"new"`
	// PlanStatus is the plan's status after the result.
	PlanStatus model.PlanStatus `json:"planStatus,omitempty"`
}

// LogStream names where a log line came from (model.LogStream).
type LogStream = model.LogStream

const (
	StreamStdout = model.StreamStdout
	StreamStderr = model.StreamStderr
	StreamAgent  = model.StreamAgent
)

// LogLine is one line of execution output (model.LogLine, the type the
// store keeps). Seq is per plan, from 1, assigned by the agent.
type LogLine = model.LogLine

// LogsRequest is an ordered batch of lines (of one or more plans of the site).
type LogsRequest struct {
	Lines []LogLine `json:"lines"`
}

// LogsResponse reports what the batch did. Lines already stored are counted
// as duplicates and dropped; missing sequence numbers are reported as gaps so
// the agent can resend them.
type LogsResponse struct {
	Accepted   int      `json:"accepted"`
	Duplicates int      `json:"duplicates"`
	Gaps       []LogGap `json:"gaps,omitempty"`
	// Truncated counts lines cut to the server's line limit (stored with
	// a marker saying how much was cut).
	Truncated int `json:"truncated,omitempty"`
	// Dropped counts lines not stored because a log quota is used up.
	// They are answered, not refused: sending them again changes nothing.
	Dropped int `json:"dropped,omitempty"`
	// Closed lists the plans whose logs reached a quota: every later line
	// of them is dropped, so an agent stops sending them.
	Closed []LogClosed `json:"closed,omitempty"`
}

// LogClosed names a plan whose log reached a quota.
type LogClosed struct {
	PlanID string `json:"planId"`
	// Quota is "plan" (the plan's own log quota) or "site" (the site's).
	Quota      string `json:"quota"`
	LimitBytes int64  `json:"limitBytes"`
}

// LogGap is a closed range of missing sequence numbers of one plan.
type LogGap struct {
	PlanID string `json:"planId"`
	From   int64  `json:"from"`
	To     int64  `json:"to"`
}

// ---- User: tenants and tokens ----

// Tenant is one customer of the installation.
type Tenant struct {
	ID        string    `json:"id"`
	Name      string    `json:"name,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// CreateTenantRequest creates a tenant; ID is a DNS label.
type CreateTenantRequest struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// CreateTokenRequest creates an API token: for Tenant, or admin-scoped when Admin is set.
type CreateTokenRequest struct {
	Tenant string   `json:"tenant,omitempty"`
	Admin  bool     `json:"admin,omitempty"`
	Name   string   `json:"name,omitempty"`
	TTL    Duration `json:"ttl,omitempty"` // zero = does not expire
}

// APIToken describes a token (never its secret).
type APIToken struct {
	ID         string    `json:"id"`
	Tenant     string    `json:"tenant,omitempty"`
	Admin      bool      `json:"admin"`
	Name       string    `json:"name,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	ExpiresAt  time.Time `json:"expiresAt,omitzero"`
	LastUsedAt time.Time `json:"lastUsedAt,omitzero"`
}

// CreateTokenResponse carries the token itself, shown this once.
type CreateTokenResponse struct {
	APIToken
	Token string `json:"token"`
}

// ---- User: repositories ----

// Repository is a tenant's git source. The webhook secret is never returned.
type Repository struct {
	ID                string    `json:"id"`
	Tenant            string    `json:"tenant"`
	Name              string    `json:"name"`
	URL               string    `json:"url"`
	Branch            string    `json:"branch,omitempty"`
	Path              string    `json:"path,omitempty"`
	HasWebhookSecret  bool      `json:"hasWebhookSecret"`
	Suspended         bool      `json:"suspended"`
	ForgeKind         string    `json:"forgeKind,omitempty"`
	ForgeAPIURL       string    `json:"forgeApiUrl,omitempty"`
	ForgeProject      string    `json:"forgeProject,omitempty"`
	LastSeenCommit    string    `json:"lastSeenCommit,omitempty"`
	LastAppliedCommit string    `json:"lastAppliedCommit,omitempty"`
	LastError         string    `json:"lastError,omitempty"`
	CreatedAt         time.Time `json:"createdAt"`
	// WebhookURL is where the forge should deliver push and pull-request events.
	WebhookURL string `json:"webhookUrl,omitempty"`
	// CredentialsRef and ForgeCredentialsRef name the tenant's credentials
	// the repository fetches and posts statuses with ("" = none).
	CredentialsRef      string `json:"credentialsRef,omitempty"`
	ForgeCredentialsRef string `json:"forgeCredentialsRef,omitempty"`
	// Verify is the commit signature policy (absent: commits are not verified).
	Verify *VerifyPolicy `json:"verify,omitempty"`
	// DestructiveLabel is the pull-request label that accepts a plan
	// deleting or replacing VMs (absent: DefaultDestructiveLabel).
	DestructiveLabel string `json:"destructiveLabel,omitempty"`
}

// DefaultDestructiveLabel accepts destructive pull-request plans of a
// repository that names no label of its own.
const DefaultDestructiveLabel = "nkudo/destructive-ok"

// Commit signature verification modes (VerifyPolicy.Mode).
const (
	VerifyHead = "head" // the commit reconciled must be signed by a trusted key
	VerifyAll  = "all"  // and so must every commit since the last applied one
)

// VerifyPolicy says which commits of a repository may reach its sites: only
// those signed by one of its trusted keys. The keys are public.
type VerifyPolicy struct {
	// Mode is VerifyHead or VerifyAll ("" with no keys turns verification off).
	Mode string `json:"mode,omitempty"`
	// AllowedSigners is git's gpg.ssh.allowedSignersFile text (SSH keys).
	AllowedSigners string `json:"allowedSigners,omitempty"`
	// GPGKeys is an armoured OpenPGP public key ring.
	GPGKeys string `json:"gpgKeys,omitempty"`
}

// CreateRepoRequest registers a repository. WebhookSecret is mandatory.
type CreateRepoRequest struct {
	Name           string `json:"name"`
	URL            string `json:"url"`
	Branch         string `json:"branch,omitempty"`
	Path           string `json:"path,omitempty"`
	WebhookSecret  string `json:"webhookSecret"`
	CredentialsRef string `json:"credentialsRef,omitempty"`
	ForgeKind      string `json:"forgeKind,omitempty"`
	ForgeAPIURL    string `json:"forgeApiUrl,omitempty"`
	ForgeProject   string `json:"forgeProject,omitempty"`
	// ForgeCredentialsRef names where the status-posting token lives.
	ForgeCredentialsRef string `json:"forgeCredentialsRef,omitempty"`
}

// UpdateRepoRequest changes settings; nil fields stay.
type UpdateRepoRequest struct {
	Branch        *string `json:"branch,omitempty"`
	Path          *string `json:"path,omitempty"`
	WebhookSecret *string `json:"webhookSecret,omitempty"`
	Suspended     *bool   `json:"suspended,omitempty"`
	// CredentialsRef and ForgeCredentialsRef name credentials of the
	// repository's tenant ("" = none).
	CredentialsRef      *string `json:"credentialsRef,omitempty"`
	ForgeCredentialsRef *string `json:"forgeCredentialsRef,omitempty"`
	// Verify replaces the commit signature policy; an empty policy ({})
	// turns verification off.
	Verify *VerifyPolicy `json:"verify,omitempty"`
	// DestructiveLabel names the pull-request label that accepts plans
	// deleting or replacing VMs ("" = DefaultDestructiveLabel).
	DestructiveLabel *string `json:"destructiveLabel,omitempty"`
}

// Credential kinds (Credential.Kind, PutCredentialRequest.Kind).
const (
	CredentialToken  = "token"   // a bearer token (git: basic auth as x-access-token)
	CredentialBasic  = "basic"   // "user:password"
	CredentialSSHKey = "ssh-key" // a PEM private key, with known_hosts
)

// Credential is one of a tenant's credentials as listed: never its secret.
type Credential struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Host is the only host the credential is sent to.
	Host string `json:"host"`
	// Fingerprint is "sha256:" and the first 16 hex digits of the
	// secret's SHA-256 (compare with `sha256sum`).
	Fingerprint   string    `json:"fingerprint"`
	HasKnownHosts bool      `json:"hasKnownHosts,omitempty"`
	CreatedAt     time.Time `json:"createdAt"`
	UpdatedAt     time.Time `json:"updatedAt"`
}

// PutCredentialRequest creates or replaces a credential (PUT
// /v1/credentials/{name}). The secret is never returned by any call.
type PutCredentialRequest struct {
	Kind   string `json:"kind"`   // CredentialToken, CredentialBasic or CredentialSSHKey
	Secret string `json:"secret"` // the token, "user:password" or the PEM key
	// Host is the host (or host:port) the credential may be sent to.
	Host string `json:"host"`
	// KnownHosts pins the SSH host keys (known_hosts format; ssh-key only).
	KnownHosts string `json:"knownHosts,omitempty"`
}

// String hides the secret when a request is printed.
func (r PutCredentialRequest) String() string {
	return fmt.Sprintf("{kind:%s host:%s secret:[redacted]}", r.Kind, r.Host)
}

// NetBirdIntegration is a tenant's NetBird management API as shown: never
// its token, which lives in the tenant credential Credential.
type NetBirdIntegration struct {
	URL         string `json:"url"`
	Credential  string `json:"credential"`
	Fingerprint string `json:"fingerprint"` // of the token, as Credential.Fingerprint
	// Groups is how many groups the account had when the token was
	// checked (in the answer to a set only).
	Groups    int       `json:"groups,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// SetNetBirdRequest sets the tenant's NetBird management API (PUT
// /v1/netbird). The server checks the token with GET /api/groups before it
// stores anything; the token becomes the token credential Credential
// ("" = "netbird") bound to the URL's host.
type SetNetBirdIntegrationRequest struct {
	URL        string `json:"url"`
	Token      string `json:"token"`
	Credential string `json:"credential,omitempty"`
}

// String hides the token when a request is printed.
func (r SetNetBirdIntegrationRequest) String() string {
	return fmt.Sprintf("{url:%s credential:%s token:[redacted]}", r.URL, r.Credential)
}

// ReconcileRequest asks for a reconcile of a ref ("" = the configured branch).
type ReconcileRequest struct {
	Ref string `json:"ref,omitempty"`
}

// TriggerResult is what a reconcile trigger did.
type TriggerResult struct {
	RepoID string `json:"repoId"`
	Ref    string `json:"ref,omitempty"`
	Commit string `json:"commit,omitempty"`
	// Queued is true when the reconcile runs asynchronously.
	Queued bool `json:"queued"`
	// Summary is the plan summary, when the reconcile ran synchronously.
	Summary string `json:"summary,omitempty"`
	Message string `json:"message,omitempty"`
}

// CommitStatus is one status context of one commit.
type CommitStatus struct {
	RepoID      string    `json:"repoId"`
	Commit      string    `json:"commit"`
	Context     string    `json:"context"`
	State       string    `json:"state"`
	Description string    `json:"description,omitempty"`
	TargetURL   string    `json:"targetUrl,omitempty"`
	UpdatedAt   time.Time `json:"updatedAt"`
	Posted      bool      `json:"posted"`
}

// Preview is the plan a pull request's head would produce (model.Preview,
// the type the store keeps).
type Preview = model.Preview

// Pull request states (Preview.State).
const (
	PreviewOpen   = model.PreviewOpen
	PreviewClosed = model.PreviewClosed
	PreviewMerged = model.PreviewMerged
)

// ---- User: sites ----

// Site is an edge location with its agent's last report.
type Site struct {
	Tenant     string    `json:"tenant"`
	Name       string    `json:"name"`
	CreatedAt  time.Time `json:"createdAt"`
	EnrolledAt time.Time `json:"enrolledAt,omitzero"`
	CertSerial string    `json:"certSerial,omitempty"`
	Revoked    bool      `json:"revoked"`
	// Facts is nil until the first heartbeat.
	Facts         *HostFacts `json:"facts,omitempty"`
	LastHeartbeat time.Time  `json:"lastHeartbeat,omitzero"`
	// HeartbeatAge is the time since the last heartbeat (zero when never).
	HeartbeatAge Duration `json:"heartbeatAge,omitempty"`
	// HeartbeatInterval is the interval the agent was told to use.
	HeartbeatInterval Duration `json:"heartbeatInterval,omitempty"`
	// Online is true when the last heartbeat is within interval plus grace.
	Online               bool   `json:"online"`
	InventoryVersion     int64  `json:"inventoryVersion"`
	NetBirdManagementURL string `json:"netbirdManagementUrl,omitempty"`
	// NetBirdConfigured says whether a setup key is set; the key is never returned.
	NetBirdConfigured bool `json:"netbirdConfigured"`
	// NetBirdSync is how the control plane manages the site's NetBird peer
	// (nil: its tenant has no NetBird integration or the Site no netbird
	// section yet).
	NetBirdSync *NetBirdSync `json:"netbirdSync,omitempty"`
}

// NetBirdSync is the state of the control plane's management of a site's
// NetBird peer. Never the setup key.
type NetBirdSync struct {
	PeerID string   `json:"peerId,omitempty"`
	Groups []string `json:"groups"`
	// KeyPending is true while a minted setup key waits for the agent.
	KeyPending bool `json:"keyPending"`
	// LastChange is the last membership change ("+a -b"), drift included.
	LastChange string    `json:"lastChange,omitempty"`
	LastError  string    `json:"lastError,omitempty"`
	UpdatedAt  time.Time `json:"updatedAt"`
}

// CreateSiteRequest registers a site; Name is a DNS label.
type CreateSiteRequest struct {
	Name string `json:"name"`
}

// SetNetBirdRequest sets the site's NetBird management URL and setup key.
// An empty SetupKey clears it.
type SetNetBirdRequest struct {
	ManagementURL string `json:"managementUrl"`
	SetupKey      string `json:"setupKey"`
}

// RevokeResponse names the revoked certificate serial.
type RevokeResponse struct {
	Site   string `json:"site"`
	Serial string `json:"serial"`
}

// CreateEnrollmentTokenRequest creates a one-time token for a site.
type CreateEnrollmentTokenRequest struct {
	// TTL is how long the token stays valid; zero = the server default (1h).
	TTL Duration `json:"ttl,omitempty"`
}

// EnrollmentToken is returned once, at creation.
type EnrollmentToken struct {
	ID            string    `json:"id"`
	Tenant        string    `json:"tenant"`
	Site          string    `json:"site"`
	Token         string    `json:"token"`
	ExpiresAt     time.Time `json:"expiresAt"`
	CAFingerprint string    `json:"caFingerprint"`
	// Command is the full command to run on the edge host.
	Command string `json:"command"`
}

// SiteVMs compares desired and actual VMs of a site.
type SiteVMs struct {
	Site             string `json:"site"`
	Reported         bool   `json:"reported"`
	InventoryVersion int64  `json:"inventoryVersion"`
	// DesiredKnown is false when no desired state is available (no reconciler,
	// or the site's repository was never reconciled).
	DesiredKnown  bool     `json:"desiredKnown"`
	DesiredCommit string   `json:"desiredCommit,omitempty"`
	VMs           []VMView `json:"vms"`
}

// VMView is one VM, desired and/or actual.
type VMView struct {
	Name    string            `json:"name"`
	Desired *model.VMSpec     `json:"desired,omitempty"`
	Actual  *model.ObservedVM `json:"actual,omitempty"`
	// InSync is true when the actual VM matches the desired spec and state.
	InSync bool `json:"inSync"`
}

// ---- User: plans, logs, audit ----

// Plan is a stored plan with its lifecycle and actions (model.StoredPlan,
// the type the store returns).
type Plan = model.StoredPlan

// Action is one action of a stored plan with its progress
// (model.ActionRecord).
type Action = model.ActionRecord

// LogPage is a page of a plan's log lines. Gaps lists missing sequence numbers.
type LogPage struct {
	Lines []LogLine `json:"lines"`
	Gaps  []LogGap  `json:"gaps,omitempty"`
	// Next, when not zero, is the cursor of the next page: the page was cut
	// by its line or byte bound, and more lines follow after=Next.
	Next int64 `json:"next,omitempty"`
	// Dropped, when set, says the plan's log reached a quota and how much
	// the server did not store after its last line.
	Dropped *LogDropped `json:"dropped,omitempty"`
}

// LogDropped counts the lines of a plan the server did not store.
type LogDropped struct {
	Lines int64  `json:"lines"`
	Bytes int64  `json:"bytes"`
	Quota string `json:"quota"` // "plan" or "site"
}

// AuditEvent is one entry of the hash-chained audit log.
type AuditEvent struct {
	Seq      int64           `json:"seq"`
	Time     time.Time       `json:"time"`
	Tenant   string          `json:"tenant,omitempty"`
	Actor    string          `json:"actor"`
	Action   string          `json:"action"`
	Object   string          `json:"object,omitempty"`
	Detail   json.RawMessage `json:"detail,omitempty"`
	PrevHash string          `json:"prevHash"`
	Hash     string          `json:"hash"`
	// MAC is the event's HMAC under the server's audit key ("" before the
	// chain was keyed).
	MAC string `json:"mac,omitempty"`
}

// AuditVerification is the result of recomputing the audit hash chain.
type AuditVerification struct {
	// Events is how many events were checked.
	Events int64 `json:"events"`
	// OK is true when the chain is intact.
	OK bool `json:"ok"`
	// FirstBroken is the Seq of the first edited, inserted or missing event (0 when OK).
	FirstBroken int64  `json:"firstBroken,omitempty"`
	Reason      string `json:"reason,omitempty"`
	// KeyedFrom is the Seq of the event where the keyed chain starts (0 =
	// no event carries a MAC under the server's audit key).
	KeyedFrom int64 `json:"keyedFrom,omitempty"`
	// KeyChecked says the server checked the MACs with its audit key (false:
	// only the hashes, which anyone who can write the database can recompute).
	KeyChecked bool `json:"keyChecked"`
	// HeadHash and HeadMAC are the newest event's hash and MAC (the chain
	// head): saved elsewhere as a checkpoint, they let a later verification
	// notice the chain was truncated below them.
	HeadHash string `json:"headHash,omitempty"`
	HeadMAC  string `json:"headMac,omitempty"`
}

// Health is the body of /healthz and /readyz.
type Health struct {
	Status string `json:"status"` // "ok" or "unavailable"
	Error  string `json:"error,omitempty"`
}

// Image is a content-addressed image (kernel, initramfs, firmware, disk)
// a tenant pushed to the control plane.
type Image struct {
	SHA256 string `json:"sha256"` // 64 lower-case hex digits
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	// URL is where the tenant's agents fetch it (over their mTLS
	// connection): put it with SHA256 in a manifest's image, kernel,
	// initramfs or firmware.
	URL          string    `json:"url"`
	CreatedAt    time.Time `json:"createdAt"`
	ReferencedAt time.Time `json:"referencedAt,omitzero"` // last seen in a manifest; zero = never
	// Missing is true when the record exists but its file is gone from the
	// control plane's image store (a lost data dir): push the file again.
	Missing bool `json:"missing,omitempty"`
}

// PushImageResponse is the answer to a push.
type PushImageResponse struct {
	Image
	// Created is false when the tenant already had the image.
	Created bool `json:"created"`
}

// DashboardSignInLink is a one-time link that signs a browser in to the
// dashboard as the token that asked for it: single-use, valid until
// ExpiresAt, carrying a code rather than the token.
type DashboardSignInLink struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expiresAt"`
}
