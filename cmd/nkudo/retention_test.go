package main

import (
	"strings"
	"testing"
)

func TestServeRejectsBadRetentionFlags(t *testing.T) {
	for _, flag := range []string{"--retention-interval=often", "--plan-retention=30d", "--delivery-retention=week"} {
		code, _, errs := runCmd(t, t.Context(), "serve", "--data-dir="+t.TempDir(), "--listen=127.0.0.1:0", flag)
		name, _, _ := strings.Cut(flag, "=")
		if code != 1 || !strings.Contains(errs, name) {
			t.Errorf("serve %s: exit %d, stderr %q; want 1 naming the flag", flag, code, errs)
		}
	}
}
