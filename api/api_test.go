package api

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestPath(t *testing.T) {
	tests := []struct {
		pattern string
		args    []string
		want    string
	}{
		{PathSite, []string{"edge-1"}, "/v1/sites/edge-1"},
		{PathRepoStatuses, []string{"r1", "abc"}, "/v1/repos/r1/commits/abc/statuses"},
		{PathSite, []string{"a/b"}, "/v1/sites/a%2Fb"},
		{PathSites, nil, "/v1/sites"},
	}
	for _, tt := range tests {
		if got := Path(tt.pattern, tt.args...); got != tt.want {
			t.Errorf("Path(%q, %q) = %q, want %q", tt.pattern, tt.args, got, tt.want)
		}
	}
}

func TestErrorMapsCodesToSentinels(t *testing.T) {
	tests := []struct {
		err  *Error
		want error
	}{
		{&Error{Status: 404, Code: CodeNotFound}, ErrNotFound},
		{&Error{Status: 401, Code: CodeTokenUsed}, ErrTokenUsed},
		{&Error{Status: 401, Code: CodeCertRevoked}, ErrCertRevoked},
		{&Error{Status: 409, Code: "from_the_future"}, ErrConflict},
		{&Error{Status: 502}, ErrInternal},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, tt.want) {
			t.Errorf("errors.Is(%v, %v) = false", tt.err, tt.want)
		}
	}
	if errors.Is(&Error{Status: 404, Code: CodeNotFound}, ErrConflict) {
		t.Error("not_found matched ErrConflict")
	}
	for code := range codeSentinels {
		if Sentinel(code) == nil {
			t.Errorf("code %s has no sentinel", code)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	b, err := json.Marshal(struct{ D Duration }{Duration(90 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"D":"1m30s"}` {
		t.Fatalf("marshal = %s", b)
	}
	var v struct{ D Duration }
	if err := json.Unmarshal([]byte(`{"D":"2s"}`), &v); err != nil || v.D.D() != 2*time.Second {
		t.Fatalf("unmarshal = %v, %v", v.D, err)
	}
	if err := json.Unmarshal([]byte(`{"D":5}`), &v); err == nil {
		t.Fatal("a bare number was accepted as a duration")
	}
}
