// Package vmmtest finds hypervisor processes that tests left running. Tests
// start real (fake) cloud-hypervisor processes in their own sessions; a
// package's TestMain checks with Leftover that every one was stopped.
package vmmtest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Leftover lists "pid command line" of every running process whose
// executable is binary (an absolute path), as /proc shows them.
func Leftover(binary string) []string {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue // gone, or a zombie
		}
		args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
		if args[0] == binary {
			out = append(out, fmt.Sprintf("%d %s", pid, strings.Join(args, " ")))
		}
	}
	return out
}

// Check reports the processes of binary still running, and kills them so
// that one leaking test does not leave them behind for good. It returns ""
// when there are none.
func Check(binary string) string {
	left := Leftover(binary)
	if len(left) == 0 {
		return ""
	}
	for _, l := range left {
		pid, _ := strconv.Atoi(strings.Fields(l)[0])
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return fmt.Sprintf("%d %s process(es) left running by the tests:\n  %s", len(left), filepath.Base(binary), strings.Join(left, "\n  "))
}
