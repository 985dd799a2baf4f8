package schema

// Limits on what Load accepts. Each one is named in the error that reports
// it and documented in docs/manifests.md. They bound the memory and time a
// single commit can cost the control plane; real repositories stay far below.
const (
	// MaxFileBytes is the largest manifest file read. Larger files are
	// rejected without being read.
	MaxFileBytes = 1 << 20 // 1 MiB
	// MaxTotalBytes bounds the sum of all manifest files in one tree.
	MaxTotalBytes = 64 << 20 // 64 MiB
	// MaxFiles bounds the number of *.yaml/*.yml files in one tree. The
	// walk stops at the first file over it; nothing is read.
	MaxFiles = 20000
	// MaxTreeEntries bounds the entries (files and directories of any
	// name) a walk visits. Git trees can share subtrees, so a repository of
	// a few kilobytes can name millions of paths: the walk stops at the
	// first entry over the limit, before anything is read.
	MaxTreeEntries = 100000
	// MaxTreeDepth bounds how deep directories nest below the manifests
	// path (a file at the top is at depth 1).
	MaxTreeDepth = 32
	// MaxDocumentsPerFile bounds the YAML documents in one file ("---" separated,
	// empty ones included).
	MaxDocumentsPerFile = 1000
	// MaxDocuments bounds the manifests in one tree: room for MaxSites
	// sites of ten VMs each, with their Site manifests.
	MaxDocuments = 120000
	// MaxDepth bounds the nesting of mappings and sequences in a document.
	// A manifest needs 5 levels.
	MaxDepth = 32
	// MaxNodesPerDocument bounds the YAML nodes of one document after alias
	// expansion: this is what defeats "billion laughs" alias bombs.
	MaxNodesPerDocument = 10000
	// MaxAliasesPerDocument bounds the alias uses (*name) in one document.
	MaxAliasesPerDocument = 100
	// MaxSites bounds the Site manifests of one tenant.
	MaxSites = 10000
	// MaxVMsPerSite bounds the VirtualMachine manifests of one site.
	MaxVMsPerSite = 256
)
