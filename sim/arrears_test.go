package sim

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/sim/profile"
)

// TestFleetArrearsKept: a fleet opened with arrears keeps the plan in
// fleet.json (reopened without it, its payroll terminals still seed), and
// Fleet.Seeded reports the cases of the wage runs generated.
func TestFleetArrearsKept(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1", nil)
	cfg.Profile, cfg.Seed, cfg.Start = profile.KindPayroll, 9, time.Date(2026, 10, 30, 0, 0, 0, 0, profile.SiteZone)
	cfg.Arrears = profile.Arrears{Unpaid: 1, Ghost: 1}
	f, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(cfg.StateDir, "fleet.json"))
	if err != nil || !strings.Contains(string(b), `"arrears": {`) {
		t.Fatalf("fleet.json without the arrears plan: %v\n%s", err, b)
	}
	cfg.Arrears = profile.Arrears{}
	g, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, fl := range []*Fleet{f, g} {
		for _, d := range fl.devices {
			for r := d.gen.Next(); r.At.Before(time.Date(2026, 11, 1, 0, 0, 0, 0, profile.SiteZone)); r = d.gen.Next() {
			}
		}
	}
	// Two terminals' October runs: one unpaid worker and one ghost each.
	for i, fl := range []*Fleet{f, g} {
		if n := len(fl.Seeded()); n != 2*cfg.Devices {
			t.Errorf("fleet %d: %d cases seeded, want %d", i, n, 2*cfg.Devices)
		}
	}
	cfg.Arrears.Late = -1
	if _, err := Open(cfg); !errors.Is(err, ErrConfig) {
		t.Errorf("negative arrears: %v, want ErrConfig", err)
	}
}
