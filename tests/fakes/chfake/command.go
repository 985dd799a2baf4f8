package chfake

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
)

// Command runs the fake as a program started like the real binary, with
// the subset of its command line the agent's provider uses (--api-socket,
// --no-shutdown, --version), until ctx ends or the VMM exits, and returns
// the exit code. nkudo demo and nkudo-edge run --hypervisor-fake run it
// when their own executable is started as "cloud-hypervisor".
func Command(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var socket string
	cfg := Config{}
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(args[i], "=")
		if !strings.HasPrefix(name, "--") {
			hasVal = false
			name = args[i]
		}
		next := func() string {
			if hasVal {
				return val
			}
			if i+1 < len(args) {
				i++
				return args[i]
			}
			return ""
		}
		switch name {
		case "--version", "-V":
			fmt.Fprintln(stdout, "cloud-hypervisor "+Version)
			return 0
		case "--api-socket":
			socket = strings.TrimPrefix(next(), "path=")
		case "--no-shutdown":
			cfg.NoShutdown = true
		case "-v", "-vv", "-vvv":
		case "--log-file", "--seccomp", "--event-monitor", "--serial", "--console":
			_ = next()
		default:
			fmt.Fprintf(stderr, "cloud-hypervisor (n-kudo fake): unknown argument %q\n", args[i])
			return 1
		}
	}
	if socket == "" {
		fmt.Fprintln(stderr, "cloud-hypervisor (n-kudo fake): --api-socket is required")
		return 1
	}
	cfg.RequestLog = os.Getenv("CHFAKE_REQUEST_LOG")
	srv := New(cfg)
	if err := srv.ListenAndServe(ctx, socket); err != nil {
		fmt.Fprintln(stderr, "cloud-hypervisor (n-kudo fake):", err)
		return 1
	}
	select {
	case <-srv.Done():
		return srv.ExitCode()
	default:
		return 0
	}
}
