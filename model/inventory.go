package model

// ObservedVM is one VM as an edge agent reports it.
type ObservedVM struct {
	Name  string  `json:"name"`
	State VMState `json:"state"`
	// Managed is true when n-kudo created the VM; only managed VMs are ever changed.
	Managed bool `json:"managed"`
	// SpecHash is VMSpec.Hash of the spec the VM was created from ("" when unmanaged).
	SpecHash     string `json:"specHash,omitempty"`
	CPUs         int    `json:"cpus"`
	MemoryMiB    int    `json:"memoryMiB"`
	MaxCPUs      int    `json:"maxCpus,omitempty"`
	MaxMemoryMiB int    `json:"maxMemoryMiB,omitempty"`
}

// Inventory is the set of VMs an agent last reported for its site.
type Inventory struct {
	Site string `json:"site"`
	// Version increases every time the reported VM set changes; plans record
	// the version they were computed against (the stale-plan guard).
	Version int64 `json:"version"`
	// Reported is false for a site whose agent has never reported.
	Reported bool         `json:"reported"`
	VMs      []ObservedVM `json:"vms"`
}
