package profile

import (
	"reflect"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
)

// TestPayrollArrears: a terminal with arrears seeded makes exactly the
// cases it records (no wage for the unpaid, a wage LateBy after the run for
// the late, below-floor amounts, a wage for a reference that never
// attended), and without arrears it makes the same readings as before.
func TestPayrollArrears(t *testing.T) {
	start := time.Date(2026, 10, 1, 0, 0, 0, 0, SiteZone)
	month := func(a Arrears) ([]Reading, Generator) {
		g, err := NewGenerator(GenConfig{Kind: KindPayroll, Seed: 5, Index: 2, Site: "s", Salt: []byte("salt"), Start: start, Arrears: a})
		if err != nil {
			t.Fatal(err)
		}
		var rs []Reading
		for {
			r := g.Next()
			if !r.At.Before(start.AddDate(0, 1, 25)) {
				return rs, g
			}
			rs = append(rs, r)
		}
	}
	plain, pg := month(Arrears{})
	if len(pg.(Seeder).Seeded()) != 0 {
		t.Fatal("cases seeded without arrears")
	}
	// The same as a generator made before arrears existed: one wage per
	// worker who attended, the days times the rate.
	days := map[string]int{}
	wages := map[string][]Reading{}
	for _, r := range plain {
		switch d := r.Data.(type) {
		case Attendance:
			if d.Direction == "in" && r.At.Before(start.AddDate(0, 1, 0)) {
				days[d.Worker]++
			}
		case Wage:
			if d.Period == "2026-10" {
				wages[d.Worker] = append(wages[d.Worker], r)
			}
		}
	}
	if len(wages) != len(days) {
		t.Fatalf("%d wages for %d workers who attended", len(wages), len(days))
	}

	a := Arrears{Unpaid: 2, Late: 1, BelowFloor: 1, Ghost: 1}
	seeded, sg := month(a)
	cases := sg.(Seeder).Seeded()
	if len(cases) != 5 {
		t.Fatalf("%d cases, want 5: %v", len(cases), cases)
	}
	got := map[string][]Reading{}
	attended := map[string]bool{}
	for _, r := range seeded {
		switch d := r.Data.(type) {
		case Wage:
			if d.Period == "2026-10" {
				got[d.Worker] = append(got[d.Worker], r)
			}
		case Attendance:
			attended[d.Worker] = true
		}
	}
	run := time.Date(2026, 10, 31, 20, 0, 0, 0, SiteZone)
	for _, c := range cases {
		ws := got[c.Worker]
		switch c.Case {
		case CaseUnpaid:
			if len(ws) != 0 || c.Days != days[c.Worker] || c.Days == 0 {
				t.Errorf("unpaid %v: wages %v, attended %d", c, ws, days[c.Worker])
			}
		case CaseLate:
			if len(ws) != 1 || ws[0].At.Sub(run) < 20*24*time.Hour {
				t.Errorf("late %v: wages %v", c, ws)
			}
		case CaseBelowFloor:
			if len(ws) != 1 || ws[0].Data.(Wage).AmountFen != int64(c.Days)*10_000 {
				t.Errorf("below floor %v: wages %v", c, ws)
			}
		case CaseGhost:
			if len(ws) != 1 || attended[c.Worker] {
				t.Errorf("ghost %v: wages %v, attended %v", c, ws, attended[c.Worker])
			}
		}
		delete(got, c.Worker)
	}
	// Everyone else is paid as without arrears.
	for w, ws := range got {
		if !reflect.DeepEqual(ws[0].Data, wages[w][0].Data) || ws[0].Kind != device.KindWage {
			t.Errorf("worker %s: %v, without arrears %v", w, ws, wages[w])
		}
	}
}
