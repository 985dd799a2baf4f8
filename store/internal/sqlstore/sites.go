package sqlstore

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

const siteCols = `tenant, name, created_at, enrolled_at, cert_serial, facts, last_heartbeat, heartbeat_interval,
	inventory_version, netbird_url, netbird_setup_key <> '', epoch`

func scanSite(r Row) (store.Site, error) {
	var st store.Site
	var created, enrolled, hb, interval int64
	var facts string
	err := r.Scan(&st.Tenant, &st.Name, &created, &enrolled, &st.CertSerial, &facts, &hb, &interval,
		&st.InventoryVersion, &st.NetBirdManagementURL, &st.HasNetBirdSetupKey, &st.Epoch)
	st.CreatedAt, st.EnrolledAt, st.LastHeartbeat = tm(created), tm(enrolled), tm(hb)
	st.HeartbeatInterval = time.Duration(interval) * time.Microsecond
	st.Facts = raw(facts)
	return st, err
}

// CreateSite implements store.Sites.
func (s *Store) CreateSite(ctx context.Context, actor store.Actor, tenant, name string) (store.Site, error) {
	if !store.ValidName(name) {
		return store.Site{}, fmt.Errorf("create site %q: %w", name, errInvalid("name must be a DNS label"))
	}
	var st store.Site
	err := s.write(ctx, func(t *wtx) error {
		if err := s.tenantExists(ctx, t, tenant); err != nil {
			return err
		}
		epoch, err := store.NewID()
		if err != nil {
			return err
		}
		if _, err := t.Exec(ctx, `INSERT INTO sites (tenant, name, created_at, epoch) VALUES ($1, $2, $3, $4)`, tenant, name, us(t.now), epoch); err != nil {
			return s.conflict(err)
		}
		st = store.Site{Tenant: tenant, Name: name, CreatedAt: t.now, Epoch: epoch}
		t.audit(tenant, actor, "site.create", "site/"+name, nil)
		return nil
	})
	if err != nil {
		return store.Site{}, fmt.Errorf("create site %s/%s: %w", tenant, name, err)
	}
	return st, nil
}

// GetSite implements store.Sites.
func (s *Store) GetSite(ctx context.Context, tenant, name string) (store.Site, error) {
	var st store.Site
	err := s.read1(ctx, func(c Conn) (err error) {
		st, err = scanSite(c.QueryRow(ctx, `SELECT `+siteCols+` FROM sites WHERE tenant = $1 AND name = $2`, tenant, name))
		return s.notFound(err)
	})
	if err != nil {
		return store.Site{}, fmt.Errorf("get site %s/%s: %w", tenant, name, err)
	}
	return st, nil
}

// ListSites implements store.Sites.
func (s *Store) ListSites(ctx context.Context, tenant string) ([]store.Site, error) {
	out, err := readAll(ctx, s, scanSite, `SELECT `+siteCols+` FROM sites WHERE tenant = $1 ORDER BY name`, tenant)
	if err != nil {
		return nil, fmt.Errorf("list sites of %s: %w", tenant, err)
	}
	return out, nil
}

// DeleteSite implements store.Sites.
func (s *Store) DeleteSite(ctx context.Context, actor store.Actor, tenant, name string) error {
	err := s.write(ctx, func(t *wtx) error {
		if err := s.lockSite(ctx, t, tenant, name); err != nil {
			return err
		}
		revoked, err := s.revokeSite(ctx, t, tenant, name, t.now)
		if err != nil {
			return err
		}
		if _, err := t.Exec(ctx, `DELETE FROM site_certificates WHERE tenant = $1 AND site = $2`, tenant, name); err != nil {
			return err
		}
		n, err := t.Exec(ctx, `DELETE FROM sites WHERE tenant = $1 AND name = $2`, tenant, name)
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		var detail any
		if len(revoked) > 0 {
			detail = map[string]any{"revokedSerials": revoked}
		}
		t.audit(tenant, actor, "site.delete", "site/"+name, detail)
		t.notify(store.PlanTopic(tenant, name))
		t.notify(store.FleetTopic(tenant))
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete site %s/%s: %w", tenant, name, err)
	}
	return nil
}

func (s *Store) updateSite(ctx context.Context, t *wtx, tenant, site, set string, args ...any) error {
	n, err := t.Exec(ctx, `UPDATE sites SET `+set+` WHERE tenant = $1 AND name = $2`, append([]any{tenant, site}, args...)...)
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// SetSiteCertificate implements store.Sites: an issue without an
// authenticating certificate.
func (s *Store) SetSiteCertificate(ctx context.Context, actor store.Actor, tenant, site, serial string, now time.Time) error {
	return s.IssueSiteCertificate(ctx, actor, tenant, site, store.CertAuth{}, serial, now)
}

// IssueSiteCertificate implements store.Sites. The site row is locked
// first, as RevokeSiteCertificates and DeleteSite lock it, so a revocation
// either comes before (and the authenticating certificate is found
// revoked here) or after (and revokes the certificate recorded here).
func (s *Store) IssueSiteCertificate(ctx context.Context, actor store.Actor, tenant, site string, auth store.CertAuth, serial string, now time.Time) error {
	if serial == "" {
		return fmt.Errorf("issue certificate: %w", errInvalid("serial is required"))
	}
	err := s.write(ctx, func(t *wtx) error {
		var epoch string
		var revocations int64
		if err := t.QueryRow(ctx, `SELECT epoch, revocations FROM sites WHERE tenant = $1 AND name = $2`+s.d.ForUpdate, tenant, site).Scan(&epoch, &revocations); err != nil {
			return fmt.Errorf("site %s/%s: %w", tenant, site, s.notFound(err))
		}
		if auth.Serial != "" {
			if err := s.certValid(ctx, t, tenant, site, epoch, auth.Serial); err != nil {
				return fmt.Errorf("certificate %s that asked: %w", auth.Serial, err)
			}
		}
		if auth.EnrollmentToken != "" {
			// The token remembers the site's revocation count when it was
			// redeemed; a revocation since then refuses the enrollment.
			var seen, used int64
			err := t.QueryRow(ctx, `SELECT site_revocations, used_at FROM enrollment_tokens WHERE id = $1 AND tenant = $2 AND site = $3`,
				auth.EnrollmentToken, tenant, site).Scan(&seen, &used)
			if err != nil && !s.b.IsNoRows(err) {
				return err
			}
			if err != nil || used == 0 || seen != revocations {
				return fmt.Errorf("enrollment token %s: site revoked since it was redeemed: %w", auth.EnrollmentToken, store.ErrCertRevoked)
			}
		}
		at := us(store.Micro(now))
		if _, err := t.Exec(ctx, `INSERT INTO site_certificates (serial, tenant, site, epoch, issued_at) VALUES ($1, $2, $3, $4, $5)`,
			serial, tenant, site, epoch, at); err != nil {
			return s.conflict(err)
		}
		if err := s.updateSite(ctx, t, tenant, site,
			`cert_serial = $3, enrolled_at = CASE WHEN enrolled_at = 0 THEN $4 ELSE enrolled_at END`, serial, at); err != nil {
			return err
		}
		t.audit(tenant, actor, "site.certificate", "site/"+site, map[string]string{"serial": serial})
		return nil
	})
	if err != nil {
		return fmt.Errorf("set certificate of site %s/%s: %w", tenant, site, err)
	}
	return nil
}

// certValid says whether serial is a live certificate of the site's epoch.
func (s *Store) certValid(ctx context.Context, c Conn, tenant, site, epoch, serial string) error {
	var certEpoch string
	var revoked bool
	err := c.QueryRow(ctx, `SELECT COALESCE((SELECT epoch FROM site_certificates WHERE serial = $1 AND tenant = $2 AND site = $3), '-'),
		EXISTS (SELECT 1 FROM revoked_serials WHERE serial = $1)`, serial, tenant, site).Scan(&certEpoch, &revoked)
	switch {
	case err != nil:
		return err
	case revoked:
		return store.ErrCertRevoked
	case certEpoch != epoch:
		return store.ErrCertUnknown
	}
	return nil
}

// CheckSiteCertificate implements store.Sites in one statement: the hot
// path of every agent request.
func (s *Store) CheckSiteCertificate(ctx context.Context, tenant, site, serial string) (store.Site, error) {
	var st store.Site
	err := s.read1(ctx, func(c Conn) error {
		var certEpoch string
		var revoked bool
		row := c.QueryRow(ctx, `SELECT `+siteCols+`,
			COALESCE((SELECT c.epoch FROM site_certificates c WHERE c.serial = $3 AND c.tenant = $1 AND c.site = $2), '-'),
			EXISTS (SELECT 1 FROM revoked_serials r WHERE r.serial = $3)
			FROM sites WHERE tenant = $1 AND name = $2`, tenant, site, serial)
		var err error
		st, err = scanSite(multiScan{row, []any{&certEpoch, &revoked}})
		switch {
		case s.b.IsNoRows(err):
			// The site is gone: say revoked when it was (a deleted site's
			// or tenant's certificates are), the clearer answer.
			var one int
			if err := c.QueryRow(ctx, `SELECT 1 FROM revoked_serials WHERE serial = $1`, serial).Scan(&one); err == nil {
				return store.ErrCertRevoked
			}
			return store.ErrNotFound
		case err != nil:
			return err
		case revoked:
			return store.ErrCertRevoked
		case certEpoch != st.Epoch:
			return store.ErrCertUnknown
		}
		return nil
	})
	if err != nil {
		return store.Site{}, fmt.Errorf("check certificate %s of site %s/%s: %w", serial, tenant, site, err)
	}
	return st, nil
}

// multiScan appends extra destinations to a scan of siteCols.
type multiScan struct {
	r     Row
	extra []any
}

func (m multiScan) Scan(dest ...any) error { return m.r.Scan(append(dest, m.extra...)...) }

// RevokeSiteCertificates implements store.Sites.
func (s *Store) RevokeSiteCertificates(ctx context.Context, actor store.Actor, tenant, site string, now time.Time) ([]string, error) {
	var revoked []string
	err := s.write(ctx, func(t *wtx) error {
		if err := s.lockSite(ctx, t, tenant, site); err != nil {
			return err
		}
		var err error
		if revoked, err = s.revokeSite(ctx, t, tenant, site, now); err != nil {
			return err
		}
		if _, err := t.Exec(ctx, `UPDATE sites SET revocations = revocations + 1 WHERE tenant = $1 AND name = $2`, tenant, site); err != nil {
			return err
		}
		if len(revoked) > 0 {
			t.audit(tenant, actor, "site.revoke", "site/"+site, map[string]any{"serials": revoked})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("revoke certificates of site %s/%s: %w", tenant, site, err)
	}
	return revoked, nil
}

// revokeSite revokes, inside t (the site locked), every certificate ever
// recorded for the site, and its current serial should it predate the
// record, that is not revoked yet; it returns them in serial order.
func (s *Store) revokeSite(ctx context.Context, t *wtx, tenant, site string, at time.Time) ([]string, error) {
	rows, err := t.Query(ctx, `SELECT serial FROM site_certificates WHERE tenant = $1 AND site = $2
		UNION SELECT cert_serial FROM sites WHERE tenant = $1 AND name = $2 AND cert_serial <> ''`, tenant, site)
	if err != nil {
		return nil, err
	}
	var serials []string
	for rows.Next() {
		var sr string
		if err := rows.Scan(&sr); err != nil {
			rows.Close()
			return nil, err
		}
		serials = append(serials, sr)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	slices.Sort(serials)
	var out []string
	for _, sr := range serials {
		n, err := t.Exec(ctx, `INSERT INTO revoked_serials (serial, tenant, site, revoked_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (serial) DO NOTHING`, sr, tenant, site, us(store.Micro(at)))
		if err != nil {
			return nil, err
		}
		if n > 0 {
			out = append(out, sr)
		}
	}
	return out, nil
}

// RevokeSerial implements store.Sites.
func (s *Store) RevokeSerial(ctx context.Context, actor store.Actor, tenant, site, serial string, now time.Time) error {
	if serial == "" {
		return fmt.Errorf("revoke serial: %w", errInvalid("serial is required"))
	}
	err := s.write(ctx, func(t *wtx) error {
		if err := s.lockSite(ctx, t, tenant, site); err != nil {
			return err
		}
		n, err := t.Exec(ctx, `INSERT INTO revoked_serials (serial, tenant, site, revoked_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (serial) DO NOTHING`, serial, tenant, site, us(store.Micro(now)))
		if err != nil {
			return err
		}
		if _, err := t.Exec(ctx, `UPDATE sites SET revocations = revocations + 1 WHERE tenant = $1 AND name = $2`, tenant, site); err != nil {
			return err
		}
		if n > 0 {
			t.audit(tenant, actor, "site.revoke", "site/"+site, map[string]string{"serial": serial})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke serial %s of site %s/%s: %w", serial, tenant, site, err)
	}
	return nil
}

// IsSerialRevoked implements store.Sites.
func (s *Store) IsSerialRevoked(ctx context.Context, serial string) (bool, error) {
	var revoked bool
	err := s.read1(ctx, func(c Conn) error {
		var one int
		err := c.QueryRow(ctx, `SELECT 1 FROM revoked_serials WHERE serial = $1`, serial).Scan(&one)
		if s.b.IsNoRows(err) {
			return nil
		}
		revoked = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("check serial %s: %w", serial, err)
	}
	return revoked, nil
}

// ListRevokedSerials implements store.Sites.
func (s *Store) ListRevokedSerials(ctx context.Context) ([]store.RevokedSerial, error) {
	scan := func(row Row) (store.RevokedSerial, error) {
		var r store.RevokedSerial
		var at int64
		err := row.Scan(&r.Serial, &r.Tenant, &r.Site, &at)
		r.RevokedAt = tm(at)
		return r, err
	}
	out, err := readAll(ctx, s, scan, `SELECT serial, tenant, site, revoked_at FROM revoked_serials ORDER BY revoked_at, serial`)
	if err != nil {
		return nil, fmt.Errorf("list revoked serials: %w", err)
	}
	return out, nil
}

// SetSiteNetBird implements store.Sites.
func (s *Store) SetSiteNetBird(ctx context.Context, actor store.Actor, tenant, site, managementURL string, setupKey store.Secret) error {
	sealed, err := s.key.Seal(setupKey.Reveal(), netbirdAD(tenant, site)...)
	if err != nil {
		return fmt.Errorf("set netbird of site %s/%s: %w", tenant, site, err)
	}
	err = s.write(ctx, func(t *wtx) error {
		if err := s.updateSite(ctx, t, tenant, site, `netbird_url = $3, netbird_setup_key = $4`, managementURL, sealed); err != nil {
			return err
		}
		t.audit(tenant, actor, "site.netbird", "site/"+site, map[string]any{"managementUrl": managementURL, "setupKey": setupKey != ""})
		return nil
	})
	if err != nil {
		return fmt.Errorf("set netbird of site %s/%s: %w", tenant, site, err)
	}
	return nil
}

// SiteNetBird implements store.Sites.
func (s *Store) SiteNetBird(ctx context.Context, tenant, site string) (string, store.Secret, error) {
	var u, k string
	err := s.read1(ctx, func(c Conn) error {
		return s.notFound(c.QueryRow(ctx, `SELECT netbird_url, netbird_setup_key FROM sites WHERE tenant = $1 AND name = $2`,
			tenant, site).Scan(&u, &k))
	})
	if err != nil {
		return "", "", fmt.Errorf("netbird of site %s/%s: %w", tenant, site, err)
	}
	v, err := s.openLegacy(k, netbirdAD(tenant, site)...)
	if err != nil {
		return "", "", fmt.Errorf("netbird of site %s/%s: %w", tenant, site, err)
	}
	return u, v, nil
}

// normalizeVMs sorts a VM set by name and returns it with its canonical JSON and hash.
func normalizeVMs(vms []model.ObservedVM) ([]model.ObservedVM, string, string, error) {
	vms = slices.Clone(vms)
	if vms == nil {
		vms = []model.ObservedVM{}
	}
	slices.SortFunc(vms, func(a, b model.ObservedVM) int { return cmp.Compare(a.Name, b.Name) })
	for i, vm := range vms {
		if vm.Name == "" {
			return nil, "", "", errInvalid("inventory: a VM has no name")
		}
		if i > 0 && vms[i-1].Name == vm.Name {
			return nil, "", "", errInvalid("inventory: VM %q is reported twice", vm.Name)
		}
	}
	b, err := json.Marshal(vms)
	if err != nil {
		return nil, "", "", fmt.Errorf("encode inventory: %w", err)
	}
	sum := sha256.Sum256(b)
	return vms, string(b), hex.EncodeToString(sum[:]), nil
}

// RecordHeartbeat implements store.Sites: a single UPDATE … RETURNING,
// no transaction round trips. The SET expressions all see the old row, so
// the inventory is replaced and its version bumped only when the hash
// differs, and heartbeat_seq = inventory_changed_seq afterwards says it did.
func (s *Store) RecordHeartbeat(ctx context.Context, tenant, site string, hb store.Heartbeat) (store.HeartbeatResult, error) {
	if s.closed.Load() {
		return store.HeartbeatResult{}, store.ErrClosed
	}
	if len(hb.Facts) > 0 && !json.Valid(hb.Facts) {
		return store.HeartbeatResult{}, fmt.Errorf("record heartbeat of %s/%s: %w", tenant, site, errInvalid("facts are not JSON"))
	}
	_, inv, hash, err := normalizeVMs(hb.VMs)
	if err != nil {
		return store.HeartbeatResult{}, fmt.Errorf("record heartbeat of %s/%s: %w", tenant, site, err)
	}
	at := hb.Time
	if at.IsZero() {
		at = s.now()
	}
	set := `last_heartbeat = $3, heartbeat_seq = heartbeat_seq + 1,
		inventory_version = inventory_version + CASE WHEN inventory_hash = $4 THEN 0 ELSE 1 END,
		inventory_changed_seq = CASE WHEN inventory_hash = $4 THEN inventory_changed_seq ELSE heartbeat_seq + 1 END,
		inventory = CASE WHEN inventory_hash = $4 THEN inventory ELSE $5 END,
		inventory_hash = $4`
	args := []any{tenant, site, us(store.Micro(at)), hash, inv}
	if facts := store.CompactJSON(hb.Facts); len(facts) > 0 {
		args = append(args, string(facts))
		set += fmt.Sprintf(`, facts = $%d`, len(args))
	}
	if hb.Interval > 0 {
		args = append(args, int64(hb.Interval/time.Microsecond))
		set += fmt.Sprintf(`, heartbeat_interval = $%d`, len(args))
	}
	var res store.HeartbeatResult
	var sealed string
	// The pending NetBird key rides along in a scalar subquery: the agent
	// gets it in the heartbeat's answer, and almost always there is none.
	err = s.b.WriteRow(ctx, `UPDATE sites SET `+set+` WHERE tenant = $1 AND name = $2
		RETURNING inventory_version, heartbeat_seq = inventory_changed_seq,
			COALESCE((SELECT setup_key FROM netbird_peers WHERE tenant = $1 AND site = $2), '')`,
		args...).Scan(&res.InventoryVersion, &res.Changed, &sealed)
	if err != nil {
		if s.b.IsLockTimeout(err) {
			err = store.ErrBusy
		}
		return store.HeartbeatResult{}, fmt.Errorf("record heartbeat of %s/%s: %w", tenant, site, s.notFound(err))
	}
	if sealed != "" {
		// The heartbeat is recorded: a key that does not open only stays
		// undelivered, as a failed GetNetBirdPeer would leave it.
		if v, err := s.key.Open(sealed, netbirdPeerAD(tenant, site)...); err != nil {
			s.log.Warn("cannot open the site's pending NetBird setup key", "component", "store", "tenant", tenant, "site", site, "err", err)
		} else {
			res.NetBirdSetupKey = store.Secret(v)
		}
	}
	return res, nil
}

func scanInventory(r Row) (model.Inventory, error) {
	var inv model.Inventory
	var body string
	if err := r.Scan(&inv.Site, &inv.Version, &body); err != nil {
		return inv, err
	}
	inv.Reported = body != ""
	inv.VMs = []model.ObservedVM{}
	if body != "" {
		if err := json.Unmarshal([]byte(body), &inv.VMs); err != nil {
			return inv, fmt.Errorf("decode inventory of %s: %w", inv.Site, err)
		}
	}
	return inv, nil
}

// Inventory implements store.Sites.
func (s *Store) Inventory(ctx context.Context, tenant, site string) (model.Inventory, error) {
	var inv model.Inventory
	err := s.read1(ctx, func(c Conn) (err error) {
		inv, err = scanInventory(c.QueryRow(ctx, `SELECT name, inventory_version, inventory FROM sites WHERE tenant = $1 AND name = $2`, tenant, site))
		return s.notFound(err)
	})
	if err != nil {
		return model.Inventory{}, fmt.Errorf("inventory of %s/%s: %w", tenant, site, err)
	}
	return inv, nil
}

// Inventories implements store.Sites.
func (s *Store) Inventories(ctx context.Context, tenant string) (map[string]model.Inventory, error) {
	out := map[string]model.Inventory{}
	err := s.read1(ctx, func(c Conn) error {
		rows, err := c.Query(ctx, `SELECT name, inventory_version, inventory FROM sites WHERE tenant = $1`, tenant)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			inv, err := scanInventory(rows)
			if err != nil {
				return err
			}
			out[inv.Site] = inv
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("inventories of %s: %w", tenant, err)
	}
	return out, nil
}
