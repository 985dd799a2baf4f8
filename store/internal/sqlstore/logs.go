package sqlstore

import (
	"context"
	"fmt"

	"github.com/nkudo/nkudo/store"
)

// AppendLogs implements store.Logs.
func (s *Store) AppendLogs(ctx context.Context, tenant, site string, lines []store.LogLine) (int, error) {
	if len(lines) == 0 {
		return 0, nil
	}
	for _, l := range lines {
		if l.PlanID == "" || l.Seq <= 0 {
			return 0, fmt.Errorf("append logs: %w", errInvalid("every line needs a plan and a positive seq"))
		}
	}
	var inserted int
	err := s.write(ctx, func(t *wtx) error {
		inserted = 0
		checked := map[string]bool{}
		for _, l := range lines {
			if !checked[l.PlanID] {
				var one int
				if err := t.QueryRow(ctx, `SELECT 1 FROM plans WHERE tenant = $1 AND site = $2 AND id = $3`,
					tenant, site, l.PlanID).Scan(&one); err != nil {
					return fmt.Errorf("plan %s: %w", l.PlanID, s.notFound(err))
				}
				checked[l.PlanID] = true
			}
		}
		for from := 0; from < len(lines); from += batchRows {
			chunk := lines[from:min(from+batchRows, len(lines))]
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
			inserted += int(n)
		}
		for plan := range checked {
			t.notify(store.LogTopic(plan))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("append logs of %s/%s: %w", tenant, site, err)
	}
	return inserted, nil
}

// Logs implements store.Logs.
func (s *Store) Logs(ctx context.Context, tenant, planID string, afterSeq int64, limit int) ([]store.LogLine, error) {
	if limit <= 0 {
		limit = 1000
	}
	var out []store.LogLine
	err := s.read(ctx, func(c Conn) error {
		var one int
		if err := c.QueryRow(ctx, `SELECT 1 FROM plans WHERE tenant = $1 AND id = $2`, tenant, planID).Scan(&one); err != nil {
			return fmt.Errorf("plan %s: %w", planID, s.notFound(err))
		}
		rows, err := c.Query(ctx, `SELECT plan_id, seq, action_id, at, stream, line FROM log_lines
			WHERE plan_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, planID, afterSeq, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var l store.LogLine
			var at int64
			var stream string
			if err := rows.Scan(&l.PlanID, &l.Seq, &l.ActionID, &at, &stream, &l.Line); err != nil {
				return err
			}
			l.Time, l.Stream = tm(at), store.LogStream(stream)
			out = append(out, l)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("logs of plan %s/%s: %w", tenant, planID, err)
	}
	return out, nil
}
