package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/schema"
)

// ValidateCmd checks a manifest directory the way the control plane checks
// a commit: JSON Schema per document, then the set.
type ValidateCmd struct {
	Dir string `arg:"" optional:"" default:"." help:"Manifest directory (default: the current directory)."`
}

// Help is the long help text.
func (c *ValidateCmd) Help() string {
	return `Reads every *.yaml and *.yml file under DIR (hidden directories such as .git
are skipped) and prints every problem as file:line: field: message.

Exit status: 0 the manifests are valid; 1 they are not (every error is
printed); 2 validation could not run (no such directory, unreadable file).`
}

// validateJSON is the --output json form.
type validateJSON struct {
	Valid  bool          `json:"valid"`
	Sites  int           `json:"sites"`
	VMs    int           `json:"vms"`
	Errors []schemaError `json:"errors,omitempty"`
}

type schemaError struct {
	File    string `json:"file"`
	Line    int    `json:"line,omitempty"`
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

// Run validates c.Dir.
func (c *ValidateCmd) Run(g *Globals, s *Streams) error {
	d, errs, err := loadDir(c.Dir)
	if err != nil {
		return err
	}
	if g.Output == "json" {
		out := validateJSON{Valid: len(errs) == 0, Sites: len(d.Sites), VMs: len(d.VMs)}
		for _, e := range errs {
			out.Errors = append(out.Errors, schemaError{File: e.File, Line: e.Line, Path: e.Path, Message: e.Message})
		}
		if err := writeJSON(s, out); err != nil {
			return fmt.Errorf("write result: %w", err)
		}
	} else {
		for _, e := range errs {
			fmt.Fprintln(s.Out, e.Error())
		}
		prefix := ""
		if c.Dir != "." {
			prefix = c.Dir + ": "
		}
		if len(errs) > 0 {
			fmt.Fprintf(s.Out, "%s%s\n", prefix, plural(len(errs), "error"))
		} else {
			fmt.Fprintf(s.Out, "%svalid: %s, %s\n", prefix, plural(len(d.Sites), "site"), plural(len(d.VMs), "VM"))
		}
	}
	if len(errs) > 0 {
		return exitStatus(exitChanges)
	}
	return nil
}

// loadDir loads the manifests under dir. Validation problems come back as
// errs, with file names relative to dir (as the control plane reports them
// for a repository); an error means loading could not run at all.
func loadDir(dir string) (model.Desired, schema.Errors, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return model.Desired{}, nil, fmt.Errorf("manifest directory: %w", err)
	}
	if !st.IsDir() {
		return model.Desired{}, nil, fmt.Errorf("manifest directory: %s is not a directory", dir)
	}
	d, err := schema.Load(os.DirFS(dir))
	var errs schema.Errors
	switch {
	case err == nil:
		return d, nil, nil
	case errors.As(err, &errs):
		return model.Desired{}, errs, nil
	case errors.Is(err, schema.ErrNoManifests):
		// The tree was read but holds nothing: invalid, not an I/O failure.
		return model.Desired{}, schema.Errors{{File: dir, Message: "no manifests found (no *.yaml or *.yml file holds a document)"}}, nil
	default:
		return model.Desired{}, nil, err
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", what)
	}
	return fmt.Sprintf("%d %ss", n, what)
}
