// Command nkudo is the n-kudo control-plane daemon: `serve` runs the HTTPS
// API, `migrate` applies database migrations, `pki init` creates a
// persistent CA, and `admin …` bootstraps tenants, tokens and revocations
// directly on the store. Every flag also reads an environment variable and
// can be set in a YAML or JSON config file given with --config.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"
	"sigs.k8s.io/yaml"

	"github.com/nkudo/nkudo/internal/egress"
)

// Globals are the flags every command takes.
type Globals struct {
	Config    kong.ConfigFlag `help:"YAML or JSON file with flag values (keys are flag names, e.g. data-dir)." env:"NKUDO_CONFIG" placeholder:"FILE"`
	LogLevel  string          `help:"Log level: debug, info, warn, error." default:"info" env:"NKUDO_LOG_LEVEL" enum:"debug,info,warn,error"`
	LogFormat string          `help:"Log format: text or json." default:"text" env:"NKUDO_LOG_FORMAT" enum:"text,json"`

	stdout io.Writer
	stderr io.Writer
}

// Logger builds the process logger from the flags.
func (g *Globals) Logger() *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(g.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if g.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(g.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(g.stderr, opts))
}

// CLI is the command tree.
type CLI struct {
	Globals

	Serve   ServeCmd   `cmd:"" help:"Run the control plane (HTTPS API for agents and people)."`
	Migrate MigrateCmd `cmd:"" help:"Apply database migrations and exit."`
	PKI     PKICmd     `cmd:"" name:"pki" help:"Manage the certificate authority."`
	Admin   AdminCmd   `cmd:"" help:"Bootstrap tenants, API tokens and revocations directly on the store."`
	Demo    DemoCmd    `cmd:"" help:"Run the one-command demo: a control plane, a git repository and edge agents on this machine."`
	Version VersionCmd `cmd:"" help:"Print the build identity (version, commit, date, Go, platform)."`
	Bench   BenchCmd   `cmd:"" help:"Measure a control plane on this machine (fleet simulator)."`
}

// yamlConfig loads a YAML (or JSON) config file for kong.
func yamlConfig(r io.Reader) (kong.Resolver, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var values map[string]any
	if err := yaml.Unmarshal(b, &values); err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	// kong looks keys up in snake_case; accept the flag spelling (data-dir) too.
	norm := make(map[string]any, len(values))
	for k, v := range values {
		norm[strings.ReplaceAll(k, "-", "_")] = v
	}
	j, err := json.Marshal(norm)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	return kong.JSON(bytes.NewReader(j))
}

func main() {
	// go-git's transports are process-wide: route its HTTP(S) through the
	// egress policy each fetch carries (see internal/egress).
	egress.InstallGit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses args and runs the chosen command; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cli CLI
	cli.stdout, cli.stderr = stdout, stderr
	parser, err := kong.New(&cli,
		kong.Name("nkudo"),
		kong.Description("n-kudo control plane: GitOps for edge sites running Cloud Hypervisor microVMs."),
		kong.UsageOnError(),
		kong.Configuration(yamlConfig),
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.Bind(&cli.Globals),
		kong.Writers(stdout, stderr),
	)
	if err != nil {
		fmt.Fprintln(stderr, "nkudo:", err)
		return 2
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintln(stderr, "nkudo:", err)
		return 2
	}
	if kctx.Command() == "" {
		return 0
	}
	if err := kctx.Run(); err != nil {
		var xe *exitError
		if errors.As(err, &xe) {
			if xe.err != nil {
				fmt.Fprintln(stderr, "nkudo:", xe.err)
			}
			return xe.code
		}
		fmt.Fprintln(stderr, "nkudo:", err)
		return 1
	}
	return 0
}
