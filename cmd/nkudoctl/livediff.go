package main

import (
	"context"
	"fmt"

	"github.com/nkudo/nkudo/model"
)

// liveInventory reads every site's inventory from the control plane, in
// the shape diff.Plan takes: what `nkudoctl diff` compares a working tree
// with when no --actual file is given.
func liveInventory(ctx context.Context, g *Globals) (map[string]model.Inventory, error) {
	client, err := connect(g)
	if err != nil {
		return nil, fmt.Errorf("live inventory: %w (or pass --actual FILE)", err)
	}
	defer client.CloseIdleConnections()
	sites, err := client.ListSites(ctx)
	if err != nil {
		return nil, fmt.Errorf("live inventory: list sites: %w", err)
	}
	out := make(map[string]model.Inventory, len(sites))
	for _, st := range sites {
		v, err := client.SiteVMs(ctx, st.Name)
		if err != nil {
			return nil, fmt.Errorf("live inventory of %s: %w", st.Name, err)
		}
		inv := model.Inventory{Site: st.Name, Version: v.InventoryVersion, Reported: v.Reported, VMs: []model.ObservedVM{}}
		for _, vm := range v.VMs {
			if vm.Actual != nil {
				inv.VMs = append(inv.VMs, *vm.Actual)
			}
		}
		out[st.Name] = inv
	}
	return out, nil
}
