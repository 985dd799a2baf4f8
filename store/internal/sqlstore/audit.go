package sqlstore

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"fmt"

	"github.com/nkudo/nkudo/store"
)

const auditCols = `seq, at, tenant, actor, action, object, detail, prev_hash, hash, mac`

// appendAudit chains events onto the log inside t. The head row is locked
// so concurrent writers (other replicas too) append one after another.
// With an audit key every event gets a MAC, and a chain not keyed yet
// first gets the audit.keyed event that starts its keyed part (only when
// the chain is empty or the key fresh: see Options.AuditKeyFresh; otherwise
// the events get MACs without a start, which VerifyAudit reports); without
// a key, a keyed chain is refused rather than extended with events that
// would read as forged.
func (s *Store) appendAudit(ctx context.Context, t *wtx, events []store.AuditEvent) ([]store.AuditEvent, error) {
	var seq int64
	var prev, headMAC string
	if err := t.QueryRow(ctx, `SELECT seq, hash, mac FROM audit_head WHERE id = 1`+s.d.ForUpdate).Scan(&seq, &prev, &headMAC); err != nil {
		return nil, fmt.Errorf("read audit head: %w", err)
	}
	switch {
	case headMAC != "" && s.auditKey == nil:
		return nil, store.ErrAuditKey
	case headMAC == "" && s.auditKey != nil && (s.auditKeyFresh || seq == 0):
		events = append([]store.AuditEvent{{
			Actor: store.Actor{Kind: store.ActorSystem, ID: "store"}.String(), Action: store.ActionAuditKeyed,
			Detail: store.Detail(map[string]string{"keyId": s.auditKey.ID()}),
		}}, events...)
	}
	out := make([]store.AuditEvent, 0, len(events))
	mac := headMAC
	// The events are inserted auditRows at a time: a batch of plans
	// brings one event per plan.
	const auditRows = 200
	args := make([]any, 0, 10*min(len(events), auditRows))
	// withHead, on the last rows where the dialect allows it, moves the
	// head in the same statement.
	flush := func(withHead bool) error {
		if len(args) == 0 {
			return nil
		}
		insert := `INSERT INTO audit_events (` + auditCols + `) VALUES ` + values(len(args)/10, 10)
		if withHead {
			n := len(args)
			args = append(args, seq, prev, mac)
			insert = fmt.Sprintf(`WITH ins AS (%s) UPDATE audit_head SET seq = $%d, hash = $%d, mac = $%d WHERE id = 1`, insert, n+1, n+2, n+3)
		}
		_, err := t.Exec(ctx, insert, args...)
		args = args[:0]
		if err != nil {
			return fmt.Errorf("insert audit events: %w", err)
		}
		return nil
	}
	for _, e := range events {
		seq++
		e.Seq = seq
		e.Time = t.now
		e.Detail = store.CompactJSON(e.Detail)
		if len(e.Detail) > 0 && !json.Valid(e.Detail) {
			return nil, errInvalid("audit detail is not JSON")
		}
		e.PrevHash = prev
		e.Hash = store.AuditHash(e)
		if s.auditKey != nil {
			e.MAC = s.auditKey.MAC(e.Hash)
		}
		args = append(args, e.Seq, us(e.Time), e.Tenant, e.Actor, e.Action, e.Object, string(e.Detail), e.PrevHash, e.Hash, e.MAC)
		if len(args) == 10*auditRows {
			if err := flush(false); err != nil {
				return nil, err
			}
		}
		prev, mac = e.Hash, e.MAC
		out = append(out, e)
	}
	if s.d.WritableCTE && len(args) > 0 {
		if err := flush(true); err != nil {
			return nil, err
		}
		return out, nil
	}
	if err := flush(false); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return out, nil
	}
	if _, err := t.Exec(ctx, `UPDATE audit_head SET seq = $1, hash = $2, mac = $3 WHERE id = 1`, seq, prev, mac); err != nil {
		return nil, fmt.Errorf("update audit head: %w", err)
	}
	return out, nil
}

// AnchorAudit keys the chain now if this store has a key and the chain is
// not keyed yet (the backends call it at open), so an upgraded
// installation's chain is keyed before anyone verifies it.
func (s *Store) AnchorAudit(ctx context.Context) error {
	if s.auditKey == nil {
		return nil
	}
	err := s.write(ctx, func(t *wtx) error {
		_, err := s.appendAudit(ctx, t, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("key the audit chain: %w", err)
	}
	return nil
}

// AppendAudit implements store.Audit.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEvent) (store.AuditEvent, error) {
	if e.Action == "" || e.Actor == "" {
		return store.AuditEvent{}, fmt.Errorf("append audit: %w", errInvalid("action and actor are required"))
	}
	var got store.AuditEvent
	err := s.write(ctx, func(t *wtx) error {
		out, err := s.appendAudit(ctx, t, []store.AuditEvent{{
			Tenant: e.Tenant, Actor: e.Actor, Action: e.Action, Object: e.Object, Detail: e.Detail,
		}})
		if err != nil {
			return err
		}
		got = out[len(out)-1]
		return nil
	})
	if err != nil {
		return store.AuditEvent{}, fmt.Errorf("append audit %s: %w", e.Action, err)
	}
	return got, nil
}

func scanAudit(r Row) (store.AuditEvent, error) {
	var e store.AuditEvent
	var at int64
	var detail string
	err := r.Scan(&e.Seq, &at, &e.Tenant, &e.Actor, &e.Action, &e.Object, &detail, &e.PrevHash, &e.Hash, &e.MAC)
	e.Time = tm(at)
	e.Detail = raw(detail)
	return e, err
}

// ListAudit implements store.Audit.
func (s *Store) ListAudit(ctx context.Context, tenant string, afterSeq int64, limit int) ([]store.AuditEvent, error) {
	if limit <= 0 {
		limit = 100
	}
	q := `SELECT ` + auditCols + ` FROM audit_events WHERE seq > $1 AND tenant = $2 ORDER BY seq LIMIT $3`
	args := []any{afterSeq, tenant, limit}
	if tenant == "" {
		q = `SELECT ` + auditCols + ` FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2`
		args = []any{afterSeq, limit}
	}
	out, err := readAll(ctx, s, scanAudit, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}

// VerifyAudit implements store.Audit. It streams the log in seq order and
// checks numbering, links and hashes, then the head row (which catches the
// deletion of the newest events). With the audit key it checks each MAC
// from the audit.keyed event on: hashes alone can be recomputed by anyone
// who can write the database, MACs only by the holder of the key.
func (s *Store) VerifyAudit(ctx context.Context) (store.AuditVerification, error) {
	v := store.AuditVerification{KeyChecked: s.auditKey != nil}
	err := s.read(ctx, func(c Conn) error {
		var headSeq int64
		var headHash, headMAC string
		if err := c.QueryRow(ctx, `SELECT seq, hash, mac FROM audit_head WHERE id = 1`).Scan(&headSeq, &headHash, &headMAC); err != nil {
			return fmt.Errorf("read audit head: %w", err)
		}
		v.HeadHash, v.HeadMAC = headHash, headMAC
		rows, err := c.Query(ctx, `SELECT `+auditCols+` FROM audit_events ORDER BY seq`)
		if err != nil {
			return err
		}
		defer rows.Close()
		var prev, prevMAC string
		var want int64 = 1
		for rows.Next() {
			e, err := scanAudit(rows)
			if err != nil {
				return err
			}
			v.Events++
			switch {
			case e.Seq != want:
				v.FirstBroken, v.Reason = want, fmt.Sprintf("event %d is missing (next is %d)", want, e.Seq)
			case e.PrevHash != prev:
				v.FirstBroken, v.Reason = e.Seq, fmt.Sprintf("event %d does not link to event %d", e.Seq, e.Seq-1)
			case !store.EqualHash(store.AuditHash(e), e.Hash):
				v.FirstBroken, v.Reason = e.Seq, fmt.Sprintf("event %d was altered: its hash does not match its content", e.Seq)
			default:
				v.FirstBroken, v.Reason = s.checkMAC(&v, e)
			}
			if v.FirstBroken != 0 {
				return nil
			}
			prev, prevMAC = e.Hash, e.MAC
			want++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		last := want - 1
		switch {
		case headSeq > last:
			v.FirstBroken, v.Reason = last+1, fmt.Sprintf("events %d to %d are missing", last+1, headSeq)
		case headSeq < last:
			v.FirstBroken, v.Reason = headSeq+1, fmt.Sprintf("event %d was added outside the store", headSeq+1)
		case headHash != prev:
			v.FirstBroken, v.Reason = last, fmt.Sprintf("event %d does not match the chain head", last)
		case s.auditKey != nil && v.KeyedFrom == 0 && last > 0:
			v.FirstBroken, v.Reason = 1, "no event carries a MAC under the audit key: the chain was rewritten "+
				"without the key (or never written by a server holding it)"
		case s.auditKey != nil && headMAC != prevMAC:
			v.FirstBroken, v.Reason = last, fmt.Sprintf("event %d does not match the chain head's MAC", last)
		}
		return nil
	})
	if err != nil {
		return store.AuditVerification{}, fmt.Errorf("verify audit: %w", err)
	}
	return v, nil
}

// checkMAC checks one event whose hash and link are good against the keyed
// chain, noting in v where it starts; it returns the broken seq and reason.
func (s *Store) checkMAC(v *store.AuditVerification, e store.AuditEvent) (int64, string) {
	if v.KeyedFrom == 0 {
		if e.MAC == "" {
			return 0, ""
		}
		if e.Action != store.ActionAuditKeyed {
			return e.Seq, fmt.Sprintf("event %d carries a MAC, but the keyed chain must start at an %s event", e.Seq, store.ActionAuditKeyed)
		}
		v.KeyedFrom = e.Seq
		if s.auditKey != nil {
			var d struct {
				KeyID string `json:"keyId"`
			}
			_ = json.Unmarshal(e.Detail, &d)
			if d.KeyID != s.auditKey.ID() {
				return e.Seq, fmt.Sprintf("the chain was keyed at event %d with audit key %s, but this server holds key %s", e.Seq, d.KeyID, s.auditKey.ID())
			}
		}
	}
	if s.auditKey == nil {
		return 0, ""
	}
	if e.MAC == "" || !hmac.Equal([]byte(s.auditKey.MAC(e.Hash)), []byte(e.MAC)) {
		return e.Seq, fmt.Sprintf("event %d fails its MAC: written or re-chained by someone without the audit key", e.Seq)
	}
	return 0, ""
}
