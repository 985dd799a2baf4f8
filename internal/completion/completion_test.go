package completion

import (
	"os/exec"
	"strings"
	"testing"
)

// TestScriptRegistersInBash: bash accepts the bash script and registers
// the program as the completer of the command.
func TestScriptRegistersInBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("SKIP: no bash on PATH")
	}
	s, err := Script("bash", "nkudoctl", "/opt/n kudo/nkudoctl")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), bash, "-c", s+"complete -p nkudoctl").CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "complete -C '/opt/n kudo/nkudoctl' nkudoctl" {
		t.Errorf("complete -p nkudoctl = %q", got)
	}
}

func TestScriptShells(t *testing.T) {
	for shell, want := range map[string]string{
		"zsh":  "bashcompinit\ncomplete -C /usr/bin/nkudo nkudo\n",
		"fish": `complete -f -c nkudo -a "(__complete_nkudo)"`,
	} {
		s, err := Script(shell, "nkudo", "/usr/bin/nkudo")
		if err != nil || !strings.Contains(s, want) {
			t.Errorf("Script(%s) = %q, %v; want it to hold %q", shell, s, err, want)
		}
	}
	if _, err := Script("tcsh", "nkudo", "/usr/bin/nkudo"); err == nil || !strings.Contains(err.Error(), "want bash, zsh or fish") {
		t.Errorf("Script(tcsh): %v", err)
	}
}
