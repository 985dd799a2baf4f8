package store_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/store"
)

// The audit hash is stored forever: this pins its encoding. If it changes,
// every existing chain stops verifying.
func TestAuditHashStable(t *testing.T) {
	e := store.AuditEvent{
		Seq: 7, Time: time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC), Tenant: "acme",
		Actor: "token:abc", Action: "site.create", Object: "site/edge-1",
		Detail: json.RawMessage(`{ "b": 1, "a": "x" }`), PrevHash: "00ff",
	}
	// Computed independently: sha256("00ff\n" + the compact JSON array).
	const want = "e9ddcced5f33687cd0777a045991a5fe566fd2b7ddbe8eafa01c6a806712f78c"
	got := store.AuditHash(e)
	if got != want {
		t.Errorf("AuditHash = %s, want %s", got, want)
	}
	// Whitespace in the detail and sub-microsecond time do not matter.
	e2 := e
	e2.Detail = json.RawMessage(`{"b":1,"a":"x"}`)
	e2.Time = e.Time.Truncate(time.Microsecond).In(time.FixedZone("X", 3600))
	if h := store.AuditHash(e2); h != got {
		t.Errorf("equivalent event hashes to %s, want %s", h, got)
	}
	// Every field counts.
	for name, mut := range map[string]func(*store.AuditEvent){
		"seq":    func(e *store.AuditEvent) { e.Seq++ },
		"time":   func(e *store.AuditEvent) { e.Time = e.Time.Add(time.Microsecond) },
		"tenant": func(e *store.AuditEvent) { e.Tenant = "other" },
		"actor":  func(e *store.AuditEvent) { e.Actor = "admin:x" },
		"action": func(e *store.AuditEvent) { e.Action = "site.delete" },
		"object": func(e *store.AuditEvent) { e.Object = "site/edge-2" },
		"detail": func(e *store.AuditEvent) { e.Detail = json.RawMessage(`{"b":2,"a":"x"}`) },
		"prev":   func(e *store.AuditEvent) { e.PrevHash = "00fe" },
	} {
		m := e
		mut(&m)
		if store.AuditHash(m) == got {
			t.Errorf("changing %s does not change the hash", name)
		}
	}
}

func TestValidName(t *testing.T) {
	for s, want := range map[string]bool{
		"a": true, "edge-1": true, "0abc": true, "a-b-c": true,
		"": false, "-a": false, "a-": false, "A": false, "a_b": false, "a.b": false, "ä": false,
		"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij123":  true,
		"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234": false,
	} {
		if got := store.ValidName(s); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestEnrollmentToken(t *testing.T) {
	id, secret, tok, err := store.NewEnrollmentToken()
	if err != nil {
		t.Fatal(err)
	}
	if len(id) != 32 || len(secret) != 64 || tok != id+"."+secret {
		t.Fatalf("NewEnrollmentToken = %q %q %q", id, secret, tok)
	}
	gotID, gotSecret, err := store.ParseEnrollmentToken(" " + tok + "\n")
	if err != nil || gotID != id || gotSecret != secret {
		t.Errorf("ParseEnrollmentToken = %q, %q, %v", gotID, gotSecret, err)
	}
	for _, bad := range []string{"", "nodot", ".s", "i.", "a.b.c"} {
		if _, _, err := store.ParseEnrollmentToken(bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("ParseEnrollmentToken(%q) error = %v, want ErrInvalid", bad, err)
		}
	}
	if store.HashSecret("x") == store.HashSecret("y") || !store.EqualHash(store.HashSecret("x"), store.HashSecret("x")) {
		t.Error("HashSecret/EqualHash disagree")
	}
}

func TestSecretRedacted(t *testing.T) {
	s := store.Secret("hunter2")
	for _, out := range []string{
		fmt.Sprint(s), fmt.Sprintf("%v %s %#v", s, s, s), fmt.Sprintf("%+v", struct{ K store.Secret }{s}),
	} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("secret printed: %q", out)
		}
	}
	b, err := json.Marshal(map[string]store.Secret{"k": s})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "hunter2") {
		t.Errorf("secret in JSON: %s", b)
	}
	if s.Reveal() != "hunter2" {
		t.Error("Reveal lost the value")
	}
}

func TestGaps(t *testing.T) {
	lines := func(seqs ...int64) []store.LogLine {
		var out []store.LogLine
		for _, s := range seqs {
			out = append(out, store.LogLine{Seq: s})
		}
		return out
	}
	tests := []struct {
		lines []store.LogLine
		after int64
		want  [][2]int64
	}{
		{lines(1, 2, 3), 0, nil},
		{lines(2, 3), 0, [][2]int64{{1, 1}}},
		{lines(1, 4, 5, 9), 0, [][2]int64{{2, 3}, {6, 8}}},
		{lines(11), 5, [][2]int64{{6, 10}}},
		{nil, 3, nil},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, store.Gaps(tc.lines, tc.after)); diff != "" {
			t.Errorf("Gaps(%v, %d) (-want +got):\n%s", tc.lines, tc.after, diff)
		}
	}
}
