package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/store"
)

func TestToHTTPError(t *testing.T) {
	tests := []struct {
		err      error
		status   int
		code     api.Code
		expected bool
	}{
		{fmt.Errorf("get site x: %w", store.ErrNotFound), 404, api.CodeNotFound, true},
		{fmt.Errorf("create: %w", store.ErrConflict), 409, api.CodeConflict, true},
		{fmt.Errorf("start: %w", store.ErrSuperseded), 409, api.CodeSuperseded, true},
		{fmt.Errorf("name: %w", store.ErrInvalid), 400, api.CodeBadRequest, true},
		{&http.MaxBytesError{Limit: 10}, 413, api.CodeTooLarge, true},
		{context.Canceled, 503, api.CodeUnavailable, true},
		{fmt.Errorf("record heartbeat: %w", store.ErrBusy), 503, api.CodeUnavailable, true},
		{errors.New("disk on fire"), 500, api.CodeInternal, false},
	}
	for _, tt := range tests {
		he, expected := toHTTPError(tt.err)
		if he.status != tt.status || he.code != tt.code || expected != tt.expected {
			t.Errorf("toHTTPError(%v) = %d %s %v, want %d %s %v", tt.err, he.status, he.code, expected, tt.status, tt.code, tt.expected)
		}
		if !expected && strings.Contains(he.msg, "disk") {
			t.Errorf("an unexpected error's text reached the client: %q", he.msg)
		}
		if errors.Is(tt.err, store.ErrBusy) && (he.retryAfter < time.Second || he.retryAfter > overloadRetryAfter) {
			t.Errorf("toHTTPError(%v): Retry-After %s, want 1s–%s", tt.err, he.retryAfter, overloadRetryAfter)
		}
	}
}

func TestDecode(t *testing.T) {
	type body struct {
		A int    `json:"a"`
		B string `json:"b"`
	}
	tests := []struct {
		in, wantErr string
	}{
		{`{"a":1,"b":"x"}`, ""},
		{``, "empty"},
		{`{"a":`, "malformed JSON"},
		{`{"a":1,}`, "malformed JSON at byte"},
		{`{"c":1}`, `unknown field "c"`},
		{`{"a":"one"}`, `field "a"`},
		{`{"a":1} {"a":2}`, "after the JSON value"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("POST", "/", strings.NewReader(tt.in))
		var v body
		err := decode(r, &v)
		if tt.wantErr == "" {
			if err != nil || v != (body{A: 1, B: "x"}) {
				t.Errorf("decode(%q) = %+v, %v", tt.in, v, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("decode(%q) = %v, want an error with %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestDecodeOptional(t *testing.T) {
	type body struct {
		A int `json:"a"`
	}
	tests := []struct {
		in      string
		want    body
		wantErr string
	}{
		{"", body{A: 7}, ""}, // left out: v keeps its defaults
		{" \n", body{A: 7}, ""},
		{`{"a":1}`, body{A: 1}, ""},
		{`{"c":1}`, body{A: 7}, `unknown field "c"`},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("POST", "/", strings.NewReader(tt.in))
		v := body{A: 7}
		err := decodeOptional(r, &v)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("decodeOptional(%q) = %v, want error %q", tt.in, err, tt.wantErr)
		}
		if v != tt.want {
			t.Errorf("decodeOptional(%q) left %+v, want %+v", tt.in, v, tt.want)
		}
	}
}

func TestLimiterPerSource(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLimiterSet(rate.Every(time.Minute), 2, func() time.Time { return now })
	for i, want := range []bool{true, true, false} {
		if ok, _ := l.allow("10.0.0.1"); ok != want {
			t.Errorf("attempt %d from 10.0.0.1: allowed %v, want %v", i+1, ok, want)
		}
	}
	if ok, _ := l.allow("10.0.0.2"); !ok {
		t.Error("another source was limited by the first one's attempts")
	}
	ok, wait := l.allow("10.0.0.1")
	if ok || wait <= 0 || wait > time.Minute {
		t.Errorf("limited source: allowed %v, wait %s", ok, wait)
	}
	now = now.Add(time.Minute)
	if ok, _ := l.allow("10.0.0.1"); !ok {
		t.Error("the bucket did not refill after a minute")
	}
}
