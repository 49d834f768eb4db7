package profile

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
)

var testStart = time.Date(2026, 10, 28, 0, 0, 0, 0, SiteZone) // a Wednesday, 4 days before month end

func genN(t *testing.T, c GenConfig, n int) []Reading {
	t.Helper()
	g, err := NewGenerator(c)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]Reading, n)
	for i := range out {
		out[i] = g.Next()
	}
	return out
}

func encode(t *testing.T, rs []Reading) []string {
	t.Helper()
	out := make([]string, len(rs))
	for i, r := range rs {
		b, err := json.Marshal(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = r.At.UTC().Format(time.RFC3339Nano) + " " + r.Kind + " " + string(b)
	}
	return out
}

func TestGeneratorsDeterministicWithSeed(t *testing.T) {
	for _, kind := range []string{KindPayroll, KindSurvey, KindEnv} {
		t.Run(kind, func(t *testing.T) {
			c := GenConfig{Kind: kind, Seed: 42, Index: 3, Site: "site-a", Salt: []byte("salt"), Start: testStart}
			a := encode(t, genN(t, c, 400))
			b := encode(t, genN(t, c, 400))
			for i := range a {
				if a[i] != b[i] {
					t.Fatalf("reading %d differs with the same seed:\n%s\n%s", i, a[i], b[i])
				}
			}
			c.Seed = 43
			d := encode(t, genN(t, c, 400))
			same := 0
			for i := range a {
				if a[i] == d[i] {
					same++
				}
			}
			if same > 40 {
				t.Errorf("%d of 400 readings equal with another seed", same)
			}
		})
	}
}

func TestReadingsFitSchemasAndTimeAdvances(t *testing.T) {
	for _, kind := range []string{KindPayroll, KindSurvey, KindEnv} {
		t.Run(kind, func(t *testing.T) {
			rs := genN(t, GenConfig{Kind: kind, Seed: 7, Index: 1, Site: "site-b", Salt: []byte("s"), Start: testStart}, 3000)
			for i, r := range rs {
				data, err := json.Marshal(r.Data)
				if err != nil {
					t.Fatal(err)
				}
				if err := device.ValidateData(r.Kind, data); err != nil {
					t.Fatalf("reading %d (%s) does not fit its schema: %v\n%s", i, r.Kind, err, data)
				}
				if r.At.Before(testStart) {
					t.Fatalf("reading %d at %s before the start %s", i, r.At, testStart)
				}
				if i > 0 && r.At.Before(rs[i-1].At) {
					t.Fatalf("reading %d at %s before reading %d at %s", i, r.At, i-1, rs[i-1].At)
				}
			}
		})
	}
}

func TestAttendanceShiftsAndWageRun(t *testing.T) {
	c := GenConfig{Kind: KindPayroll, Seed: 11, Index: 0, Site: "site-a", Salt: []byte("salt"), Start: testStart}
	rs := genN(t, c, 6000) // about seven weeks
	last := rs[len(rs)-1].At
	if last.Sub(testStart) < 35*24*time.Hour {
		t.Fatalf("6000 readings cover only %s; want more than a month", last.Sub(testStart))
	}
	type dayKey struct {
		worker string
		day    string
	}
	seen := map[dayKey][]Attendance{}
	inAt := map[dayKey]time.Time{}
	daysByMonth := map[string]map[string]int{} // month -> worker -> days
	wages := map[string]map[string]int64{}     // month -> worker -> fen
	for _, r := range rs {
		l := r.At.In(SiteZone)
		tod := l.Sub(localDay(r.At))
		switch d := r.Data.(type) {
		case Attendance:
			if r.At.Nanosecond() != 0 {
				t.Fatalf("pass logged at %s, not to the second", r.At)
			}
			k := dayKey{d.Worker, l.Format("2006-01-02")}
			switch d.Direction {
			case "in":
				if tod < inEarliest || tod > inLatest {
					t.Fatalf("in at %s, outside 06:40–08:15", l.Format("15:04:05"))
				}
				inAt[k] = r.At
				m := l.Format("2006-01")
				if daysByMonth[m] == nil {
					daysByMonth[m] = map[string]int{}
				}
				daysByMonth[m][d.Worker]++
			case "out":
				if tod < outEarliest || tod > outLatest {
					t.Fatalf("out at %s, outside 17:00–19:45", l.Format("15:04:05"))
				}
				if in, ok := inAt[k]; !ok || !in.Before(r.At) {
					t.Fatalf("worker %s left on %s without coming in first", d.Worker[:8], k.day)
				}
			}
			seen[k] = append(seen[k], d)
			if d.Method != "face" && d.Method != "card" {
				t.Fatalf("method %q", d.Method)
			}
		case Wage:
			if !lastDayOfMonth(localDay(r.At)) || tod < wageRunAt {
				t.Fatalf("wage paid at %s, not in the month-end run", l)
			}
			if d.Period != l.Format("2006-01") {
				t.Fatalf("wage period %s paid on %s", d.Period, l.Format("2006-01-02"))
			}
			if wages[d.Period] == nil {
				wages[d.Period] = map[string]int64{}
			}
			wages[d.Period][d.Worker] = d.AmountFen
		default:
			t.Fatalf("payroll terminal made %T", r.Data)
		}
	}
	lastDay := last.In(SiteZone).Format("2006-01-02")
	for k, passes := range seen {
		if k.day == lastDay {
			continue // cut off mid-day
		}
		if len(passes) != 2 || passes[0].Direction != "in" || passes[1].Direction != "out" {
			t.Fatalf("worker %s on %s: want one in then one out, got %d passes", k.worker[:8], k.day, len(passes))
		}
	}
	// Two month ends fall in the window (2026-10 and 2026-11).
	for _, month := range []string{"2026-10", "2026-11"} {
		paid := wages[month]
		if len(paid) == 0 {
			t.Fatalf("no wage run for %s", month)
		}
		for w, days := range daysByMonth[month] {
			fen, ok := paid[w]
			if !ok {
				t.Fatalf("%s: worker %s attended %d days but was not paid", month, w[:8], days)
			}
			if fen%int64(days) != 0 || fen/int64(days) < 22000 || fen/int64(days) > 48000 {
				t.Fatalf("%s: worker %s paid %d fen for %d days: not a whole daily rate of ¥220–480", month, w[:8], fen, days)
			}
		}
	}
	// Daily rate is the same in both months.
	for w, fen := range wages["2026-11"] {
		if prev, ok := wages["2026-10"][w]; ok {
			r1 := prev / int64(daysByMonth["2026-10"][w])
			r2 := fen / int64(daysByMonth["2026-11"][w])
			if r1 != r2 {
				t.Fatalf("worker %s daily rate changed from %d to %d fen", w[:8], r1, r2)
			}
		}
	}
}

func TestResidentIDCheckDigit(t *testing.T) {
	// GB 11643 example: 11010519491231002X.
	weights := []int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	check := func(id string) bool {
		sum := 0
		for i := range 17 {
			sum += int(id[i]-'0') * weights[i]
		}
		return id[17] == "10X98765432"[sum%11]
	}
	if !check("11010519491231002X") {
		t.Fatal("check digit routine disagrees with the GB 11643 example")
	}
	for i := range 200 {
		id := residentID(newRand(uint64(i)))
		if len(id) != 18 || !check(id) {
			t.Fatalf("resident ID %s has a wrong check digit", id)
		}
	}
}

func TestSurveyTraverseRealism(t *testing.T) {
	for idx, inst := range instruments {
		t.Run(inst.name, func(t *testing.T) {
			rs := genN(t, GenConfig{Kind: KindSurvey, Seed: 3, Index: idx, Site: "site-a", Start: testStart}, 1500)
			parcels := map[string]bool{}
			for i, r := range rs {
				p := r.Data.(SurveyPoint)
				parcels[p.Parcel] = true
				if p.Instrument != inst.name {
					t.Fatalf("instrument %q, want %q", p.Instrument, inst.name)
				}
				if p.HPrec < inst.hMin || p.HPrec > inst.hMax || p.VPrec < inst.vMin || p.VPrec > inst.vMax {
					t.Fatalf("precision h %.4f v %.4f outside the %s ranges", p.HPrec, p.VPrec, inst.name)
				}
				if zone := int(p.Y / 1e6); zone != gkZone {
					t.Fatalf("easting %.3f not in 3° zone %d", p.Y, gkZone)
				}
				if e := math.Mod(p.Y, 1e6); e < 400_000 || e > 600_000 {
					t.Fatalf("easting %.3f more than 100 km from the central meridian", p.Y)
				}
				if p.X < 4_300_000 || p.X > 4_500_000 {
					t.Fatalf("northing %.3f outside the survey area", p.X)
				}
				if ok, _ := surveyWorking(r.At); !ok {
					t.Fatalf("point taken at %s, outside working hours", r.At.In(SiteZone))
				}
				if i == 0 {
					continue
				}
				prev := rs[i-1].Data.(SurveyPoint)
				d := math.Hypot(p.X-prev.X, p.Y-prev.Y)
				if prev.Parcel == p.Parcel && (d < 0.5 || d > 250) {
					t.Fatalf("consecutive boundary points %s→%s of %s are %.1f m apart", prev.Point, p.Point, p.Parcel, d)
				}
				if prev.Parcel != p.Parcel && d > 700 {
					t.Fatalf("crew jumped %.0f m between parcels", d)
				}
				if gap := r.At.Sub(rs[i-1].At); gap < time.Minute {
					t.Fatalf("points %s apart; a set-up takes at least a minute", gap)
				}
			}
			if len(parcels) < 20 {
				t.Fatalf("1500 points cover only %d parcels", len(parcels))
			}
		})
	}
}

func TestDustAndNoiseFollowTheWorkingDay(t *testing.T) {
	rs := genN(t, GenConfig{Kind: KindEnv, Seed: 9, Index: 2, Start: testStart}, 7*24*60)
	var dayPM, nightPM, dayDB, nightDB float64
	var nd, nn int
	for i, r := range rs {
		d := r.Data.(Dust)
		if d.PM25 > d.PM10 {
			t.Fatalf("PM2.5 %.1f above PM10 %.1f", d.PM25, d.PM10)
		}
		if i > 0 && r.At.Sub(rs[i-1].At) != EnvInterval {
			t.Fatalf("readings %s apart, want %s", r.At.Sub(rs[i-1].At), EnvInterval)
		}
		switch siteActivity(r.At) {
		case 1:
			dayPM += d.PM10
			dayDB += d.Noise
			nd++
		case 0.05:
			nightPM += d.PM10
			nightDB += d.Noise
			nn++
		}
	}
	dayPM, nightPM, dayDB, nightDB = dayPM/float64(nd), nightPM/float64(nn), dayDB/float64(nd), nightDB/float64(nn)
	if dayPM < 1.5*nightPM {
		t.Errorf("mean PM10 %.1f while working vs %.1f at night: want clearly higher by day", dayPM, nightPM)
	}
	if dayDB < nightDB+15 {
		t.Errorf("mean noise %.1f dBA while working vs %.1f at night: want 15 dB more by day", dayDB, nightDB)
	}
	if nightDB > 55 {
		t.Errorf("night noise %.1f dBA; a quiet site is below 55", nightDB)
	}
}

func TestKindForMixed(t *testing.T) {
	count := map[string]int{}
	for i := range 100 {
		k, err := KindFor("mixed", i)
		if err != nil {
			t.Fatal(err)
		}
		count[k]++
	}
	if count[KindPayroll] != 50 || count[KindEnv] != 25 || count[KindSurvey] != 25 {
		t.Fatalf("mixed fleet of 100: %v", count)
	}
	if _, err := KindFor("drone", 0); err == nil {
		t.Fatal("unknown profile accepted")
	}
}
