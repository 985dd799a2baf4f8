package maintenance

import (
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/pki"
)

func TestCheckPKIExpiry(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := pki.Init(dir, nil, start); err != nil {
		t.Fatal(err)
	}
	f := DevPKIFiles(dir)
	c, ca := CheckPKI(f, start.Add(time.Hour), DefaultCertWarning)
	if c.Status != StatusOK || ca == nil {
		t.Fatalf("fresh PKI: %+v", c)
	}
	sc, err := tls.LoadX509KeyPair(filepath.Join(dir, pki.ServerCertFile), filepath.Join(dir, pki.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	end := sc.Leaf.NotAfter
	for _, tc := range []struct {
		at   time.Time
		want Status
	}{
		{end.Add(-31 * 24 * time.Hour), StatusOK},
		{end.Add(-29 * 24 * time.Hour), StatusWarn},
		{end.Add(24 * time.Hour), StatusFail},
	} {
		if c, _ := CheckPKI(f, tc.at, DefaultCertWarning); c.Status != tc.want {
			t.Errorf("at %s (server certificate ends %s): %s (%s %q), want %s", tc.at, end, c.Status, c.Message, c.Items, tc.want)
		}
	}
	bad := f
	bad.CAKey = f.ServerKey // a key that does not belong to the CA
	if c, _ := CheckPKI(bad, start.Add(time.Hour), DefaultCertWarning); c.Status != StatusFail || !strings.Contains(c.Message, "does not match") {
		t.Errorf("mismatched CA key: %+v", c)
	}
	missing := DevPKIFiles(t.TempDir())
	if c, _ := CheckPKI(missing, start, DefaultCertWarning); c.Status != StatusFail || !strings.Contains(c.Message, "no dev CA") {
		t.Errorf("empty dev dir: %+v", c)
	}
}

func TestReportStatusIsTheWorst(t *testing.T) {
	for _, tc := range []struct {
		in   []Status
		want Status
	}{
		{[]Status{StatusOK, StatusSkip}, StatusOK},
		{[]Status{StatusOK, StatusWarn, StatusSkip}, StatusWarn},
		{[]Status{StatusFail, StatusWarn, StatusOK}, StatusFail},
	} {
		var r Report
		for _, s := range tc.in {
			r.Add(Check{Status: s})
		}
		if r.Status != tc.want {
			t.Errorf("%v: %s, want %s", tc.in, r.Status, tc.want)
		}
	}
}
