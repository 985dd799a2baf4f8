package main

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// --control-plane repeats (or takes commas, as NKUDO_CONTROL_PLANE does);
// without it the URL enrolled with is the only one.
func TestControlPlaneURLs(t *testing.T) {
	const enrolled = "https://enrolled.example:8443"
	for _, tc := range []struct {
		name string
		env  string
		args []string
		want []string
	}{
		{name: "enrolled by default", want: []string{enrolled}},
		{name: "repeated flag", args: []string{"--control-plane", "https://a:1", "--control-plane", "https://b:1/"},
			want: []string{"https://a:1", "https://b:1"}},
		{name: "commas", args: []string{"--control-plane", "https://a:1,https://b:1,https://a:1"},
			want: []string{"https://a:1", "https://b:1"}},
		{name: "environment", env: "https://a:1,https://c:1", want: []string{"https://a:1", "https://c:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NKUDO_CONTROL_PLANE", tc.env)
			if tc.env == "" {
				os.Unsetenv("NKUDO_CONTROL_PLANE")
			}
			c, err := parse(t, append([]string{"run"}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, controlPlaneURLs(c.Run.ControlPlane, enrolled)); d != "" {
				t.Errorf("URLs (-want +got):\n%s", d)
			}
		})
	}
}
