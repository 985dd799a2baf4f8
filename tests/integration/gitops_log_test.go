package integration

import (
	"log/slog"
	"os"
	"strings"
	"testing"
)

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// newTestSlog logs the GitOps loop into the test log (warn level, or
// debug with NKUDO_TEST_LOG=debug).
func newTestSlog(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("NKUDO_TEST_LOG") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: level}))
}
