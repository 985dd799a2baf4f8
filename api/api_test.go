package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
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
	// Every Code constant declared in errors.go, not just the map's own
	// keys, must reach a sentinel by its code alone (status 200 rules out
	// the status-class fallback).
	codes := declaredCodes(t)
	if len(codes) < 10 {
		t.Fatalf("found only %d Code constants in errors.go", len(codes))
	}
	for _, code := range codes {
		s := Sentinel(code)
		if s == nil {
			t.Errorf("code %s has no sentinel", code)
			continue
		}
		if err := (&Error{Status: 200, Code: code}); !errors.Is(err, s) {
			t.Errorf("errors.Is(%v, %v) = false", err, s)
		}
	}
}

// declaredCodes parses errors.go for the values of its Code constants.
func declaredCodes(t *testing.T) []Code {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var codes []Code
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
				continue
			}
			for _, v := range vs.Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("Code constant %s is not a string literal", vs.Names[0].Name)
				}
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				codes = append(codes, Code(s))
			}
		}
	}
	return codes
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

func TestClientDecodesErrorsAndStreams(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/sites/{site}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("site") {
		case "gone":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":{"code":"not_found","message":"get site gone: not found"}}`)
		case "proxy":
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, "<html>bad gateway</html>")
		default:
			if r.Header.Get("Authorization") != "Bearer tok" || r.Header.Get(TenantHeader) != "acme" {
				t.Errorf("headers: %v", r.Header)
			}
			fmt.Fprint(w, `{"tenant":"acme","name":"ok","heartbeatAge":"1.5s"}`)
		}
	})
	mux.HandleFunc("GET /v1/plans/{plan}/logs", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("follow") != "true" || r.URL.Query().Get("after") != "4" {
			t.Errorf("query %s", r.URL.RawQuery)
		}
		fmt.Fprint(w, `{"planId":"p","seq":5,"stream":"stdout","line":"a"}`+"\n\n"+`{"planId":"p","seq":6,"stream":"stdout","line":"b"}`+"\n")
	})
	mux.HandleFunc("GET /v1/agent/plan", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("wait") != "0s" {
			t.Errorf("wait = %q, want 0s", r.URL.Query().Get("wait"))
		}
		w.WriteHeader(http.StatusNoContent)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c, err := NewClient(ClientConfig{BaseURL: srv.URL, Token: "tok", Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	site, err := c.GetSite(t.Context(), "ok")
	if err != nil || site.HeartbeatAge.D() != 1500*time.Millisecond {
		t.Errorf("GetSite = %+v, %v", site, err)
	}
	if _, err := c.GetSite(t.Context(), "gone"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "get site gone") {
		t.Errorf("404: %v", err)
	}
	if _, err := c.GetSite(t.Context(), "proxy"); !errors.Is(err, ErrInternal) || !strings.Contains(err.Error(), "bad gateway") {
		t.Errorf("502 from a proxy: %v", err)
	}
	var seqs []int64
	if err := c.FollowLogs(t.Context(), "p", 4, func(l LogLine) error { seqs = append(seqs, l.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqs, []int64{5, 6}) {
		t.Errorf("streamed seqs %v", seqs)
	}
	if p, err := c.WaitPlan(t.Context(), "", 0); p != nil || err != nil {
		t.Errorf("WaitPlan on 204 = %v, %v", p, err)
	}
	if _, err := NewClient(ClientConfig{BaseURL: "https://x", CAFingerprint: "sha256:zz"}); err == nil {
		t.Error("a malformed fingerprint was accepted")
	}
}
