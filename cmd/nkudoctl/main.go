// Command nkudoctl is the n-kudo command-line client: it validates and
// previews a tenant's manifests offline, and talks to the control plane.
//
// Every command lives in its own file as a struct with a Run method; add it
// to CLI below. Run may take any of *Globals, *Streams, context.Context
// (cancelled on SIGINT/SIGTERM) and *api.Client (built once from the
// flags, environment and config file), which are bound by run. Commands write only
// to the injected Streams and report their exit status by returning an error
// (see exitStatus).
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/internal/completion"
	"github.com/nkudo/nkudo/internal/version"
)

// Globals are the flags shared by every command.
type Globals struct {
	Server string `help:"Control-plane URL." env:"NKUDO_SERVER" placeholder:"URL"`
	Token  string `help:"API token for the control plane." env:"NKUDO_TOKEN" placeholder:"TOKEN"`
	CAFile string `name:"ca-file" help:"PEM bundle that verifies the server." env:"NKUDO_CA_FILE" placeholder:"FILE"`
	CAHash string `name:"ca-hash" help:"Pin the server's CA by fingerprint (as printed with enrollment tokens)." env:"NKUDO_CA_HASH" placeholder:"sha256:HEX"`
	Output string `help:"Output format: ${enum}." enum:"table,json" default:"table" short:"o"`
	// ShowVersion is --version; the version command prints the same lines.
	ShowVersion kong.VersionFlag `name:"version" help:"Print the version and exit."`

	// configTenant is the config file's tenant (NKUDO_TENANT overrides it;
	// login's --tenant sets it). configErr is why the config file could not
	// be read: reported by the commands that talk to the control plane,
	// not by the offline ones.
	configTenant string
	configErr    error
}

// description is the root help text; it names the environment variables
// that are not a flag's (a flag's own is shown beside it).
const description = `n-kudo: run fleets of edge sites and their microVMs from git.

Settings come from flags, then the environment, then the config file that
"nkudoctl login" writes. Environment: NKUDO_SERVER, NKUDO_TOKEN,
NKUDO_CA_FILE, NKUDO_CA_HASH (see the flags), NKUDO_TENANT (tenant an admin
token acts on), NKUDO_CONFIG (the config file; default <user config
dir>/nkudo/config.json), NO_COLOR (no colour on a terminal).`

// CLI is the command tree. Add new commands here, one field each.
type CLI struct {
	Globals

	Validate ValidateCmd `cmd:"" help:"Validate a manifest directory (exit 0 valid, 1 invalid, 2 error)."`
	Diff     DiffCmd     `cmd:"" help:"Preview the plans for a manifest directory against an inventory file or the live fleet (exit 0 no changes, 1 changes, 2 error)."`
	Preview  PreviewCmd  `cmd:"" help:"Show the stored plan preview of a pull request like diff (exit 0 no changes, 1 changes, 2 error); --list the open ones."`

	Login  LoginCmd  `cmd:"" help:"Check a control plane and token and save them to the config file."`
	Apply  ApplyCmd  `cmd:"" help:"Reconcile the repository now; --wait follows every site (exit 0 applied, 1 failed, 2 error or timeout)."`
	Status StatusCmd `cmd:"" help:"Show a commit's statuses and each site's convergence."`
	Sites  SitesCmd  `cmd:"" help:"List sites and their agents' last report; create enrollment tokens; set NetBird setup keys."`
	VMs    VMsCmd    `cmd:"" name:"vms" help:"Show desired and actual VMs per site."`
	Plans  PlansCmd  `cmd:"" help:"List plans, newest first."`
	Logs   LogsCmd   `cmd:"" help:"Print a plan's execution log (--follow to stream it)."`
	Audit  AuditCmd  `cmd:"" help:"Verify the audit log's hash chain (admin token)."`

	Credentials CredentialsCmd `cmd:"" help:"Manage the tenant's credentials for fetching and posting statuses (write-only secrets)."`
	Repos       ReposCmd       `cmd:"" help:"Register, list, change and remove the tenant's git repositories."`
	NetBird     NetBirdCmd     `cmd:"" name:"netbird" help:"Show, set or remove the tenant's NetBird management API integration (write-only token)."`
	Images      ImagesCmd      `cmd:"" help:"Push, list and remove the tenant's kernel, initramfs, firmware and disk images."`
	Secrets     SecretsCmd     `cmd:"" help:"Encrypt values (cloud-init user-data) so that only one site's agent can read them."`

	Version VersionCmd `cmd:"" help:"Print nkudoctl's build identity and API protocol version."`

	Completion completion.Cmd `cmd:"" help:"Print the shell code that completes nkudoctl's commands and flags (bash, zsh, fish)."`
}

// Streams are where a command reads and writes. In is nil when there is no
// input. Color is true when Out is a terminal and NO_COLOR is not set.
type Streams struct {
	In    io.Reader
	Out   io.Writer
	Err   io.Writer
	Color bool
}

// Exit codes, as kubectl diff and flux diff use them.
const (
	exitOK      = 0
	exitChanges = 1 // validate: invalid manifests; diff: changes found
	exitError   = 2 // could not run: bad flags, missing directory, unreadable input
)

// exitStatus is returned by a command that wants a specific exit code
// without printing an error (its output already said everything).
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// kongExit unwinds a help or usage exit from inside kong.
type kongExit int

func main() {
	streams := &Streams{
		In:    os.Stdin,
		Out:   os.Stdout,
		Err:   os.Stderr,
		Color: isTerminal(os.Stdout) && os.Getenv("NO_COLOR") == "",
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], streams)
	stop()
	os.Exit(code)
}

// run parses args, runs the selected command and maps its error to an exit
// code: nil 0, exitStatus its value, anything else 2 with the error on stderr.
func run(ctx context.Context, args []string, s *Streams) (code int) {
	var cli CLI
	defer func() {
		if r := recover(); r != nil {
			k, ok := r.(kongExit)
			if !ok {
				panic(r)
			}
			code = int(k)
		}
	}()
	cfg, cfgErr := loadConfig()
	cli.configTenant, cli.configErr = cfg.Tenant, cfgErr
	parser, err := kong.New(&cli,
		kong.Name("nkudoctl"),
		kong.Resolvers(configResolver(cfg)),
		kong.Description(description),
		kong.Writers(s.Out, s.Err),
		kong.Exit(func(c int) { panic(kongExit(c)) }),
		kong.Vars{"version": fmt.Sprintf("nkudoctl %s\napi protocol %d", version.String(), api.ProtocolVersion)},
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
	if err != nil {
		fmt.Fprintf(s.Err, "nkudoctl: %v\n", err)
		return exitError
	}
	// The shell asking for completions (COMP_LINE set) is answered here.
	completion.Complete(parser, func(c int) { panic(kongExit(c)) })
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintf(s.Err, "nkudoctl: %v\n", err)
		printCommandUsage(err, s.Err)
		return exitError
	}
	kctx.BindTo(ctx, (*context.Context)(nil))
	// The API client is built once, from the merged flags, environment and
	// config file, for the commands whose Run takes one.
	var client *api.Client
	defer func() {
		if client != nil {
			client.CloseIdleConnections()
		}
	}()
	if err := kctx.BindToProvider(func() (*api.Client, error) {
		c, err := connect(&cli.Globals)
		client = c
		return c, err
	}); err != nil {
		fmt.Fprintf(s.Err, "nkudoctl: %v\n", err)
		return exitError
	}
	err = kctx.Run(&cli.Globals, s)
	var st exitStatus
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &st):
		return int(st)
	default:
		fmt.Fprintf(s.Err, "nkudoctl: %v\n", err)
		if h := hint(err); h != "" {
			fmt.Fprintf(s.Err, "hint: %s\n", h)
		}
		return exitError
	}
}

// hint says what to do about the errors a new user meets first.
func hint(err error) string {
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) || strings.Contains(err.Error(), "certificate signed by unknown authority") {
		return "this machine does not trust the server's certificate authority: pass --ca-hash sha256:HEX " +
			"(printed by `nkudo pki init` and with enrollment tokens) or --ca-file ca.crt to `nkudoctl login`, " +
			"or set NKUDO_CA_FILE (or NKUDO_CA_HASH)"
	}
	return ""
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

// isTerminal reports whether f is a character device (a terminal), without
// a dependency: good enough to decide on colour.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
