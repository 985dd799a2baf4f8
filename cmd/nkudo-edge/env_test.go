package main

import (
	"bufio"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// parse parses args into a fresh cli, as run does.
func parse(t *testing.T, args ...string) (cli, error) {
	t.Helper()
	var c cli
	parser, err := kong.New(&c, kong.Name("nkudo-edge"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = parser.Parse(args)
	return c, err
}

func TestLogFlagsFromEnvironment(t *testing.T) {
	for _, tc := range []struct {
		name          string
		level, format string // environment; "" = unset
		args          []string
		wantLevel     string
		wantFormat    string
		wantErr       string
	}{
		{name: "defaults", wantLevel: "info", wantFormat: "text"},
		{name: "environment", level: "debug", format: "json", wantLevel: "debug", wantFormat: "json"},
		{name: "flags win", level: "debug", format: "json", args: []string{"--log-level=warn", "--log-format=text"}, wantLevel: "warn", wantFormat: "text"},
		{name: "bad level", level: "loud", wantErr: "--log-level must be one of"},
		{name: "bad format", format: "xml", wantErr: "--log-format must be one of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range map[string]string{"NKUDO_LOG_LEVEL": tc.level, "NKUDO_LOG_FORMAT": tc.format} {
				t.Setenv(k, v)
				if v == "" {
					os.Unsetenv(k)
				}
			}
			c, err := parse(t, append([]string{"version"}, tc.args...)...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("err %v, want one holding %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.LogLevel != tc.wantLevel || c.LogFormat != tc.wantFormat {
				t.Errorf("level %q format %q, want %q %q", c.LogLevel, c.LogFormat, tc.wantLevel, tc.wantFormat)
			}
		})
	}
}

// TestEnvSample checks that every variable deploy/nkudo-edge.env.sample
// names (set or commented out) is read by `nkudo-edge run`, and that the
// sample's values parse.
func TestEnvSample(t *testing.T) {
	f, err := os.Open("../../deploy/nkudo-edge.env.sample")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var c cli
	parser, err := kong.New(&c, kong.Name("nkudo-edge"))
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, node := range []*kong.Node{parser.Model.Node, findCmd(t, parser.Model.Node, "run")} {
		for _, fl := range node.Flags {
			for _, e := range fl.Envs {
				known[e] = true
			}
		}
	}
	line := regexp.MustCompile(`^#?(NKUDO_[A-Z_]+)=(.*)$`)
	sc := bufio.NewScanner(f)
	seen := 0
	for n := 1; sc.Scan(); n++ {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		seen++
		if !known[m[1]] {
			t.Errorf("nkudo-edge.env.sample:%d: %s is not read by nkudo-edge run", n, m[1])
		}
		t.Setenv(m[1], m[2])
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if seen < 3 {
		t.Fatalf("found %d variables in the sample, want at least 3 (control plane, log level, log format)", seen)
	}
	// The sample's values are valid (the run command would then fail only for want of an enrollment).
	if _, err := parse(t, "run"); err != nil {
		t.Errorf("the sample's values do not parse: %v", err)
	}
}

func findCmd(t *testing.T, n *kong.Node, name string) *kong.Node {
	t.Helper()
	for _, c := range n.Children {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no %s command", name)
	return nil
}
