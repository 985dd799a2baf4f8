package schema

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	yaml "go.yaml.in/yaml/v3"
)

// document is one parsed YAML document: its value in the shape JSON Schema
// validation expects (map[string]any, []any, string, bool, nil, int64,
// float64) and the line of every field, keyed by instance location.
type document struct {
	file  string
	line  int // line of the document's root node
	value any
	lines map[string]int
}

// lineOf returns the line of the field at the instance location, or of its
// nearest ancestor that has one.
func (d *document) lineOf(loc []string) int {
	for n := len(loc); n > 0; n-- {
		if l, ok := d.lines[locKey(loc[:n])]; ok {
			return l
		}
	}
	return d.line
}

// compact drops what the set checks do not need once the document itself
// is checked: its value and the lines of all fields but the names and MAC
// addresses they report on. A tree of many documents then holds little.
func (d *document) compact() {
	keep := make(map[string]int, 4)
	for k, line := range d.lines {
		switch {
		case k == "metadata", k == "metadata\x00name", k == "metadata\x00site",
			strings.HasPrefix(k, "spec\x00networks\x00") && strings.HasSuffix(k, "\x00mac"):
			keep[k] = line
		}
	}
	d.lines = keep
	d.value = nil
}

// locKey turns an instance location into a map key. NUL cannot appear in a
// YAML key that passed the UTF-8 and YAML checks as printable text, and a
// collision would only misplace a line number.
func locKey(loc []string) string { return strings.Join(loc, "\x00") }

// childKey is locKey(append(loc, name)) given lk = locKey(loc).
func childKey(loc []string, lk, name string) string {
	if len(loc) == 0 {
		return name
	}
	return lk + "\x00" + name
}

// parseFile splits data into documents. Problems are returned as Errors.
// complete is false when part of the file could not be read at all (a
// syntax error or a limit stops the file there).
func parseFile(file string, data []byte) (docs []*document, errs Errors, complete bool) {
	if !utf8.Valid(data) {
		return nil, Errors{{File: file, Line: invalidUTF8Line(data), Message: "file is not valid UTF-8 (manifests must be UTF-8 text)"}}, false
	}
	complete = true
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for n := 0; ; n++ {
		var root yaml.Node
		err := dec.Decode(&root)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			line, msg := yamlErrorLine(err, data)
			errs = append(errs, Error{File: file, Line: line, Message: "YAML syntax: " + msg})
			complete = false
			break
		}
		if n >= MaxDocumentsPerFile {
			errs = append(errs, Error{File: file, Line: root.Line,
				Message: fmt.Sprintf("too many documents in one file: limit MaxDocumentsPerFile is %d", MaxDocumentsPerFile)})
			complete = false
			break
		}
		if len(root.Content) == 0 {
			continue // an empty document, e.g. a trailing "---"
		}
		node := root.Content[0]
		if node.Kind == yaml.ScalarNode && node.ShortTag() == "!!null" {
			continue // "~" or "null" alone: empty as well
		}
		doc, derrs := convertDocument(file, node)
		errs = append(errs, derrs...)
		if doc != nil {
			docs = append(docs, doc)
		} else {
			complete = false // its name is unknown to the set checks
		}
	}
	return docs, errs, complete
}

// invalidUTF8Line is the line of the first byte that is not valid UTF-8.
func invalidUTF8Line(data []byte) int {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 {
			return line
		}
		if r == '\n' {
			line++
		}
		i += size
	}
	return line
}

var (
	yamlLineRE      = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)
	unknownAnchorRE = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)
)

// parserErrors are go-yaml's parser (not scanner) errors: it reports their
// line 0-based, where scanner errors are 1-based.
var parserErrors = []string{
	"did not find expected <document start>",
	"did not find expected node content",
	"did not find expected '-' indicator",
	"did not find expected key",
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
}

// yamlErrorLine extracts the 1-based line and the message from a go-yaml
// error ("yaml: line 3: ...").
func yamlErrorLine(err error, data []byte) (int, string) {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		err = errors.New(te.Errors[0])
	}
	m := yamlLineRE.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, err.Error()
	}
	line, _ := strconv.Atoi(m[1]) // empty when the parser gave no line
	msg := m[2]
	if slices.Contains(parserErrors, msg) {
		line++
	}
	// An error at the end of the stream can be placed one line past it.
	line = min(line, bytes.Count(data, []byte("\n"))+1)
	if a := unknownAnchorRE.FindStringSubmatch(msg); a != nil && line == 0 {
		line = lineOfText(data, "*"+a[1])
	}
	if msg == "control characters are not allowed" && line == 0 {
		line = controlCharLine(data)
	}
	return line, msg
}

// controlCharLine is the line of the first control character YAML forbids.
func controlCharLine(data []byte) int {
	line := 1
	for _, r := range string(data) {
		switch {
		case r == '\n':
			line++
		case r == '\t' || r == '\r':
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			return line
		}
	}
	return 0
}

// lineOfText is the line of the first occurrence of s, or 0.
func lineOfText(data []byte, s string) int {
	i := bytes.Index(data, []byte(s))
	if i < 0 {
		return 0
	}
	return bytes.Count(data[:i], []byte("\n")) + 1
}

// converter turns a yaml.Node tree into plain values, enforcing the
// structural limits as it goes.
type converter struct {
	file    string
	doc     *document
	nodes   int
	aliases int
	errs    Errors
	stopped bool // a limit was hit: the document is abandoned
}

func convertDocument(file string, root *yaml.Node) (*document, Errors) {
	c := &converter{file: file, doc: &document{file: file, line: root.Line, lines: map[string]int{}}}
	if root.Kind != yaml.MappingNode {
		return nil, Errors{{File: file, Line: root.Line, Message: "a manifest must be a YAML mapping with apiVersion, kind, metadata and spec"}}
	}
	v := c.convert(root, make([]string, 0, MaxDepth), "", 1, 0)
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	c.doc.value = v
	return c.doc, nil
}

func (c *converter) fail(line int, loc []string, msg string) {
	c.errs = append(c.errs, Error{File: c.file, Line: line, Path: displayPath(nil, loc), Message: msg})
}

// convert converts n found at loc, whose locKey is lk. aliasLine is
// non-zero inside an alias expansion: fields there are reported at the
// line of the alias. loc is a stack: a child's location is appended in
// place, as nothing keeps it once the child is converted.
func (c *converter) convert(n *yaml.Node, loc []string, lk string, depth, aliasLine int) any {
	if c.stopped {
		return nil
	}
	c.nodes++
	if c.nodes > MaxNodesPerDocument {
		c.fail(c.doc.line, nil, fmt.Sprintf("document too large: more than %d YAML nodes after alias expansion (limit MaxNodesPerDocument)", MaxNodesPerDocument))
		c.stopped = true
		return nil
	}
	if depth > MaxDepth {
		c.fail(lineOr(aliasLine, n.Line), loc, fmt.Sprintf("nesting deeper than %d levels (limit MaxDepth)", MaxDepth))
		c.stopped = true
		return nil
	}
	switch n.Kind {
	case yaml.AliasNode:
		c.aliases++
		if c.aliases > MaxAliasesPerDocument {
			c.fail(lineOr(aliasLine, n.Line), loc, fmt.Sprintf("more than %d aliases in one document (limit MaxAliasesPerDocument)", MaxAliasesPerDocument))
			c.stopped = true
			return nil
		}
		if n.Alias == nil {
			c.fail(n.Line, loc, "alias to an unknown anchor")
			return nil
		}
		return c.convert(n.Alias, loc, lk, depth, lineOr(aliasLine, n.Line))
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			kline := lineOr(aliasLine, k.Line)
			if k.Kind == yaml.AliasNode && k.Alias != nil {
				k = k.Alias
			}
			if k.Kind != yaml.ScalarNode {
				c.fail(kline, loc, "mapping keys must be plain strings")
				continue
			}
			if k.ShortTag() == "!!merge" {
				c.fail(kline, loc, "merge keys (<<) are not supported; repeat the fields or alias a whole value")
				continue
			}
			key := k.Value
			sub, subKey := append(loc, key), childKey(loc, lk, key)
			if _, dup := m[key]; dup {
				first := c.doc.lines[subKey] // set when the key was first seen
				c.fail(kline, sub, fmt.Sprintf("duplicate key %q (first at line %d)", key, first))
				continue
			}
			c.doc.lines[subKey] = kline
			m[key] = c.convert(v, sub, subKey, depth+1, aliasLine)
		}
		return m
	case yaml.SequenceNode:
		s := make([]any, len(n.Content))
		for i, item := range n.Content {
			idx := strconv.Itoa(i)
			sub, subKey := append(loc, idx), childKey(loc, lk, idx)
			c.doc.lines[subKey] = lineOr(aliasLine, item.Line)
			s[i] = c.convert(item, sub, subKey, depth+1, aliasLine)
		}
		return s
	case yaml.ScalarNode:
		return c.scalar(n, loc, aliasLine)
	}
	c.fail(lineOr(aliasLine, n.Line), loc, "unsupported YAML node")
	return nil
}

func (c *converter) scalar(n *yaml.Node, loc []string, aliasLine int) any {
	line := lineOr(aliasLine, n.Line)
	switch n.ShortTag() {
	case "!!null":
		return nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			c.fail(line, loc, fmt.Sprintf("invalid boolean %q", n.Value))
		}
		return b
	case "!!int":
		var i int64
		if err := n.Decode(&i); err != nil {
			c.fail(line, loc, fmt.Sprintf("integer %s out of range", n.Value))
			return nil
		}
		return i
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			c.fail(line, loc, fmt.Sprintf("%s is not a finite number", n.Value))
			return nil
		}
		return f
	case "!!str", "!!timestamp", "!!binary":
		// Timestamps and binary stay the text that was written: no manifest
		// field is a date, and string fields must see what the author typed.
		return n.Value
	}
	c.fail(line, loc, fmt.Sprintf("unsupported YAML tag %s", n.Tag))
	return nil
}

func lineOr(override, line int) int {
	if override > 0 {
		return override
	}
	return line
}

var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// displayPath renders an instance location as a field path:
// spec.disks[0].sizeGiB, metadata.annotations["nkudo.io/allow-prune"].
// value (the document, may be nil) tells array indexes from keys.
func displayPath(value any, loc []string) string {
	var b strings.Builder
	cur := value
	for _, tok := range loc {
		switch v := cur.(type) {
		case []any:
			b.WriteString("[" + tok + "]")
			if i, err := strconv.Atoi(tok); err == nil && i >= 0 && i < len(v) {
				cur = v[i]
			} else {
				cur = nil
			}
			continue
		case map[string]any:
			cur = v[tok]
		default:
			cur = nil
			if isIndex(tok) { // no value to tell: assume digits are an index
				b.WriteString("[" + tok + "]")
				continue
			}
		}
		if plainKey.MatchString(tok) {
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(tok)
		} else {
			b.WriteString("[" + strconv.Quote(tok) + "]")
		}
	}
	return b.String()
}

func isIndex(tok string) bool {
	if tok == "" {
		return false
	}
	for _, r := range tok {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
