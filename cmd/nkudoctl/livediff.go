package main

import (
	"context"
	"fmt"

	"github.com/nkudo/nkudo/model"
)

// liveInventory reads every site's inventory from the control plane, in
// the shape diff.Plan takes (with the NetBird groups the control plane last
// set on each site it manages in NetBird): what `nkudoctl diff` compares a working tree
// with when no --actual file is given.
func liveInventory(ctx context.Context, g *Globals) (observed, error) {
	client, err := connect(g)
	if err != nil {
		return observed{}, fmt.Errorf("live inventory: %w (or pass --actual FILE)", err)
	}
	defer client.CloseIdleConnections()
	sites, err := client.ListSites(ctx)
	if err != nil {
		return observed{}, fmt.Errorf("live inventory: list sites: %w", err)
	}
	out := make(map[string]model.Inventory, len(sites))
	groups := map[string][]string{}
	tenant := ""
	for _, st := range sites {
		tenant = st.Tenant
		v, err := client.SiteVMs(ctx, st.Name)
		if err != nil {
			return observed{}, fmt.Errorf("live inventory of %s: %w", st.Name, err)
		}
		inv := model.Inventory{Site: st.Name, Version: v.InventoryVersion, Reported: v.Reported, VMs: []model.ObservedVM{}}
		for _, vm := range v.VMs {
			if vm.Actual != nil {
				inv.VMs = append(inv.VMs, *vm.Actual)
			}
		}
		out[st.Name] = inv
		if st.NetBirdSync != nil {
			// The groups the control plane last set; a site it does not
			// manage in NetBird is not compared.
			groups[st.Name] = st.NetBirdSync.Groups
		}
	}
	return observed{inv: out, groups: groups, tenant: tenant}, nil
}
