// Command nkudo is the n-kudo control-plane daemon: `serve` runs the HTTPS
// API, `migrate` applies database migrations, `pki init` creates a
// persistent CA, and `admin …` bootstraps tenants, tokens and revocations
// directly on the store. Every flag also reads an environment variable and
// can be set in a YAML or JSON config file given with --config.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"
	"sigs.k8s.io/yaml"

	"github.com/nkudo/nkudo/internal/completion"
	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/internal/logging"
	"github.com/nkudo/nkudo/internal/version"
)

// Globals are the flags every command takes.
type Globals struct {
	Config    kong.ConfigFlag `help:"YAML or JSON file with flag values (keys are flag names, e.g. data-dir)." env:"NKUDO_CONFIG" placeholder:"FILE"`
	LogLevel  string          `help:"Log level: debug, info, warn, error." default:"info" env:"NKUDO_LOG_LEVEL" enum:"debug,info,warn,error"`
	LogFormat string          `help:"Log format: text or json." default:"text" env:"NKUDO_LOG_FORMAT" enum:"text,json"`
	// ShowVersion is --version; the version command prints the same line.
	ShowVersion kong.VersionFlag `name:"version" help:"Print the version and exit."`

	stdout io.Writer
	stderr io.Writer
}

// Logger builds the process logger from the flags.
func (g *Globals) Logger() *slog.Logger {
	l, err := logging.New(g.stderr, g.LogLevel, g.LogFormat)
	if err != nil {
		// Unreachable from the command line: kong checks both enums.
		l, _ = logging.New(g.stderr, "info", "text")
	}
	return l
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

	Completion completion.Cmd `cmd:"" help:"Print the shell code that completes nkudo's commands and flags (bash, zsh, fish)."`
}

// yamlConfig loads a YAML (or JSON) config file for kong. Keys are flag
// names (data-dir or data_dir). The file has the lowest precedence: flags,
// then environment variables, then the file, then defaults; a key that
// names no flag is an error, so a typo does not silently fall back.
func yamlConfig(r io.Reader) (kong.Resolver, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var values map[string]any
	if err := yaml.Unmarshal(b, &values); err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	norm := make(map[string]any, len(values))
	for k, v := range values {
		norm[strings.ReplaceAll(k, "_", "-")] = v
	}
	return configResolver(norm), nil
}

// configResolver holds a config file's values by flag name.
type configResolver map[string]any

// Validate rejects keys that name no flag of any command.
func (c configResolver) Validate(app *kong.Application) error {
	known := map[string]bool{}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			known[f.Name] = true
		}
		for _, ch := range n.Children {
			walk(ch)
		}
	}
	walk(app.Node)
	var unknown []string
	for k := range c {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("config file: unknown keys %s (keys are flag names, e.g. data-dir)", strings.Join(unknown, ", "))
	}
	return nil
}

// Resolve returns the file's value for flag unless one of the flag's
// environment variables is set: the environment wins over the file.
func (c configResolver) Resolve(_ *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
	for _, e := range flag.Envs {
		if _, ok := os.LookupEnv(e); ok {
			return nil, nil
		}
	}
	return c[flag.Name], nil
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

// kongExit unwinds a help or --version exit from inside kong, so that run
// returns instead of ending the process.
type kongExit int

// run parses args and runs the chosen command; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	var cli CLI
	cli.stdout, cli.stderr = stdout, stderr
	defer func() {
		if r := recover(); r != nil {
			k, ok := r.(kongExit)
			if !ok {
				panic(r)
			}
			code = int(k)
		}
	}()
	parser, err := kong.New(&cli,
		kong.Name("nkudo"),
		kong.Description("n-kudo control plane: GitOps for edge sites running Cloud Hypervisor microVMs."),
		kong.Configuration(yamlConfig),
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.Bind(&cli.Globals),
		kong.Writers(stdout, stderr),
		kong.Exit(func(c int) { panic(kongExit(c)) }),
		kong.Vars{"version": "nkudo " + version.String()},
	)
	if err != nil {
		fmt.Fprintln(stderr, "nkudo:", err)
		return 2
	}
	// The shell asking for completions (COMP_LINE set) is answered here.
	completion.Complete(parser, func(c int) { panic(kongExit(c)) })
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintln(stderr, "nkudo:", err)
		printCommandUsage(err, stderr)
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

// printCommandUsage prints, after a usage error, the short usage of the
// command the arguments reached, not the whole tree.
func printCommandUsage(err error, w io.Writer) {
	var pe *kong.ParseError
	if !errors.As(err, &pe) || pe.Context == nil {
		return
	}
	pe.Context.Stdout = w
	_ = pe.Context.PrintUsage(true)
}
