package main

import (
	"context"
	"fmt"
)

// AuditCmd groups the audit-log commands.
type AuditCmd struct {
	Verify AuditVerifyCmd `cmd:"" help:"Recompute the audit log's hash chain and its MACs under the server's audit key (admin token; exit 0 intact, 1 broken, 2 error)."`
}

// AuditVerifyCmd asks the control plane to verify the audit hash chain.
type AuditVerifyCmd struct{}

// Run prints OK or the first broken link. Exit 0 intact, 1 broken, 2 error.
func (c *AuditVerifyCmd) Run(ctx context.Context, g *Globals, s *Streams) error {
	client, err := connect(g)
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	v, err := client.VerifyAudit(ctx)
	if err != nil {
		return fmt.Errorf("verify audit log: %w", err)
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
	} else {
		fmt.Fprintf(s.Out, "BROKEN: audit event %d: %s (%d events checked)\n", v.FirstBroken, v.Reason, v.Events)
	}
	if !v.OK {
		return exitStatus(1)
	}
	return nil
}
