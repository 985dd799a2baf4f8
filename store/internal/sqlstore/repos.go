package sqlstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

const repoCols = `id, tenant, name, url, branch, path, credentials_ref, webhook_secret <> '', suspended,
	forge_kind, forge_api_url, forge_project, forge_credentials_ref,
	last_seen_commit, last_seen_at, last_applied_commit, last_applied_at, last_error, last_error_at, created_at,
	verify_mode, verify_ssh, verify_gpg, destructive_label`

func scanRepo(r Row) (store.Repository, error) {
	var p store.Repository
	var kind, mode string
	var seen, applied, errAt, created int64
	err := r.Scan(&p.ID, &p.Tenant, &p.Name, &p.URL, &p.Branch, &p.Path, &p.CredentialsRef, &p.HasWebhookSecret, &p.Suspended,
		&kind, &p.ForgeAPIURL, &p.ForgeProject, &p.ForgeCredentialsRef,
		&p.LastSeenCommit, &seen, &p.LastAppliedCommit, &applied, &p.LastError, &errAt, &created,
		&mode, &p.Verify.AllowedSigners, &p.Verify.GPGKeys, &p.DestructiveLabel)
	p.ForgeKind = store.ForgeKind(kind)
	p.Verify.Mode = store.VerifyMode(mode)
	p.LastSeenAt, p.LastAppliedAt, p.LastErrorAt, p.CreatedAt = tm(seen), tm(applied), tm(errAt), tm(created)
	return p, err
}

// repoAudit is the audit detail of a repository: its settings, never the secret.
func repoAudit(p store.Repository) map[string]any {
	return map[string]any{
		"name": p.Name, "url": p.URL, "branch": p.Branch, "path": p.Path, "suspended": p.Suspended,
		"forgeKind": p.ForgeKind, "hasWebhookSecret": p.HasWebhookSecret,
		"verifyMode": p.Verify.Mode, "verifyKeys": verifyKeysDigest(p.Verify),
		"destructiveLabel": p.DestructiveLabel,
	}
}

// checkLabel bounds a destructive label: forges limit label names, and one
// that could never exist would lock every destructive pull request out.
func checkLabel(l string) error {
	if len(l) > 100 || strings.TrimSpace(l) != l || strings.ContainsFunc(l, unicode.IsControl) {
		return errInvalid("destructiveLabel %q: want at most 100 characters, no control characters or surrounding spaces", l)
	}
	return nil
}

// verifyKeysDigest names the trusted keys of a policy in the audit log by
// a digest: the keys are public, but a digest shows a change without
// copying whole key rings into every event.
func verifyKeysDigest(v store.VerifyPolicy) string {
	if v.AllowedSigners == "" && v.GPGKeys == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(v.AllowedSigners + "\x00" + v.GPGKeys))
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// checkVerify enforces the store's part of a signature policy: a known
// mode, and at least one key when verification is on.
func checkVerify(v store.VerifyPolicy) error {
	switch v.Mode {
	case "":
		if v.AllowedSigners != "" || v.GPGKeys != "" {
			return errInvalid("verify.mode is required when keys are given")
		}
	case store.VerifyHead, store.VerifyAll:
		if v.AllowedSigners == "" && v.GPGKeys == "" {
			return errInvalid("verify.mode %q needs allowedSigners or gpgKeys", v.Mode)
		}
	default:
		return errInvalid("verify.mode %q is not head or all", v.Mode)
	}
	return nil
}

// CreateRepository implements store.Repositories.
func (s *Store) CreateRepository(ctx context.Context, actor store.Actor, p store.Repository, secret store.Secret) (store.Repository, error) {
	if p.Name == "" || p.URL == "" {
		return store.Repository{}, fmt.Errorf("create repository: %w", errInvalid("name and url are required"))
	}
	if err := checkVerify(p.Verify); err != nil {
		return store.Repository{}, fmt.Errorf("create repository: %w", err)
	}
	if err := checkLabel(p.DestructiveLabel); err != nil {
		return store.Repository{}, fmt.Errorf("create repository: %w", err)
	}
	if p.ID == "" {
		id, err := store.NewID()
		if err != nil {
			return store.Repository{}, err
		}
		p.ID = id
	}
	sealed, err := s.key.Seal(secret.Reveal(), webhookAD(p.Tenant, p.ID)...)
	if err != nil {
		return store.Repository{}, fmt.Errorf("create repository %s/%s: %w", p.Tenant, p.Name, err)
	}
	var out store.Repository
	err = s.write(ctx, func(t *wtx) error {
		if err := s.tenantExists(ctx, t, p.Tenant); err != nil {
			return err
		}
		_, err := t.Exec(ctx, `INSERT INTO repositories (id, tenant, name, url, branch, path, credentials_ref, webhook_secret, suspended,
			forge_kind, forge_api_url, forge_project, forge_credentials_ref, created_at,
			verify_mode, verify_ssh, verify_gpg, destructive_label)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
			p.ID, p.Tenant, p.Name, p.URL, p.Branch, p.Path, p.CredentialsRef, sealed, p.Suspended,
			string(p.ForgeKind), p.ForgeAPIURL, p.ForgeProject, p.ForgeCredentialsRef, us(t.now),
			string(p.Verify.Mode), p.Verify.AllowedSigners, p.Verify.GPGKeys, p.DestructiveLabel)
		if err != nil {
			return s.conflict(err)
		}
		out, err = s.getRepo(ctx, t, p.Tenant, p.ID)
		if err != nil {
			return err
		}
		t.audit(p.Tenant, actor, "repository.create", "repository/"+p.ID, repoAudit(out))
		return nil
	})
	if err != nil {
		return store.Repository{}, fmt.Errorf("create repository %s/%s: %w", p.Tenant, p.Name, err)
	}
	return out, nil
}

func (s *Store) getRepo(ctx context.Context, c Conn, tenant, id string) (store.Repository, error) {
	p, err := scanRepo(c.QueryRow(ctx, `SELECT `+repoCols+` FROM repositories WHERE tenant = $1 AND id = $2`, tenant, id))
	return p, s.notFound(err)
}

// GetRepository implements store.Repositories.
func (s *Store) GetRepository(ctx context.Context, tenant, id string) (store.Repository, error) {
	var p store.Repository
	err := s.read1(ctx, func(c Conn) (err error) {
		p, err = s.getRepo(ctx, c, tenant, id)
		return err
	})
	if err != nil {
		return store.Repository{}, fmt.Errorf("get repository %s/%s: %w", tenant, id, err)
	}
	return p, nil
}

func (s *Store) listRepos(ctx context.Context, where string, args ...any) ([]store.Repository, error) {
	return readAll(ctx, s, scanRepo, `SELECT `+repoCols+` FROM repositories `+where+` ORDER BY tenant, name`, args...)
}

// ListRepositories implements store.Repositories.
func (s *Store) ListRepositories(ctx context.Context, tenant string) ([]store.Repository, error) {
	out, err := s.listRepos(ctx, `WHERE tenant = $1`, tenant)
	if err != nil {
		return nil, fmt.Errorf("list repositories of %s: %w", tenant, err)
	}
	return out, nil
}

// ListAllRepositories implements store.Repositories.
func (s *Store) ListAllRepositories(ctx context.Context) ([]store.Repository, error) {
	out, err := s.listRepos(ctx, ``)
	if err != nil {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	return out, nil
}

// UpdateRepository implements store.Repositories.
func (s *Store) UpdateRepository(ctx context.Context, actor store.Actor, tenant, id string, u store.RepositoryUpdate) (store.Repository, error) {
	var out store.Repository
	err := s.write(ctx, func(t *wtx) error {
		p, err := s.getRepo(ctx, t, tenant, id)
		if err != nil {
			return err
		}
		secret := ""
		if err := t.QueryRow(ctx, `SELECT webhook_secret FROM repositories WHERE id = $1`, id).Scan(&secret); err != nil {
			return err
		}
		set := func(dst *string, v *string) {
			if v != nil {
				*dst = *v
			}
		}
		set(&p.Name, u.Name)
		set(&p.URL, u.URL)
		set(&p.Branch, u.Branch)
		set(&p.Path, u.Path)
		set(&p.CredentialsRef, u.CredentialsRef)
		set(&p.ForgeAPIURL, u.ForgeAPIURL)
		set(&p.ForgeProject, u.ForgeProject)
		set(&p.ForgeCredentialsRef, u.ForgeCredentialsRef)
		if u.WebhookSecret != nil {
			if secret, err = s.key.Seal(u.WebhookSecret.Reveal(), webhookAD(tenant, id)...); err != nil {
				return err
			}
		}
		if u.Suspended != nil {
			p.Suspended = *u.Suspended
		}
		if u.ForgeKind != nil {
			p.ForgeKind = *u.ForgeKind
		}
		if u.Verify != nil {
			if err := checkVerify(*u.Verify); err != nil {
				return err
			}
			p.Verify = *u.Verify
		}
		if u.DestructiveLabel != nil {
			if err := checkLabel(*u.DestructiveLabel); err != nil {
				return err
			}
			p.DestructiveLabel = *u.DestructiveLabel
		}
		if p.Name == "" || p.URL == "" {
			return errInvalid("name and url are required")
		}
		_, err = t.Exec(ctx, `UPDATE repositories SET name = $1, url = $2, branch = $3, path = $4, credentials_ref = $5,
			webhook_secret = $6, suspended = $7, forge_kind = $8, forge_api_url = $9, forge_project = $10,
			forge_credentials_ref = $11, verify_mode = $13, verify_ssh = $14, verify_gpg = $15,
			destructive_label = $16 WHERE id = $12`,
			p.Name, p.URL, p.Branch, p.Path, p.CredentialsRef, secret, p.Suspended, string(p.ForgeKind),
			p.ForgeAPIURL, p.ForgeProject, p.ForgeCredentialsRef, id,
			string(p.Verify.Mode), p.Verify.AllowedSigners, p.Verify.GPGKeys, p.DestructiveLabel)
		if err != nil {
			return s.conflict(err)
		}
		p.HasWebhookSecret = secret != ""
		out = p
		t.audit(tenant, actor, "repository.update", "repository/"+id, repoAudit(p))
		return nil
	})
	if err != nil {
		return store.Repository{}, fmt.Errorf("update repository %s/%s: %w", tenant, id, err)
	}
	return out, nil
}

// DeleteRepository implements store.Repositories.
func (s *Store) DeleteRepository(ctx context.Context, actor store.Actor, tenant, id string) error {
	err := s.write(ctx, func(t *wtx) error {
		n, err := t.Exec(ctx, `DELETE FROM repositories WHERE tenant = $1 AND id = $2`, tenant, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		t.audit(tenant, actor, "repository.delete", "repository/"+id, nil)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete repository %s/%s: %w", tenant, id, err)
	}
	return nil
}

// WebhookSecret implements store.Repositories.
func (s *Store) WebhookSecret(ctx context.Context, tenant, id string) (store.Secret, error) {
	var secret string
	err := s.read1(ctx, func(c Conn) error {
		return s.notFound(c.QueryRow(ctx, `SELECT webhook_secret FROM repositories WHERE tenant = $1 AND id = $2`, tenant, id).Scan(&secret))
	})
	if err != nil {
		return "", fmt.Errorf("webhook secret of %s/%s: %w", tenant, id, err)
	}
	v, err := s.openLegacy(secret, webhookAD(tenant, id)...)
	if err != nil {
		return "", fmt.Errorf("webhook secret of %s/%s: %w", tenant, id, err)
	}
	return v, nil
}

// updateRepo runs one UPDATE on a repository and maps "no row" to ErrNotFound.
func (s *Store) updateRepo(ctx context.Context, t *wtx, tenant, id, set string, args ...any) error {
	n, err := t.Exec(ctx, `UPDATE repositories SET `+set+` WHERE tenant = $1 AND id = $2`, append([]any{tenant, id}, args...)...)
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// MarkCommitSeen implements store.Repositories.
func (s *Store) MarkCommitSeen(ctx context.Context, tenant, id, commit string, now time.Time) error {
	err := s.write(ctx, func(t *wtx) error {
		return s.updateRepo(ctx, t, tenant, id, `last_seen_commit = $3, last_seen_at = $4`, commit, us(store.Micro(now)))
	})
	if err != nil {
		return fmt.Errorf("mark commit %s seen in %s/%s: %w", commit, tenant, id, err)
	}
	return nil
}

// MarkCommitApplied implements store.Repositories.
func (s *Store) MarkCommitApplied(ctx context.Context, actor store.Actor, tenant, id, commit string, now time.Time) error {
	err := s.write(ctx, func(t *wtx) error {
		if err := s.checkFence(ctx, t); err != nil {
			return err
		}
		if err := s.updateRepo(ctx, t, tenant, id, `last_applied_commit = $3, last_applied_at = $4, last_error = '', last_error_at = 0`,
			commit, us(store.Micro(now))); err != nil {
			return err
		}
		t.audit(tenant, actor, "repository.apply", "repository/"+id, map[string]string{"commit": commit})
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark commit %s applied in %s/%s: %w", commit, tenant, id, err)
	}
	return nil
}

// SetRepositoryError implements store.Repositories.
func (s *Store) SetRepositoryError(ctx context.Context, tenant, id, msg string, now time.Time) error {
	at := us(store.Micro(now))
	if msg == "" {
		at = 0
	}
	err := s.write(ctx, func(t *wtx) error {
		return s.updateRepo(ctx, t, tenant, id, `last_error = $3, last_error_at = $4`, msg, at)
	})
	if err != nil {
		return fmt.Errorf("set error of repository %s/%s: %w", tenant, id, err)
	}
	return nil
}

// SiteDesired implements store.Repositories.
func (s *Store) SiteDesired(ctx context.Context, tenant, repoID string) (map[string]store.SiteDesired, error) {
	out := map[string]store.SiteDesired{}
	err := s.read(ctx, func(c Conn) error {
		if _, err := s.getRepo(ctx, c, tenant, repoID); err != nil {
			return err
		}
		// octet_length, not state <> '': both databases answer it from the
		// value's header, without reading the documents (in SQLite, a
		// site's overflow pages: most of this query's time).
		rows, err := c.Query(ctx, `SELECT site, hash, inventory_version, commit_sha, updated_at, octet_length(state) > 0 FROM site_desired WHERE repo_id = $1`, repoID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d store.SiteDesired
			var at int64
			if err := rows.Scan(&d.Site, &d.Hash, &d.InventoryVersion, &d.Commit, &at, &d.Documented); err != nil {
				return err
			}
			d.UpdatedAt = tm(at)
			out[d.Site] = d
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("desired state of repository %s/%s: %w", tenant, repoID, err)
	}
	return out, nil
}

// SiteLabels implements store.Repositories. It orders like DesiredState,
// per site, and keeps each site's first row.
func (s *Store) SiteLabels(ctx context.Context, tenant string) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	err := s.read(ctx, func(c Conn) error {
		rows, err := c.Query(ctx, `SELECT d.site, d.state
			FROM site_desired d JOIN repositories r ON r.id = d.repo_id
			WHERE r.tenant = $1 AND d.state <> ''
			ORDER BY d.site, d.updated_at DESC, r.name`, tenant)
		if err != nil {
			return err
		}
		defer rows.Close()
		seen := ""
		for rows.Next() {
			var site, state string
			if err := rows.Scan(&site, &state); err != nil {
				return err
			}
			if site == seen {
				continue
			}
			seen = site
			var st struct {
				Site *struct {
					Labels map[string]string `json:"labels"`
				} `json:"site"`
			}
			if err := json.Unmarshal([]byte(state), &st); err != nil {
				return fmt.Errorf("decode %s: %w", site, err)
			}
			if st.Site != nil && len(st.Site.Labels) > 0 {
				out[site] = st.Site.Labels
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("site labels of tenant %s: %w", tenant, err)
	}
	return out, nil
}

// siteState is the JSON of site_desired.state.
type siteState struct {
	Site *model.Site            `json:"site"`
	VMs  []model.VirtualMachine `json:"vms"`
}

// SetSiteDesired implements store.Repositories.
func (s *Store) SetSiteDesired(ctx context.Context, tenant, repoID string, d store.SiteDesired) error {
	state, err := encodeSiteState(d)
	if err != nil {
		return fmt.Errorf("set desired state: %w", err)
	}
	err = s.write(ctx, func(t *wtx) error {
		if err := s.checkFence(ctx, t); err != nil {
			return err
		}
		return s.setSiteDesired(ctx, t, tenant, repoID, d, state)
	})
	if err != nil {
		return fmt.Errorf("set desired state of %s in repository %s/%s: %w", d.Site, tenant, repoID, err)
	}
	return nil
}

// RecordSitePlan implements store.Repositories.
func (s *Store) RecordSitePlan(ctx context.Context, actor store.Actor, tenant, repoID string, d store.SiteDesired, plan *model.Plan, now time.Time) (bool, error) {
	state, err := encodeSiteState(d)
	if err != nil {
		return false, fmt.Errorf("record plan: %w", err)
	}
	var body string
	if plan != nil {
		if plan.Tenant != tenant || plan.Site != d.Site {
			return false, fmt.Errorf("record plan %s: %w", plan.ID, errInvalid("plan tenant and site must match the desired state's"))
		}
		if body, err = planBody(*plan); err != nil {
			return false, err
		}
	}
	var stored bool
	err = s.write(ctx, func(t *wtx) error {
		if err := s.checkFence(ctx, t); err != nil {
			return err
		}
		stored = false
		if plan != nil {
			var err error
			if stored, err = s.storePlan(ctx, t, actor, *plan, body, repoID, now); err != nil {
				return err
			}
		}
		return s.setSiteDesired(ctx, t, tenant, repoID, d, state)
	})
	if err != nil {
		return false, fmt.Errorf("record plan of %s from repository %s/%s: %w", d.Site, tenant, repoID, err)
	}
	return stored, nil
}

// RecordSitePlans implements store.Repositories: each record as
// RecordSitePlan would record it, all in one transaction (one commit, one
// fsync, instead of one per site).
func (s *Store) RecordSitePlans(ctx context.Context, actor store.Actor, tenant, repoID string, recs []store.SitePlanRecord, now time.Time) ([]store.SitePlanResult, error) {
	enc, err := encodeRecords(tenant, recs)
	if err != nil {
		return nil, fmt.Errorf("record plans: %w", err)
	}
	states, bodies := enc.states, enc.bodies
	var out []store.SitePlanResult
	err = s.write(ctx, func(t *wtx) error {
		if err := s.checkFence(ctx, t); err != nil {
			return err
		}
		out = make([]store.SitePlanResult, len(recs))
		if _, err := s.getRepo(ctx, t, tenant, repoID); err != nil {
			return err
		}
		// Plans are stored together, a few statements for the batch, unless
		// one site or plan id comes twice: then one by one, in order.
		if plansBatchable(recs) {
			if err := s.storePlans(ctx, t, actor, tenant, repoID, recs, enc, now, out); err != nil {
				return err
			}
		} else {
			for i, rec := range recs {
				if rec.Plan == nil {
					continue
				}
				// storePlan locks the site row first, before it writes
				// anything: ErrNotFound is a site not registered, and the
				// transaction goes on with the other sites.
				stored, err := s.storePlan(ctx, t, actor, *rec.Plan, bodies[i], repoID, now)
				if errors.Is(err, store.ErrNotFound) {
					out[i].Err = fmt.Errorf("record plan %s: %w", rec.Plan.ID, err)
					continue
				}
				if err != nil {
					return fmt.Errorf("plan of %s: %w", rec.Desired.Site, err)
				}
				out[i].Stored = stored
			}
		}
		// The records are upserted together at the end, a few hundred rows
		// per statement: per-statement cost was most of a large batch.
		rows := make([]int, 0, len(recs)) // indexes into recs, one per site
		pos := map[string]int{}           // site → its index in rows
		for i, rec := range recs {
			if out[i].Err != nil {
				continue // its plan could not be stored: nothing recorded
			}
			// A site twice in one batch: the later record wins, as two
			// calls in a row would leave it.
			if j, ok := pos[rec.Desired.Site]; ok {
				rows[j] = i
				continue
			}
			pos[rec.Desired.Site] = len(rows)
			rows = append(rows, i)
		}
		for from := 0; from < len(rows); from += batchRows {
			chunk := rows[from:min(from+batchRows, len(rows))]
			args := make([]any, 0, 7*len(chunk))
			for _, i := range chunk {
				d := recs[i].Desired
				at := d.UpdatedAt
				if at.IsZero() {
					at = t.now
				}
				args = append(args, repoID, d.Site, d.Hash, d.InventoryVersion, d.Commit, us(store.Micro(at)), states[i])
			}
			if _, err := t.Exec(ctx, `INSERT INTO site_desired (repo_id, site, hash, inventory_version, commit_sha, updated_at, state) VALUES `+values(len(chunk), 7)+`
				ON CONFLICT (repo_id, site) DO UPDATE SET hash = excluded.hash, inventory_version = excluded.inventory_version,
					commit_sha = excluded.commit_sha, updated_at = excluded.updated_at, state = excluded.state`, args...); err != nil {
				return fmt.Errorf("desired state of %d sites: %w", len(chunk), err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record %d plans from repository %s/%s: %w", len(recs), tenant, repoID, err)
	}
	return out, nil
}

// encoded is a batch of records as stored: per record, the desired
// state's documents, the plan's head and its actions (empty without a plan).
type encoded struct {
	states, bodies []string
	actions        [][]string
}

// encodeRecords checks and encodes recs, on every core: encoding is most
// of a large batch's work outside the database, and none of it needs the
// write transaction. An error names the first bad record.
func encodeRecords(tenant string, recs []store.SitePlanRecord) (encoded, error) {
	enc := encoded{states: make([]string, len(recs)), bodies: make([]string, len(recs)), actions: make([][]string, len(recs))}
	errs := make([]error, len(recs))
	one := func(i int) error {
		rec := recs[i]
		var err error
		if enc.states[i], err = encodeSiteState(rec.Desired); err != nil {
			return err
		}
		p := rec.Plan
		if p == nil {
			return nil
		}
		if p.Tenant != tenant || p.Site != rec.Desired.Site {
			return fmt.Errorf("plan %s: %w", p.ID, errInvalid("plan tenant and site must match the desired state's"))
		}
		if enc.bodies[i], err = planBody(*p); err != nil {
			return err
		}
		enc.actions[i] = make([]string, len(p.Actions))
		for n, a := range p.Actions {
			b, err := json.Marshal(a)
			if err != nil {
				return fmt.Errorf("encode action %s: %w", a.ID, err)
			}
			enc.actions[i][n] = string(b)
		}
		return nil
	}
	workers := max(1, min(runtime.GOMAXPROCS(0), len(recs)/encodePerWorker))
	each := func(w int) {
		for i := w; i < len(recs); i += workers {
			errs[i] = one(i)
		}
	}
	if workers == 1 {
		each(0)
	} else {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() { each(w) })
		}
		wg.Wait()
	}
	for i, err := range errs {
		if err != nil {
			return encoded{}, fmt.Errorf("records[%d]: %w", i, err)
		}
	}
	return enc, nil
}

// encodePerWorker is the fewest records worth a goroutine of their own.
const encodePerWorker = 16

// encodeSiteState checks d and encodes its documents for site_desired.state.
func encodeSiteState(d store.SiteDesired) (string, error) {
	if d.Site == "" {
		return "", errInvalid("site is required")
	}
	vms := d.VMs
	if vms == nil {
		vms = []model.VirtualMachine{}
	}
	for i, vm := range vms {
		if vm.Site != d.Site {
			return "", errInvalid(fmt.Sprintf("vms[%d]: site %q is not %q", i, vm.Site, d.Site))
		}
	}
	b, err := json.Marshal(siteState{Site: d.Document, VMs: vms})
	if err != nil {
		return "", fmt.Errorf("encode desired state of %s: %w", d.Site, err)
	}
	return string(b), nil
}

// setSiteDesired upserts d (state from encodeSiteState) inside t.
func (s *Store) setSiteDesired(ctx context.Context, t *wtx, tenant, repoID string, d store.SiteDesired, state string) error {
	if _, err := s.getRepo(ctx, t, tenant, repoID); err != nil {
		return err
	}
	at := d.UpdatedAt
	if at.IsZero() {
		at = t.now
	}
	_, err := t.Exec(ctx, `INSERT INTO site_desired (repo_id, site, hash, inventory_version, commit_sha, updated_at, state) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (repo_id, site) DO UPDATE SET hash = excluded.hash, inventory_version = excluded.inventory_version,
			commit_sha = excluded.commit_sha, updated_at = excluded.updated_at, state = excluded.state`,
		repoID, d.Site, d.Hash, d.InventoryVersion, d.Commit, us(store.Micro(at)), state)
	return err
}

// DesiredState implements store.Repositories. A site planned from two of
// the tenant's repositories is answered from the newer record.
func (s *Store) DesiredState(ctx context.Context, tenant, site string) (store.DesiredState, error) {
	var out store.DesiredState
	err := s.read1(ctx, func(c Conn) error {
		var at int64
		var state string
		err := c.QueryRow(ctx, `SELECT d.repo_id, r.last_applied_commit, d.site, d.hash, d.inventory_version, d.commit_sha, d.updated_at, d.state
			FROM site_desired d JOIN repositories r ON r.id = d.repo_id
			WHERE r.tenant = $1 AND d.site = $2 AND d.state <> ''
			ORDER BY d.updated_at DESC, r.name LIMIT 1`, tenant, site).
			Scan(&out.RepoID, &out.AppliedCommit, &out.Site, &out.Hash, &out.InventoryVersion, &out.Commit, &at, &state)
		if err != nil {
			return s.notFound(err)
		}
		var st siteState
		if err := json.Unmarshal([]byte(state), &st); err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		out.UpdatedAt, out.Documented, out.Document, out.VMs = tm(at), true, st.Site, st.VMs
		return nil
	})
	if err != nil {
		return store.DesiredState{}, fmt.Errorf("desired state of site %s/%s: %w", tenant, site, err)
	}
	return out, nil
}
