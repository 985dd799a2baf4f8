package schema

import (
	"embed"
	"fmt"
	"io/fs"
	"math/big"
	"slices"
	"strings"
	"sync"

	"github.com/nkudo/nkudo/model"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

//go:embed jsonschema/*.json
var schemaFiles embed.FS

const schemaBaseURL = "https://nkudo.io/schemas/v1alpha1/"

// schemaFile names the embedded schema of each kind.
var schemaFile = map[model.Kind]string{
	model.KindSite:           "site.json",
	model.KindVirtualMachine: "virtualmachine.json",
}

// JSONSchemas returns the embedded JSON Schema files (site.json,
// virtualmachine.json and the common.json they reference), for editors and
// external tools.
func JSONSchemas() fs.FS {
	sub, err := fs.Sub(schemaFiles, "jsonschema")
	if err != nil {
		panic("schema: embedded schema directory: " + err.Error()) // cannot happen: the path is a literal
	}
	return sub
}

// compiled holds the schemas, compiled once: they are immutable and safe for
// concurrent use.
var compiled = sync.OnceValues(func() (map[model.Kind]*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	entries, err := fs.ReadDir(schemaFiles, "jsonschema")
	if err != nil {
		return nil, fmt.Errorf("read embedded schemas: %w", err)
	}
	for _, e := range entries {
		f, err := schemaFiles.Open("jsonschema/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("open embedded schema %s: %w", e.Name(), err)
		}
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("parse embedded schema %s: %w", e.Name(), err)
		}
		if err := c.AddResource(schemaBaseURL+e.Name(), doc); err != nil {
			return nil, fmt.Errorf("add embedded schema %s: %w", e.Name(), err)
		}
	}
	out := make(map[model.Kind]*jsonschema.Schema, len(schemaFile))
	for k, name := range schemaFile {
		s, err := c.Compile(schemaBaseURL + name)
		if err != nil {
			return nil, fmt.Errorf("compile schema %s: %w", name, err)
		}
		out[k] = s
	}
	return out, nil
})

var printer = message.NewPrinter(language.English)

// schemaErrors validates doc against the schema of k and turns every leaf
// failure into an Error at the line of the field it concerns.
func schemaErrors(s *jsonschema.Schema, doc *document) Errors {
	err := s.Validate(doc.value)
	if err == nil {
		return nil
	}
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return Errors{{File: doc.file, Line: doc.line, Message: err.Error()}}
	}
	var errs Errors
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			errs = append(errs, leafErrors(doc, e)...)
			return
		}
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
		}
	}
	walk(ve)
	return errs
}

func leafErrors(doc *document, e *jsonschema.ValidationError) Errors {
	loc := e.InstanceLocation
	at := func(loc []string, msg string) Error {
		return Error{File: doc.file, Line: doc.lineOf(loc), Path: displayPath(doc.value, loc), Message: msg}
	}
	switch k := e.ErrorKind.(type) {
	case *kind.AdditionalProperties:
		// Report each unknown field at its own line. Labels and annotations
		// accept any key that matches their pattern: there the key is bad.
		msg := "unknown field"
		if n := len(loc); n > 0 && (loc[n-1] == "labels" || loc[n-1] == "annotations") {
			msg = "invalid key: want an optional DNS-subdomain prefix and '/', then a name of at most 63 letters, digits, '-', '_' or '.'"
		}
		out := make(Errors, 0, len(k.Properties))
		for _, p := range k.Properties {
			sub := append(loc[:len(loc):len(loc)], p)
			out = append(out, at(sub, msg))
		}
		return out
	case *kind.Required:
		out := make(Errors, 0, len(k.Missing))
		for _, m := range k.Missing {
			out = append(out, at(loc, fmt.Sprintf("missing required field %q", m)))
		}
		return out
	}
	return Errors{at(loc, describe(e.ErrorKind, loc))}
}

// describe words a schema failure for a person editing YAML.
func describe(ek jsonschema.ErrorKind, loc []string) string {
	switch k := ek.(type) {
	case *kind.Type:
		return fmt.Sprintf("must be %s, not %s", strings.Join(article(k.Want), " or "), article([]string{k.Got})[0])
	case *kind.Minimum:
		return "must be >= " + ratString(k.Want)
	case *kind.Maximum:
		return "must be <= " + ratString(k.Want)
	case *kind.ExclusiveMinimum:
		return "must be > " + ratString(k.Want)
	case *kind.ExclusiveMaximum:
		return "must be < " + ratString(k.Want)
	case *kind.MinLength:
		return fmt.Sprintf("must be at least %d characters long", k.Want)
	case *kind.MaxLength:
		return fmt.Sprintf("must be at most %d characters long (got %d)", k.Want, k.Got)
	case *kind.MinItems:
		return fmt.Sprintf("must have at least %d items", k.Want)
	case *kind.MaxItems:
		return fmt.Sprintf("must have at most %d items (got %d)", k.Want, k.Got)
	case *kind.MaxProperties:
		return fmt.Sprintf("must have at most %d entries (got %d)", k.Want, k.Got)
	case *kind.UniqueItems:
		return fmt.Sprintf("items %d and %d are equal; items must be unique", k.Duplicates[0], k.Duplicates[1])
	case *kind.Enum:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = fmt.Sprintf("%q", fmt.Sprint(w))
		}
		return fmt.Sprintf("must be one of %s, not %s", strings.Join(want, ", "), quoteValue(k.Got))
	case *kind.Const:
		return fmt.Sprintf("must be %s, not %s", quoteValue(k.Want), quoteValue(k.Got))
	case *kind.Pattern:
		return patternMessage(loc, k)
	case *kind.FalseSchema:
		if len(loc) > 0 && loc[len(loc)-1] == "userData" {
			return "userData and userDataEncrypted are mutually exclusive: set only one"
		}
		if len(loc) > 0 && loc[len(loc)-1] == "content" {
			return "content and contentEncrypted are mutually exclusive: set only one"
		}
	}
	return ek.LocalizedString(printer)
}

// patternMessage explains a pattern failure by what the field is, not by
// its regular expression.
func patternMessage(loc []string, k *kind.Pattern) string {
	last := ""
	if len(loc) > 0 {
		last = loc[len(loc)-1]
	}
	parent := ""
	if len(loc) > 1 {
		parent = loc[len(loc)-2]
	}
	switch {
	case last == "userDataEncrypted" || last == "contentEncrypted":
		// Never quote it: it is long, and may be plaintext put in the wrong field.
		return "must be age armour (-----BEGIN AGE ENCRYPTED FILE----- … -----END AGE ENCRYPTED FILE-----), as nkudoctl secrets encrypt prints"
	case last == "name" || last == "site":
		return fmt.Sprintf("%q is not a DNS label: use lower-case letters, digits and '-', starting and ending with a letter or digit", k.Got)
	case last == "sha256":
		return "must be a SHA-256 digest: 64 lower-case hex characters"
	case last == "url":
		return fmt.Sprintf("%q is not an http:// or https:// URL", k.Got)
	case last == "bridge":
		return fmt.Sprintf("%q is not a Linux interface name (letters, digits, '-', '_', '.'; at most 15 characters)", k.Got)
	case last == "path" && parent != "" && strings.Trim(parent, "0123456789") == "":
		return fmt.Sprintf("%q is not an absolute path (must start with /)", k.Got)
	case last == "permissions":
		return fmt.Sprintf("%q is not an octal file mode like 0600", k.Got)
	case last == "mac":
		return fmt.Sprintf("%q is not a unicast MAC address like 52:54:00:12:34:56", k.Got)
	case parent == "labels":
		return fmt.Sprintf("%q is not a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", k.Got)
	case parent == "groups":
		return fmt.Sprintf("%q must not start or end with white space", k.Got)
	}
	return fmt.Sprintf("%q does not match %s", k.Got, k.Want)
}

func ratString(r *big.Rat) string {
	if r.IsInt() {
		return r.Num().String()
	}
	f, _ := r.Float64()
	return fmt.Sprint(f)
}

func quoteValue(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v)
}

func article(types []string) []string {
	out := slices.Clone(types)
	for i, t := range out {
		switch t {
		case "object":
			out[i] = "a mapping"
		case "array":
			out[i] = "a list"
		case "integer":
			out[i] = "an integer"
		case "null":
			out[i] = "empty"
		default:
			out[i] = "a " + t
		}
	}
	return out
}
