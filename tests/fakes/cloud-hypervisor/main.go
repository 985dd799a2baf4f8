// Command cloud-hypervisor is a fake Cloud Hypervisor v53.0 for tests: it is
// started like the real binary (--api-socket PATH or path=PATH), serves the
// same REST API with the same state machine and quirks (see package chfake),
// and boots nothing.
//
// Test controls (all optional):
//
//	--request-log FILE / CHFAKE_REQUEST_LOG   append every request as a JSON line
//	CHFAKE_FAULTS='[{"endpoint":"vm.boot","nth":1,"status":500}]'
//	--control-file FILE / CHFAKE_CONTROL      JSON {"faults":[...]} re-read per request
//	CHFAKE_POWER_OFF_DELAY=2s                 guest reaction time to the power button
//	CHFAKE_SKIP_FILE_CHECKS=1                 do not check payload/disk files at boot
//	CHFAKE_EXIT_NOW=1                         exit 1 at once (a crashing VMM)
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nkudo/nkudo/tests/fakes/chfake"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var socket, requestLog, controlFile string
	noShutdown := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		val := func() string {
			if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(k, "--") {
				return v
			}
			if i+1 < len(args) {
				i++
				return args[i]
			}
			fmt.Fprintf(os.Stderr, "cloud-hypervisor: %s needs a value\n", a)
			os.Exit(2)
			return ""
		}
		name, _, _ := strings.Cut(a, "=")
		switch name {
		case "--version", "-V":
			fmt.Println("cloud-hypervisor " + chfake.Version)
			return 0
		case "-h", "--help":
			fmt.Println("cloud-hypervisor (fake) --api-socket <path=PATH|PATH> [--request-log FILE] [--no-shutdown]")
			return 0
		case "--api-socket":
			v := val()
			switch {
			case strings.HasPrefix(v, "path="):
				socket = strings.TrimPrefix(v, "path=")
			case strings.HasPrefix(v, "fd="):
				fmt.Fprintln(os.Stderr, "cloud-hypervisor (fake): --api-socket fd= is not supported")
				return 1
			default:
				socket = v
			}
		case "--request-log":
			requestLog = val()
		case "--control-file":
			controlFile = val()
		case "--no-shutdown":
			noShutdown = true
		case "-v", "-vv", "-vvv":
		case "--log-file", "--seccomp", "--event-monitor", "--serial", "--console":
			_ = val() // accepted like the real binary; nothing to do
		case "--kernel", "--firmware", "--igvm":
			fmt.Fprintln(os.Stderr, "cloud-hypervisor (fake): payload flags are not supported; use the API")
			return 1
		default:
			fmt.Fprintf(os.Stderr, "cloud-hypervisor (fake): unknown argument %q\n", a)
			return 1
		}
	}
	if os.Getenv("CHFAKE_EXIT_NOW") != "" {
		fmt.Fprintln(os.Stderr, "cloud-hypervisor (fake): exiting now (CHFAKE_EXIT_NOW)")
		return 1
	}
	if socket == "" {
		fmt.Fprintln(os.Stderr, "cloud-hypervisor (fake): --api-socket is required")
		return 1
	}
	if requestLog == "" {
		requestLog = os.Getenv("CHFAKE_REQUEST_LOG")
	}
	if controlFile == "" {
		controlFile = os.Getenv("CHFAKE_CONTROL")
	}
	faults, err := chfake.FaultsFromEnv(os.Getenv("CHFAKE_FAULTS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cloud-hypervisor (fake):", err)
		return 1
	}
	cfg := chfake.Config{
		Faults: faults, ControlFile: controlFile, RequestLog: requestLog, NoShutdown: noShutdown,
		SkipFileChecks: os.Getenv("CHFAKE_SKIP_FILE_CHECKS") != "",
	}
	if d := os.Getenv("CHFAKE_POWER_OFF_DELAY"); d != "" {
		if cfg.PowerOffDelay, err = time.ParseDuration(d); err != nil {
			fmt.Fprintln(os.Stderr, "cloud-hypervisor (fake): CHFAKE_POWER_OFF_DELAY:", err)
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := chfake.New(cfg)
	if err := srv.ListenAndServe(ctx, socket); err != nil {
		fmt.Fprintln(os.Stderr, "cloud-hypervisor (fake):", err)
		return 1
	}
	select {
	case <-srv.Done():
		return srv.ExitCode()
	default:
		return 0
	}
}
