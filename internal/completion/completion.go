// Package completion owns shell completion for the kong command lines of
// nkudo and nkudoctl: the `completion SHELL` command that prints what to
// source, and the hook that answers the shell's completion requests.
//
// Completion follows the COMP_LINE protocol of bash's `complete -C`: the
// shell runs the program itself with COMP_LINE set, and the program prints
// the candidates (github.com/willabides/kongplete over posener/complete).
// zsh runs the same through bashcompinit, fish through a small function.
package completion

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/willabides/kongplete"
)

// Complete answers a completion request when the shell made one (COMP_LINE
// is set) and then calls exit(0); otherwise it returns at once.
func Complete(parser *kong.Kong, exit func(int)) {
	kongplete.Complete(parser, kongplete.WithExitFunc(exit))
}

// Cmd is the `completion SHELL` command.
type Cmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"bash, zsh or fish."`
}

// Help is the long help text.
func (c *Cmd) Help() string {
	return `Prints the shell code that makes the shell complete this program's
commands and flags. Load it in the current shell, or from the shell's
start-up file:

  bash:  source <(PROGRAM completion bash)       (~/.bashrc)
  zsh:   source <(PROGRAM completion zsh)        (~/.zshrc)
  fish:  PROGRAM completion fish | source        (~/.config/fish/config.fish)`
}

// Run prints the script for the shell.
func (c *Cmd) Run(kctx *kong.Context) error {
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("completion: path of this program: %w", err)
	}
	s, err := Script(c.Shell, kctx.Model.Name, bin)
	if err != nil {
		return err
	}
	_, err = fmt.Fprint(kctx.Stdout, s)
	return err
}

// Script is the code that registers bin as the completer of cmd in shell.
func Script(shell, cmd, bin string) (string, error) {
	bin = shellQuote(filepath.Clean(bin))
	switch shell {
	case "bash":
		return fmt.Sprintf("complete -C %s %s\n", bin, cmd), nil
	case "zsh":
		return fmt.Sprintf("autoload -U +X bashcompinit && bashcompinit\ncomplete -C %s %s\n", bin, cmd), nil
	case "fish":
		fn := "__complete_" + strings.ReplaceAll(cmd, "-", "_")
		return fmt.Sprintf(`function %[1]s
    set -lx COMP_LINE (commandline -cp)
    test -z (commandline -ct)
    and set COMP_LINE "$COMP_LINE "
    %[2]s
end
complete -f -c %[3]s -a "(%[1]s)"
`, fn, bin, cmd), nil
	}
	return "", fmt.Errorf("completion: shell %q: want bash, zsh or fish", shell)
}

// shellQuote quotes s for bash, zsh and fish when it holds anything but
// plain path characters.
func shellQuote(s string) string {
	if strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
