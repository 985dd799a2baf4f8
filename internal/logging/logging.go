// Package logging owns the one logger constructor of the three binaries:
// the --log-level and --log-format flags (NKUDO_LOG_LEVEL,
// NKUDO_LOG_FORMAT) mean the same thing everywhere.
package logging

import (
	"fmt"
	"io"
	"log/slog"
)

// New returns a logger writing to w at level (debug, info, warn, error)
// in format (text or json). An unknown level or format is an error naming
// the flag, so a typo in a config file does not silently log at info.
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
}
