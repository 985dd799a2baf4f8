package sqlstore

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/nkudo/nkudo/store"
)

// AppendLogs implements store.Logs.
func (s *Store) AppendLogs(ctx context.Context, tenant, site string, lines []store.LogLine) (int, error) {
	r, err := s.AppendLogsWithin(ctx, tenant, site, lines, store.LogQuota{})
	return r.Inserted, err
}

// lineCost is what a line counts against the log quotas.
func lineCost(l store.LogLine) int64 { return int64(len(l.Line)) + store.LogLineOverhead }

type planSeq struct {
	plan string
	seq  int64
}

// logUsage is one log_usage row and what this transaction adds to it.
type logUsage struct {
	store.LogUsage
	addBytes, addDroppedLines, addDroppedBytes int64
}

// AppendLogsWithin implements store.Logs.
func (s *Store) AppendLogsWithin(ctx context.Context, tenant, site string, lines []store.LogLine, q store.LogQuota) (store.LogAppend, error) {
	var res store.LogAppend
	if len(lines) == 0 {
		return res, nil
	}
	for _, l := range lines {
		if l.PlanID == "" || l.Seq <= 0 {
			return res, fmt.Errorf("append logs: %w", errInvalid("every line needs a plan and a positive seq"))
		}
	}
	err := s.write(ctx, func(t *wtx) error {
		res = store.LogAppend{}
		usage := map[string]*logUsage{}
		var plans []string
		for _, l := range lines {
			if usage[l.PlanID] != nil {
				continue
			}
			var one int
			if err := t.QueryRow(ctx, `SELECT 1 FROM plans WHERE tenant = $1 AND site = $2 AND id = $3`,
				tenant, site, l.PlanID).Scan(&one); err != nil {
				return fmt.Errorf("plan %s: %w", l.PlanID, s.notFound(err))
			}
			u := &logUsage{}
			var closed string
			err := t.QueryRow(ctx, `SELECT bytes, dropped_lines, dropped_bytes, closed FROM log_usage WHERE plan_id = $1`+s.d.ForUpdate,
				l.PlanID).Scan(&u.Bytes, &u.DroppedLines, &u.DroppedBytes, &closed)
			if err != nil && !s.b.IsNoRows(err) {
				return fmt.Errorf("log usage of plan %s: %w", l.PlanID, err)
			}
			u.Closed = store.LogQuotaScope(closed)
			usage[l.PlanID] = u
			plans = append(plans, l.PlanID)
		}
		var siteBytes int64
		if q.SiteBytes > 0 {
			if err := t.QueryRow(ctx, `SELECT COALESCE(SUM(bytes), 0) FROM log_usage WHERE tenant = $1 AND site = $2`,
				tenant, site).Scan(&siteBytes); err != nil {
				return fmt.Errorf("log usage of site: %w", err)
			}
		}
		stored, err := storedSeqs(ctx, t, lines)
		if err != nil {
			return err
		}
		// Lines already stored (a resend after a lost answer) are neither
		// new nor charged again.
		var keep []store.LogLine
		for _, l := range lines {
			k := planSeq{l.PlanID, l.Seq}
			if stored[k] {
				continue
			}
			stored[k] = true
			u, c := usage[l.PlanID], lineCost(l)
			switch {
			case u.Closed != "":
			case q.PlanBytes > 0 && u.Bytes+c > q.PlanBytes:
				u.Closed = store.LogQuotaPlan
			case q.SiteBytes > 0 && siteBytes+c > q.SiteBytes:
				u.Closed = store.LogQuotaSite
			default:
				u.Bytes += c
				u.addBytes += c
				siteBytes += c
				keep = append(keep, l)
				continue
			}
			u.addDroppedLines++
			u.addDroppedBytes += int64(len(l.Line))
			res.Dropped++
		}
		for from := 0; from < len(keep); from += batchRows {
			chunk := keep[from:min(from+batchRows, len(keep))]
			args := make([]any, 0, 6*len(chunk))
			for _, l := range chunk {
				at := l.Time
				if at.IsZero() {
					at = t.now
				}
				args = append(args, l.PlanID, l.Seq, l.ActionID, us(store.Micro(at)), string(l.Stream), l.Line)
			}
			n, err := t.Exec(ctx, `INSERT INTO log_lines (plan_id, seq, action_id, at, stream, line) VALUES `+values(len(chunk), 6)+`
				ON CONFLICT (plan_id, seq) DO NOTHING`, args...)
			if err != nil {
				return err
			}
			res.Inserted += int(n)
		}
		for _, plan := range plans {
			u := usage[plan]
			if u.Closed != "" {
				if res.Over == nil {
					res.Over = map[string]store.LogQuotaScope{}
				}
				res.Over[plan] = u.Closed
			}
			if u.addBytes == 0 && u.addDroppedLines == 0 {
				continue
			}
			if _, err := t.Exec(ctx, `INSERT INTO log_usage (plan_id, tenant, site, bytes, dropped_lines, dropped_bytes, closed)
				VALUES ($1, $2, $3, $4, $5, $6, $7)
				ON CONFLICT (plan_id) DO UPDATE SET bytes = log_usage.bytes + excluded.bytes,
					dropped_lines = log_usage.dropped_lines + excluded.dropped_lines,
					dropped_bytes = log_usage.dropped_bytes + excluded.dropped_bytes,
					closed = excluded.closed`,
				plan, tenant, site, u.addBytes, u.addDroppedLines, u.addDroppedBytes, string(u.Closed)); err != nil {
				return fmt.Errorf("log usage of plan %s: %w", plan, err)
			}
			if u.addBytes > 0 {
				t.notify(store.LogTopic(plan))
			}
		}
		return nil
	})
	if err != nil {
		return store.LogAppend{}, fmt.Errorf("append logs of %s/%s: %w", tenant, site, err)
	}
	return res, nil
}

// storedSeqs returns which (plan, seq) of lines are stored already,
// reading sequence numbers only.
func storedSeqs(ctx context.Context, c Conn, lines []store.LogLine) (map[planSeq]bool, error) {
	byPlan := map[string][]int64{}
	for _, l := range lines {
		byPlan[l.PlanID] = append(byPlan[l.PlanID], l.Seq)
	}
	out := map[planSeq]bool{}
	for plan, seqs := range byPlan {
		slices.Sort(seqs)
		seqs = slices.Compact(seqs)
		for from := 0; from < len(seqs); from += batchRows {
			chunk := seqs[from:min(from+batchRows, len(seqs))]
			args := []any{plan}
			ph := make([]string, len(chunk))
			for i, seq := range chunk {
				args = append(args, seq)
				ph[i] = fmt.Sprintf("$%d", i+2)
			}
			rows, err := c.Query(ctx, `SELECT seq FROM log_lines WHERE plan_id = $1 AND seq IN (`+strings.Join(ph, ", ")+`)`, args...)
			if err != nil {
				return nil, err
			}
			for rows.Next() {
				var seq int64
				if err := rows.Scan(&seq); err != nil {
					rows.Close()
					return nil, err
				}
				out[planSeq{plan, seq}] = true
			}
			err = rows.Err()
			rows.Close()
			if err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// Logs implements store.Logs.
func (s *Store) Logs(ctx context.Context, tenant, planID string, afterSeq int64, limit int) ([]store.LogLine, error) {
	lines, _, err := s.LogPage(ctx, tenant, planID, afterSeq, limit, 0)
	return lines, err
}

// LogPage implements store.Logs. Rows are read one by one and the page
// stops at the byte bound, so a page never holds more than that in memory
// however long the lines are.
func (s *Store) LogPage(ctx context.Context, tenant, planID string, afterSeq int64, limit int, maxBytes int64) ([]store.LogLine, bool, error) {
	if limit <= 0 {
		limit = 1000
	}
	var out []store.LogLine
	var more bool
	err := s.read(ctx, func(c Conn) error {
		out, more = nil, false
		var one int
		if err := c.QueryRow(ctx, `SELECT 1 FROM plans WHERE tenant = $1 AND id = $2`, tenant, planID).Scan(&one); err != nil {
			return fmt.Errorf("plan %s: %w", planID, s.notFound(err))
		}
		rows, err := c.Query(ctx, `SELECT plan_id, seq, action_id, at, stream, line FROM log_lines
			WHERE plan_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, planID, afterSeq, limit+1)
		if err != nil {
			return err
		}
		defer rows.Close()
		var size int64
		for rows.Next() {
			if len(out) == limit {
				more = true
				break
			}
			var l store.LogLine
			var at int64
			var stream string
			if err := rows.Scan(&l.PlanID, &l.Seq, &l.ActionID, &at, &stream, &l.Line); err != nil {
				return err
			}
			if maxBytes > 0 && len(out) > 0 && size+int64(len(l.Line)) > maxBytes {
				more = true
				break
			}
			size += int64(len(l.Line))
			l.Time, l.Stream = tm(at), store.LogStream(stream)
			out = append(out, l)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, false, fmt.Errorf("logs of plan %s/%s: %w", tenant, planID, err)
	}
	return out, more, nil
}

// LogSeqs implements store.Logs.
func (s *Store) LogSeqs(ctx context.Context, tenant, planID string, afterSeq, toSeq int64) ([]int64, error) {
	var out []int64
	err := s.read(ctx, func(c Conn) error {
		out = nil
		var one int
		if err := c.QueryRow(ctx, `SELECT 1 FROM plans WHERE tenant = $1 AND id = $2`, tenant, planID).Scan(&one); err != nil {
			return fmt.Errorf("plan %s: %w", planID, s.notFound(err))
		}
		rows, err := c.Query(ctx, `SELECT seq FROM log_lines WHERE plan_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq`,
			planID, afterSeq, toSeq)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var seq int64
			if err := rows.Scan(&seq); err != nil {
				return err
			}
			out = append(out, seq)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("log sequence numbers of plan %s/%s: %w", tenant, planID, err)
	}
	return out, nil
}

// LogUsage implements store.Logs.
func (s *Store) LogUsage(ctx context.Context, tenant, planID string) (store.LogUsage, error) {
	var u store.LogUsage
	err := s.read(ctx, func(c Conn) error {
		u = store.LogUsage{}
		var one int
		if err := c.QueryRow(ctx, `SELECT 1 FROM plans WHERE tenant = $1 AND id = $2`, tenant, planID).Scan(&one); err != nil {
			return fmt.Errorf("plan %s: %w", planID, s.notFound(err))
		}
		var closed string
		err := c.QueryRow(ctx, `SELECT bytes, dropped_lines, dropped_bytes, closed FROM log_usage WHERE plan_id = $1`,
			planID).Scan(&u.Bytes, &u.DroppedLines, &u.DroppedBytes, &closed)
		if err != nil && !s.b.IsNoRows(err) {
			return err
		}
		u.Closed = store.LogQuotaScope(closed)
		return nil
	})
	if err != nil {
		return store.LogUsage{}, fmt.Errorf("log usage of plan %s/%s: %w", tenant, planID, err)
	}
	return u, nil
}
