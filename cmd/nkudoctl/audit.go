package main

import (
	"context"
	"fmt"
)

// AuditCmd groups the audit-log commands.
type AuditCmd struct {
	Verify AuditVerifyCmd `cmd:"" help:"Recompute the audit log's hash chain on the server (admin token; exit 0 intact, 1 broken, 2 error)."`
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
	} else {
		fmt.Fprintf(s.Out, "BROKEN: audit event %d: %s (%d events checked)\n", v.FirstBroken, v.Reason, v.Events)
	}
	if !v.OK {
		return exitStatus(1)
	}
	return nil
}
