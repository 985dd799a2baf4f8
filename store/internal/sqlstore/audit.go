package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nkudo/nkudo/store"
)

const auditCols = `seq, at, tenant, actor, action, object, detail, prev_hash, hash`

// appendAudit chains events onto the log inside t. The head row is locked
// so concurrent writers (other replicas too) append one after another.
func (s *Store) appendAudit(ctx context.Context, t *wtx, events []store.AuditEvent) ([]store.AuditEvent, error) {
	var seq int64
	var prev string
	if err := t.QueryRow(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`+s.d.ForUpdate).Scan(&seq, &prev); err != nil {
		return nil, fmt.Errorf("read audit head: %w", err)
	}
	out := make([]store.AuditEvent, 0, len(events))
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
		if _, err := t.Exec(ctx, `INSERT INTO audit_events (`+auditCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			e.Seq, us(e.Time), e.Tenant, e.Actor, e.Action, e.Object, string(e.Detail), e.PrevHash, e.Hash); err != nil {
			return nil, fmt.Errorf("insert audit event: %w", err)
		}
		prev = e.Hash
		out = append(out, e)
	}
	if _, err := t.Exec(ctx, `UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1`, seq, prev); err != nil {
		return nil, fmt.Errorf("update audit head: %w", err)
	}
	return out, nil
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
		got = out[0]
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
	err := r.Scan(&e.Seq, &at, &e.Tenant, &e.Actor, &e.Action, &e.Object, &detail, &e.PrevHash, &e.Hash)
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
// deletion of the newest events).
func (s *Store) VerifyAudit(ctx context.Context) (store.AuditVerification, error) {
	var v store.AuditVerification
	err := s.read(ctx, func(c Conn) error {
		var headSeq int64
		var headHash string
		if err := c.QueryRow(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&headSeq, &headHash); err != nil {
			return fmt.Errorf("read audit head: %w", err)
		}
		rows, err := c.Query(ctx, `SELECT `+auditCols+` FROM audit_events ORDER BY seq`)
		if err != nil {
			return err
		}
		defer rows.Close()
		var prev string
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
			}
			if v.FirstBroken != 0 {
				return nil
			}
			prev = e.Hash
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
		}
		return nil
	})
	if err != nil {
		return store.AuditVerification{}, fmt.Errorf("verify audit: %w", err)
	}
	return v, nil
}
