package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/controlplane"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1": 1, "512MiB": 512 << 20, "8GiB": 8 << 30, " 2 TiB ": 2 << 40, "10B": 10, "3KiB": 3 << 10} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-1GiB", "8GB", "lots", "99999999999TiB"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) accepted", bad)
		}
	}
}

func TestImageFlagsApply(t *testing.T) {
	var o controlplane.Options
	f := ImageFlags{MaxImageSize: "1GiB", ImageQuota: "10GiB", ImageGCGrace: "2h"}
	if err := f.apply("/data", &o); err != nil {
		t.Fatal(err)
	}
	if o.ImageDir != filepath.Join("/data", "images") || o.MaxImageBytes != 1<<30 || o.ImageQuotaBytes != 10<<30 || o.ImageGCGrace != 2*time.Hour {
		t.Errorf("options = %+v", o)
	}
	if err := (ImageFlags{ImageQuota: "ten"}).apply("/data", &o); err == nil || !strings.Contains(err.Error(), "--image-quota") {
		t.Errorf("bad quota: %v", err)
	}
}
