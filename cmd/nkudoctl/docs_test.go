package main

import (
	"bufio"
	"os"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// TestGettingStartedCommandsParse: every nkudoctl command on
// docs/getting-started.md names a real command with real flags, so the
// page cannot drift from the CLI.
func TestGettingStartedCommandsParse(t *testing.T) {
	f, err := os.Open("../../docs/getting-started.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds []string
	inBlock, cont := false, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			inBlock = line == "```sh"
			continue
		}
		if !inBlock {
			continue
		}
		line = cont + strings.TrimSpace(line)
		if strings.HasSuffix(line, "\\") {
			cont = strings.TrimSuffix(line, "\\") + " "
			continue
		}
		cont = ""
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		if strings.HasPrefix(line, "nkudoctl ") {
			cmds = append(cmds, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(cmds) < 10 {
		t.Fatalf("found only %d nkudoctl commands on the page: %q", len(cmds), cmds)
	}
	for _, c := range cmds {
		var cli CLI
		parser, err := kong.New(&cli, kong.Name("nkudoctl"), kong.Exit(func(int) { t.Fatalf("%s: kong exited", c) }))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parser.Parse(strings.Fields(c)[1:]); err != nil {
			t.Errorf("docs/getting-started.md: %q does not parse: %v", c, err)
		}
	}
}
