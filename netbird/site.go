package netbird

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"time"
)

// KeyLifetime is how long a minted setup key stays valid: the API's
// minimum. A key is one-off and deleted once its peer joined, so the
// lifetime only bounds a key that was never used.
const KeyLifetime = 24 * time.Hour

// UsedKeyGrace is how long after its key was used a site's peer may stay
// unfound before a new key is minted: the agent reports the NetBird IP
// that finds its peer with its next heartbeat, and minting earlier would
// hand a new key to an agent that has just joined.
const UsedKeyGrace = 5 * time.Minute

// SiteState is what the control plane remembers of one site's peer
// between reconciles. Key is a secret: the store keeps it sealed.
type SiteState struct {
	// KeyID and Key are the setup key minted for the site and not yet
	// used; KeyGroups are the groups it puts its peer in.
	KeyID     string
	Key       Secret
	KeyGroups []string
	// PeerID is the site's peer once it joined.
	PeerID string
	// Groups is the membership last made equal the Site's groups.
	Groups []string
}

// SiteResult is what one ReconcileSite did.
type SiteResult struct {
	// Minted is true when a new setup key was created: the agent needs it.
	Minted bool
	// Joined is true when the site's peer was found (by ID or by the
	// NetBird IP the agent reported).
	Joined bool
	// Change is the membership change made.
	Change Change
	// Drift is true when the change undid an edit made outside the
	// control plane (the Site's groups had not changed).
	Drift bool
}

// sorted returns a sorted copy without duplicates.
func sorted(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return slices.Compact(out)
}

// ReconcileSite brings one site's NetBird peer to the Site's groups. If the
// peer is known (st.PeerID, or the peer with the NetBird IP the agent
// reported), its membership is made equal groups and any setup key left
// over is deleted. If not, the site needs a setup key: a valid one minted
// for the same groups is kept, any other is deleted and a new one-off key
// with those groups is minted, named "nkudo/<tenant>/<site>". It returns
// the new state; on error the state returned is still the one to keep
// (what was done before the error).
func (c *Client) ReconcileSite(ctx context.Context, tenant, site string, groups []string, reportedIP string, st SiteState) (SiteState, SiteResult, error) {
	var res SiteResult
	groups = sorted(groups)
	if slices.Contains(groups, AllGroup) {
		return st, res, fmt.Errorf("site %s: netbird group %q: every peer is in it; it cannot be assigned", site, AllGroup)
	}
	peerID, err := c.findPeer(ctx, st.PeerID, reportedIP)
	if err != nil {
		return st, res, err
	}
	if peerID != "" {
		res.Joined = true
		// Drift only for a peer already in step: a peer that has just
		// joined may carry a key minted for older groups.
		known := st.PeerID == peerID
		st.PeerID = peerID
		ch, err := c.SetPeerGroups(ctx, peerID, groups)
		if err != nil {
			return st, res, fmt.Errorf("site %s: set peer groups: %w", site, err)
		}
		res.Change = ch
		res.Drift = known && !ch.Empty() && slices.Equal(sorted(st.Groups), groups)
		st.Groups = groups
		if st.KeyID != "" {
			if err := c.DeleteSetupKey(ctx, st.KeyID); err != nil {
				return st, res, fmt.Errorf("site %s: delete used setup key: %w", site, err)
			}
			st.KeyID, st.Key, st.KeyGroups = "", "", nil
		}
		return st, res, nil
	}
	st.PeerID = ""
	if st.KeyID != "" {
		k, err := c.SetupKey(ctx, st.KeyID)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return st, res, fmt.Errorf("site %s: check setup key: %w", site, err)
		case k.State == "valid" && slices.Equal(sorted(st.KeyGroups), groups):
			return st, res, nil
		case k.State == "overused" && c.now().Sub(k.LastUsed) < UsedKeyGrace:
			return st, res, nil // just joined: wait for the agent to report its peer
		default:
			if err := c.DeleteSetupKey(ctx, st.KeyID); err != nil {
				return st, res, fmt.Errorf("site %s: delete stale setup key: %w", site, err)
			}
		}
		st.KeyID, st.Key, st.KeyGroups = "", "", nil
	}
	ids, err := c.ResolveGroups(ctx, groups)
	if err != nil {
		return st, res, fmt.Errorf("site %s: %w", site, err)
	}
	k, err := c.CreateSetupKey(ctx, "nkudo/"+tenant+"/"+site, ids, KeyLifetime)
	if err != nil {
		return st, res, fmt.Errorf("site %s: mint setup key: %w", site, err)
	}
	st.KeyID, st.Key, st.KeyGroups = k.ID, k.Key, groups
	st.Groups = groups
	res.Minted = true
	return st, res, nil
}

// findPeer returns the site's peer: by ID when known and still there,
// else by the NetBird IP the agent reported; "" when there is none.
func (c *Client) findPeer(ctx context.Context, id, ip string) (string, error) {
	if id != "" {
		p, err := c.Peer(ctx, id)
		if err == nil {
			return p.ID, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return "", fmt.Errorf("find peer: %w", err)
		}
	}
	if ip == "" {
		return "", nil
	}
	var peers []Peer
	if err := c.call(ctx, "GET", "/api/peers?ip="+url.QueryEscape(ip), nil, &peers); err != nil {
		return "", fmt.Errorf("find peer: %w", err)
	}
	for _, p := range peers {
		if p.IP == ip {
			return p.ID, nil
		}
	}
	return "", nil
}

// DeleteSite removes a deleted site's peer from the account and its unused
// setup key.
func (c *Client) DeleteSite(ctx context.Context, st SiteState) error {
	if st.PeerID != "" {
		if err := c.DeletePeer(ctx, st.PeerID); err != nil {
			return fmt.Errorf("delete peer: %w", err)
		}
	}
	if st.KeyID != "" {
		if err := c.DeleteSetupKey(ctx, st.KeyID); err != nil {
			return fmt.Errorf("delete setup key: %w", err)
		}
	}
	return nil
}
