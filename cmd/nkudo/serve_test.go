package main

import "testing"

func TestDatabaseKind(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"", "sqlite"},
		{"sqlite://", "sqlite"},
		{"sqlite://x.db", "sqlite"},
		{"sqlite:x.db", "sqlite"},
		{"sqlite:///var/lib/n.db", "sqlite"},
		{"postgres://u:p@h/db", "postgres"},
		{"postgresql://h/db", "postgres"},
	} {
		if got := databaseKind(tc.url); got != tc.want {
			t.Errorf("databaseKind(%q) = %q, want %q", tc.url, got, tc.want)
		}
	}
}
