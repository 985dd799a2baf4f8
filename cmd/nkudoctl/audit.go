package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/nkudo/nkudo/api"
)

// AuditCmd groups the audit-log commands.
type AuditCmd struct {
	Verify AuditVerifyCmd `cmd:"" help:"Recompute the audit log's hash chain and its MACs under the server's audit key (admin token; exit 0 intact, 1 broken, 2 error)."`
}

// AuditVerifyCmd asks the control plane to verify the audit hash chain.
type AuditVerifyCmd struct {
	Checkpoint     string `placeholder:"FILE" help:"Also check a checkpoint saved earlier with --save-checkpoint: the chain must still hold that event with that hash (finds a truncation the chain alone cannot show)."`
	SaveCheckpoint string `placeholder:"FILE" help:"When the chain is intact, save its head (seq, hash, MAC) to FILE; keep it somewhere the database's writers cannot reach."`
}

// auditCheckpoint is a saved chain head.
type auditCheckpoint struct {
	Seq     int64     `json:"seq"`
	Hash    string    `json:"hash"`
	MAC     string    `json:"mac,omitempty"`
	SavedAt time.Time `json:"savedAt"`
}

// Run prints OK or the first broken link. Exit 0 intact, 1 broken, 2 error.
func (c *AuditVerifyCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	var cp *auditCheckpoint
	if c.Checkpoint != "" {
		b, err := os.ReadFile(c.Checkpoint)
		if err != nil {
			return fmt.Errorf("--checkpoint: %w", err)
		}
		cp = &auditCheckpoint{}
		if err := json.Unmarshal(b, cp); err != nil || cp.Seq < 1 || cp.Hash == "" {
			return fmt.Errorf("--checkpoint %s: want the JSON that --save-checkpoint writes (seq, hash)", c.Checkpoint)
		}
	}
	v, err := client.VerifyAudit(ctx)
	if err != nil {
		return fmt.Errorf("verify audit log: %w", err)
	}
	if v.OK && cp != nil {
		if reason, err := checkCheckpoint(ctx, client, v, *cp); err != nil {
			return err
		} else if reason != "" {
			v.OK, v.FirstBroken, v.Reason = false, min(cp.Seq, v.Events+1), reason
		}
	}
	if g.Output == "json" {
		if err := writeJSON(s, v); err != nil {
			return err
		}
	} else if v.OK {
		fmt.Fprintf(s.Out, "OK: audit hash chain intact (%d events)\n", v.Events)
		switch {
		case v.KeyChecked && v.KeyedFrom > 0:
			fmt.Fprintf(s.Out, "keyed: MACs under the server's audit key check from event %d on\n", v.KeyedFrom)
		case !v.KeyChecked:
			fmt.Fprintln(s.Out, "WARNING: the server has no audit key: only the hashes were checked, which anyone who can write the database can recompute")
		}
		if cp != nil {
			fmt.Fprintf(s.Out, "checkpoint: event %d is still in the chain, unchanged\n", cp.Seq)
		}
	} else {
		fmt.Fprintf(s.Out, "BROKEN: audit event %d: %s (%d events checked)\n", v.FirstBroken, v.Reason, v.Events)
	}
	if !v.OK {
		return exitStatus(1)
	}
	if c.SaveCheckpoint != "" {
		b, err := json.MarshalIndent(auditCheckpoint{Seq: v.Events, Hash: v.HeadHash, MAC: v.HeadMAC, SavedAt: time.Now().UTC()}, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(c.SaveCheckpoint, append(b, '\n'), 0o600); err != nil {
			return fmt.Errorf("--save-checkpoint: %w", err)
		}
	}
	return nil
}

// checkCheckpoint says why the chain no longer holds the checkpoint's
// event ("" when it does). The chain verified, so the event at that seq
// vouches for every event before it.
func checkCheckpoint(ctx context.Context, client *api.Client, v api.AuditVerification, cp auditCheckpoint) (string, error) {
	if v.Events < cp.Seq {
		return fmt.Sprintf("the chain ends at event %d but the checkpoint saw event %d: truncated", v.Events, cp.Seq), nil
	}
	evs, err := client.ListAudit(ctx, cp.Seq-1, 1)
	if err != nil {
		return "", fmt.Errorf("read audit event %d: %w", cp.Seq, err)
	}
	if len(evs) == 0 || evs[0].Seq != cp.Seq {
		return fmt.Sprintf("event %d of the checkpoint is missing: truncated", cp.Seq), nil
	}
	if evs[0].Hash != cp.Hash || cp.MAC != "" && evs[0].MAC != cp.MAC {
		return fmt.Sprintf("event %d differs from the checkpoint: the chain was rewritten from there back", cp.Seq), nil
	}
	return "", nil
}
