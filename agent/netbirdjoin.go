package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"

	"github.com/nkudo/nkudo/api"
)

// NetBirdJoiner joins the host to NetBird with a setup key and management
// URL (agent/netbird.Client). Its errors never contain the key.
type NetBirdJoiner interface {
	Join(ctx context.Context, cfg api.NetBirdConfig) error
}

// nbFingerprint identifies a configuration without keeping the key.
func nbFingerprint(cfg api.NetBirdConfig) string {
	sum := sha256.Sum256([]byte(cfg.ManagementURL + "\x00" + cfg.SetupKey))
	return hex.EncodeToString(sum[:])
}

// joinNetBird joins with a configuration from a heartbeat answer unless it
// was joined with already, in the background so heartbeats keep their
// pace; one join runs at a time. A failed join is retried when the next
// answer carries the configuration again, logged once per configuration.
func (a *Agent) joinNetBird(ctx context.Context, cfg api.NetBirdConfig) {
	if a.cfg.NetBird == nil || cfg.SetupKey == "" {
		return
	}
	fp := nbFingerprint(cfg)
	a.mu.Lock()
	joined := a.nbJoined == fp
	a.mu.Unlock()
	if joined || !a.nbBusy.TryLock() {
		return
	}
	a.nbJoins.Add(1)
	go func() {
		defer a.nbJoins.Done()
		defer a.nbBusy.Unlock()
		err := a.cfg.NetBird.Join(ctx, cfg)
		a.mu.Lock()
		defer a.mu.Unlock()
		if err != nil {
			if a.nbFailed != fp && ctx.Err() == nil {
				a.log.Warn("netbird join with the control plane's new setup key failed; retried at the next heartbeat", "management", cfg.ManagementURL, "err", err)
			}
			a.nbFailed = fp
			return
		}
		a.nbJoined, a.nbFailed = fp, ""
		a.log.Info("netbird joined with a new setup key from the control plane", "management", cfg.ManagementURL)
	}()
}
