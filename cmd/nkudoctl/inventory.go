package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/nkudo/nkudo/model"
)

// maxInventoryBytes bounds the inventory file read by diff.
const maxInventoryBytes = 64 << 20

// inventoryFile is the --actual format (docs/inventory-format.md).
type inventoryFile struct {
	Sites []inventorySite `json:"sites"`
}

// inventorySite is model.Inventory with Reported defaulting to true: a site
// listed in the file has reported; a site left out never has.
type inventorySite struct {
	Site     string             `json:"site"`
	Version  int64              `json:"version"`
	Reported *bool              `json:"reported"`
	VMs      []model.ObservedVM `json:"vms"`
	// NetBird, when present, is the NetBird groups the site is in now;
	// without it the site's groups are not compared.
	NetBird *inventoryNetBird `json:"netbird"`
}

type inventoryNetBird struct {
	Groups []string `json:"groups"`
}

// observed is what diff compares the manifests with: each site's inventory
// and, for diff.Options.NetBirdGroups, the NetBird groups of the sites
// whose groups are known.
type observed struct {
	inv    map[string]model.Inventory
	groups map[string][]string
	// tenant is whose sites these are, for a live inventory ("" from a file).
	tenant string
}

// parseInventory reads the inventory file strictly: unknown fields,
// duplicate sites or VMs and invalid states are errors, since a typo here
// would show up as a wrong plan.
func parseInventory(r io.Reader) (observed, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxInventoryBytes+1))
	if err != nil {
		return observed{}, fmt.Errorf("read: %w", err)
	}
	if len(data) > maxInventoryBytes {
		return observed{}, fmt.Errorf("larger than %d MiB", maxInventoryBytes>>20)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f inventoryFile
	if err := dec.Decode(&f); err != nil {
		return observed{}, fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return observed{}, errors.New("decode: trailing data after the JSON object")
	}
	out := make(map[string]model.Inventory, len(f.Sites))
	groups := map[string][]string{}
	for i, s := range f.Sites {
		if s.Site == "" {
			return observed{}, fmt.Errorf("sites[%d]: missing site name", i)
		}
		if _, dup := out[s.Site]; dup {
			return observed{}, fmt.Errorf("sites[%d]: site %q listed twice", i, s.Site)
		}
		seen := map[string]bool{}
		for j, vm := range s.VMs {
			where := fmt.Sprintf("sites[%d] (%s): vms[%d]", i, s.Site, j)
			switch {
			case vm.Name == "":
				return observed{}, fmt.Errorf("%s: missing name", where)
			case seen[vm.Name]:
				return observed{}, fmt.Errorf("%s: VM %q listed twice", where, vm.Name)
			case vm.State != model.VMRunning && vm.State != model.VMStopped:
				return observed{}, fmt.Errorf("%s (%s): state %q: want %q or %q", where, vm.Name, vm.State, model.VMRunning, model.VMStopped)
			}
			seen[vm.Name] = true
		}
		reported := s.Reported == nil || *s.Reported
		out[s.Site] = model.Inventory{Site: s.Site, Version: s.Version, Reported: reported, VMs: s.VMs}
		if s.NetBird != nil {
			groups[s.Site] = s.NetBird.Groups
		}
	}
	return observed{inv: out, groups: groups}, nil
}
