package profile

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
)

// Device kinds (docs/internals.md, "Device kinds and record kinds").
const (
	KindPayroll = "payroll"
	KindSurvey  = "survey"
	KindEnv     = "env"
)

// Profiles accepted by sim.Config.Profile: one device kind for the whole fleet,
// or "mixed" (half payroll terminals, a quarter each survey and env).
var Profiles = []string{KindPayroll, KindSurvey, KindEnv, "mixed"}

// ErrProfile means a profile or device kind name is not one this package
// simulates. Use one of Profiles.
var ErrProfile = errors.New("sim: unknown profile")

// KindFor returns the device kind of the index-th device of a fleet with
// the given profile.
func KindFor(profile string, index int) (string, error) {
	switch profile {
	case KindPayroll, KindSurvey, KindEnv:
		return profile, nil
	case "mixed":
		switch index % 4 {
		case 0, 1:
			return KindPayroll, nil
		case 2:
			return KindEnv, nil
		default:
			return KindSurvey, nil
		}
	}
	return "", fmt.Errorf("%w %q (want one of %v)", ErrProfile, profile, Profiles)
}

// Reading is one simulated observation: when it was taken (simulated time),
// its record kind and its data, ready for device.NewBody.
type Reading struct {
	At   time.Time
	Kind string
	Data any
}

// Generator yields a device's readings in order of non-decreasing At.
// Given the same GenConfig it yields the same readings.
type Generator interface {
	Next() Reading
}

// GenConfig selects and seeds a generator.
type GenConfig struct {
	Kind  string    // device kind: payroll, survey or env
	Seed  uint64    // fleet seed
	Index int       // device index in the fleet
	Site  string    // site name, used in project, gate and parcel names
	Salt  []byte    // the site's secret salt for device.PersonRef
	Start time.Time // the simulated clock starts here
	// Arrears seeds wage-arrears cases into the payroll profile's month-end
	// wage runs (zero: every worker who attended is paid in full on time).
	Arrears Arrears
}

// Arrears says how many workers of each payroll terminal the month-end
// wage run treats wrongly, each month, so that wage supervision has cases
// to find (docs/wages.md). The workers are drawn from those who attended;
// a generator that seeds cases records them (Seeded).
type Arrears struct {
	Unpaid     int `json:"unpaid,omitempty"`      // no wage record for the month
	Late       int `json:"late,omitempty"`        // the wage record comes LateBy after the month's end
	BelowFloor int `json:"below_floor,omitempty"` // paid BelowFloorFen a day attended
	Ghost      int `json:"ghost,omitempty"`       // a wage record for a reference that never attended
	// LateBy is how long after the wage run a late wage is recorded
	// (default 20 days).
	LateBy time.Duration `json:"late_by,omitempty"`
	// BelowFloorFen is the daily rate of a below-floor payment (default
	// 10,000 fen; regular rates are 22,000 fen and up).
	BelowFloorFen int64 `json:"below_floor_fen,omitempty"`
}

// Seeded cases (SeededCase.Case).
const (
	CaseUnpaid     = "unpaid"
	CaseLate       = "late"
	CaseBelowFloor = "below_floor"
	CaseGhost      = "ghost"
)

// SeededCase is one arrears case a generator seeded: the worker's
// reference, the pay period (YYYY-MM), the case, and the days the worker
// attended that month as the generator counted them.
type SeededCase struct {
	Worker string `json:"worker"`
	Period string `json:"period"`
	Case   string `json:"case"`
	Days   int    `json:"days"`
}

// Seeder is implemented by generators that seed arrears: Seeded returns
// the cases of every wage run generated so far.
type Seeder interface {
	Seeded() []SeededCase
}

// NewGenerator returns the generator for c.Kind.
func NewGenerator(c GenConfig) (Generator, error) {
	rng := rand.New(rand.NewPCG(c.Seed, uint64(c.Index)*0x9e3779b97f4a7c15+1))
	switch c.Kind {
	case KindPayroll:
		return newPayrollGen(c, rng), nil
	case KindSurvey:
		return newSurveyGen(c, rng), nil
	case KindEnv:
		return newEnvGen(c, rng), nil
	}
	return nil, fmt.Errorf("%w %q", ErrProfile, c.Kind)
}

// Data of each record kind, with the member names of device's schemas.

// Attendance is a payroll.attendance reading: one pass through a gate.
type Attendance struct {
	Worker    string `json:"worker"`
	Project   string `json:"project"`
	Gate      string `json:"gate"`
	Direction string `json:"direction"`
	Method    string `json:"method"`
}

// Wage is a payroll.wage record: one worker's pay for one month, in fen.
type Wage struct {
	Worker    string `json:"worker"`
	Period    string `json:"period"`
	AmountFen int64  `json:"amount_fen"`
	Payer     string `json:"payer"`
	Account   string `json:"account"`
}

// SurveyPoint is a survey.point reading in CGCS2000 Gauss-Krüger
// coordinates (3° zone, easting with the zone number prefixed).
type SurveyPoint struct {
	Instrument string  `json:"instrument"`
	Point      string  `json:"point"`
	X          float64 `json:"x_m"`
	Y          float64 `json:"y_m"`
	H          float64 `json:"h_m"`
	HPrec      float64 `json:"h_prec_m"`
	VPrec      float64 `json:"v_prec_m"`
	Parcel     string  `json:"parcel"`
	Operator   string  `json:"operator"`
}

// Dust is an env.dust reading.
type Dust struct {
	PM25  float64 `json:"pm25_ugm3"`
	PM10  float64 `json:"pm10_ugm3"`
	Noise float64 `json:"noise_dba"`
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

func clamp(v, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, v)) }

func minutes(m float64) time.Duration { return time.Duration(m * float64(time.Minute)) }

// ---- payroll: attendance terminals and the month-end wage run ----

// Shift bounds of the attendance model (site time): workers come in between
// 06:40 and 08:15 (most around 07:25) and leave between 17:00 and 18:00,
// a tenth of them on overtime until at most 19:45.
const (
	inEarliest  = 6*time.Hour + 40*time.Minute
	inLatest    = 8*time.Hour + 15*time.Minute
	outEarliest = 17 * time.Hour
	outLatest   = 19*time.Hour + 45*time.Minute
	wageRunAt   = 20 * time.Hour
)

type worker struct {
	ref, account string
	dailyFen     int64
	attend       float64 // probability of coming to work on a working day
}

type payrollGen struct {
	rng     *rand.Rand
	workers []worker
	days    []int // days worked this month, per worker
	project string
	gate    string
	face    bool // a face terminal (else a card reader)
	payer   string
	day     time.Time
	start   time.Time
	queue   []Reading
	arrears Arrears
	salt    []byte
	name    string    // site and device index, for ghost references
	later   []Reading // late wages, recorded when their day comes
	seeded  []SeededCase
}

var _ Seeder = (*payrollGen)(nil)

func (g *payrollGen) Seeded() []SeededCase { return append([]SeededCase(nil), g.seeded...) }

func newPayrollGen(c GenConfig, rng *rand.Rand) *payrollGen {
	g := &payrollGen{
		rng:     rng,
		project: fmt.Sprintf("%s-proj-%d", c.Site, c.Index%3+1),
		gate:    fmt.Sprintf("gate-%d", c.Index%4+1),
		face:    rng.Float64() < 0.7,
		payer:   fmt.Sprintf("%s-labour-subcontractor-%d", c.Site, c.Index%5+1),
		day:     localDay(c.Start),
		start:   c.Start,
		arrears: c.Arrears,
		salt:    c.Salt,
		name:    fmt.Sprintf("%s:%d", c.Site, c.Index),
	}
	if g.arrears.LateBy <= 0 {
		g.arrears.LateBy = 20 * 24 * time.Hour
	}
	if g.arrears.BelowFloorFen <= 0 {
		g.arrears.BelowFloorFen = 10_000
	}
	n := 20 + rng.IntN(41) // 20–60 workers pass this terminal
	for i := range n {
		id := residentID(rng)
		acct := fmt.Sprintf("6222%015d", rng.Int64N(1e15))
		// Daily rates by trade: labourer ¥220–300, skilled ¥300–480.
		rate := int64(22000 + rng.IntN(8001))
		if i%3 == 0 {
			rate = int64(30000 + rng.IntN(18001))
		}
		g.workers = append(g.workers, worker{
			ref:      device.PersonRef(c.Salt, id),
			account:  device.PersonRef(c.Salt, "account:"+acct),
			dailyFen: rate / 100 * 100, // whole yuan per day
			attend:   0.85 + 0.12*rng.Float64(),
		})
	}
	g.days = make([]int, n)
	return g
}

// residentID makes a syntactically valid 18-character PRC resident ID
// number (GB 11643: region, birth date, sequence, ISO 7064 check digit).
func residentID(rng *rand.Rand) string {
	regions := []string{"110105", "130102", "320106", "410102", "510104", "420106", "610113"}
	birth := time.Date(1966+rng.IntN(38), time.Month(1+rng.IntN(12)), 1+rng.IntN(28), 0, 0, 0, 0, time.UTC)
	s := fmt.Sprintf("%s%s%03d", regions[rng.IntN(len(regions))], birth.Format("20060102"), rng.IntN(1000))
	weights := []int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	sum := 0
	for i := range 17 {
		sum += int(s[i]-'0') * weights[i]
	}
	return s + string("10X98765432"[sum%11])
}

func (g *payrollGen) Next() Reading {
	for len(g.queue) == 0 {
		g.genDay()
		g.day = g.day.AddDate(0, 0, 1)
	}
	r := g.queue[0]
	g.queue = g.queue[1:]
	return r
}

func (g *payrollGen) genDay() {
	day := g.day
	working := day.Weekday() != time.Sunday || g.rng.Float64() < 0.3
	var rs []Reading
	if working {
		for i, w := range g.workers {
			if g.rng.Float64() >= w.attend {
				continue
			}
			in := inEarliest + minutes(clamp(45+12*g.rng.NormFloat64(), 0, 95)) + time.Duration(g.rng.IntN(60))*time.Second
			out := outEarliest + minutes(clamp(25+15*g.rng.NormFloat64(), 0, 59)) + time.Duration(g.rng.IntN(60))*time.Second
			if g.rng.Float64() < 0.1 { // overtime
				out = min(out+minutes(60+g.rng.Float64()*105), outLatest)
			}
			if in > inLatest {
				in = inLatest
			}
			// Terminals log passes to the second.
			in, out = in.Truncate(time.Second), out.Truncate(time.Second)
			g.days[i]++
			rs = append(rs,
				Reading{At: day.Add(in), Kind: device.KindAttendance, Data: g.pass(w, "in")},
				Reading{At: day.Add(out), Kind: device.KindAttendance, Data: g.pass(w, "out")})
		}
		sort.SliceStable(rs, func(a, b int) bool { return rs[a].At.Before(rs[b].At) })
	}
	next := day.AddDate(0, 0, 1)
	var keep []Reading
	for _, r := range g.later {
		if r.At.Before(next) {
			rs = append(rs, r)
		} else {
			keep = append(keep, r)
		}
	}
	g.later = keep
	if lastDayOfMonth(day) {
		period := day.Format("2006-01")
		at := day.Add(wageRunAt)
		cases := g.drawCases(period)
		for i, w := range g.workers {
			if g.days[i] == 0 {
				continue
			}
			wage := Wage{Worker: w.ref, Period: period, AmountFen: int64(g.days[i]) * w.dailyFen, Payer: g.payer, Account: w.account}
			switch cases[i] {
			case CaseUnpaid:
				g.days[i] = 0
				continue
			case CaseLate:
				g.later = append(g.later, Reading{At: at.Add(g.arrears.LateBy), Kind: device.KindWage, Data: wage})
				g.days[i] = 0
				continue
			case CaseBelowFloor:
				wage.AmountFen = int64(g.days[i]) * g.arrears.BelowFloorFen
			}
			rs = append(rs, Reading{At: at, Kind: device.KindWage, Data: wage})
			at = at.Add(time.Duration(2+g.rng.IntN(4)) * time.Second)
			g.days[i] = 0
		}
		for n := range g.arrears.Ghost {
			ref := device.PersonRef(g.salt, fmt.Sprintf("ghost:%s:%s:%d", g.name, period, n))
			acct := device.PersonRef(g.salt, fmt.Sprintf("account:ghost:%s:%s:%d", g.name, period, n))
			rs = append(rs, Reading{At: at, Kind: device.KindWage, Data: Wage{
				Worker: ref, Period: period, AmountFen: 22 * 30_000, Payer: g.payer, Account: acct}})
			at = at.Add(3 * time.Second)
			g.seeded = append(g.seeded, SeededCase{Worker: ref, Period: period, Case: CaseGhost})
		}
	}
	sort.SliceStable(rs, func(a, b int) bool { return rs[a].At.Before(rs[b].At) })
	for _, r := range rs {
		if r.At.Before(g.start) {
			continue
		}
		g.queue = append(g.queue, r)
	}
}

// drawCases picks, among the workers who attended this month, those whose
// wage the run treats wrongly, and records them. Without arrears it draws
// nothing from the random source, so unseeded fleets keep their readings.
func (g *payrollGen) drawCases(period string) map[int]string {
	a := g.arrears
	if a.Unpaid+a.Late+a.BelowFloor == 0 {
		return nil
	}
	var attended []int
	for i := range g.workers {
		if g.days[i] > 0 {
			attended = append(attended, i)
		}
	}
	g.rng.Shuffle(len(attended), func(i, j int) { attended[i], attended[j] = attended[j], attended[i] })
	cases := map[int]string{}
	for _, c := range []struct {
		n    int
		name string
	}{{a.Unpaid, CaseUnpaid}, {a.Late, CaseLate}, {a.BelowFloor, CaseBelowFloor}} {
		for range c.n {
			if len(attended) == 0 {
				return cases
			}
			i := attended[0]
			attended = attended[1:]
			cases[i] = c.name
			g.seeded = append(g.seeded, SeededCase{Worker: g.workers[i].ref, Period: period, Case: c.name, Days: g.days[i]})
		}
	}
	return cases
}

func (g *payrollGen) pass(w worker, dir string) Attendance {
	method := "card"
	if g.face {
		method = "face"
		if g.rng.Float64() < 0.04 { // face match failed, worker swiped the card
			method = "card"
		}
	}
	return Attendance{Worker: w.ref, Project: g.project, Gate: g.gate, Direction: dir, Method: method}
}

// ---- survey: traverses around parcel boundaries ----

// Instruments and their precision (metres, 1σ): a total station measures
// positions to a few millimetres, an RTK GNSS rover to one or two
// centimetres horizontally and two or three vertically, a level gives
// heights to a millimetre and positions only from the staked traverse.
var instruments = []struct {
	name                   string
	hMin, hMax, vMin, vMax float64
}{
	{"total-station", 0.002, 0.005, 0.003, 0.008},
	{"gnss-rtk", 0.008, 0.015, 0.015, 0.030},
	{"level", 0.05, 0.10, 0.0005, 0.002},
}

// Gauss-Krüger frame of the simulated survey area: CGCS2000, 3° zone 39
// (central meridian 117°E), so eastings are 39,xxx,xxx m; northings around
// 4,420 km (about 40°N).
const (
	gkZone      = 39
	gkFalseEast = 500_000
	gkNorthing  = 4_420_000
)

type surveyGen struct {
	rng        *rand.Rand
	inst       int
	operator   string
	site       string
	parcelNo   int
	cx, cy     float64 // parcel centre (northing, easting)
	vertices   [][2]float64
	next       int
	t          time.Time
	start      time.Time
	heightBias float64
}

func newSurveyGen(c GenConfig, rng *rand.Rand) *surveyGen {
	g := &surveyGen{
		rng:        rng,
		inst:       c.Index % len(instruments),
		operator:   fmt.Sprintf("crew-%02d", c.Index%40+1),
		site:       c.Site,
		parcelNo:   100 + rng.IntN(800),
		cx:         gkNorthing + (rng.Float64()-0.5)*60_000,
		cy:         gkZone*1_000_000 + gkFalseEast + (rng.Float64()-0.5)*80_000,
		t:          c.Start,
		start:      c.Start,
		heightBias: 30 + 40*rng.Float64(),
	}
	g.newParcel()
	return g
}

// newParcel lays out the next parcel's boundary: 6–16 corners around a
// centre, in angular order, so that the traverse walks the boundary.
func (g *surveyGen) newParcel() {
	n := 6 + g.rng.IntN(11)
	angles := make([]float64, n)
	for i := range angles {
		angles[i] = 2 * math.Pi * (float64(i) + 0.35*g.rng.Float64()) / float64(n)
	}
	radius := 25 + 60*g.rng.Float64()
	g.vertices = g.vertices[:0]
	for _, a := range angles {
		r := radius * (0.8 + 0.4*g.rng.Float64())
		g.vertices = append(g.vertices, [2]float64{g.cx + r*math.Cos(a), g.cy + r*math.Sin(a)})
	}
	g.next = 0
}

// surveyWorking reports whether t is inside the crew's working hours
// (08:30–11:30 and 13:30–17:30 site time, Monday to Saturday) and otherwise
// returns the start of the next working period.
func surveyWorking(t time.Time) (bool, time.Time) {
	for {
		day := localDay(t)
		if day.Weekday() != time.Sunday {
			for _, p := range [][2]time.Duration{{8*time.Hour + 30*time.Minute, 11*time.Hour + 30*time.Minute}, {13*time.Hour + 30*time.Minute, 17*time.Hour + 30*time.Minute}} {
				from, to := day.Add(p[0]), day.Add(p[1])
				if !t.Before(from) && t.Before(to) {
					return true, t
				}
				if t.Before(from) {
					return false, from
				}
			}
		}
		t = day.AddDate(0, 0, 1)
	}
}

func (g *surveyGen) terrain(x, y float64) float64 {
	return g.heightBias + 6*math.Sin(x/480) + 4*math.Cos(y/730)
}

func (g *surveyGen) Next() Reading {
	// Set-up and measurement take one to four minutes per point.
	g.t = g.t.Add(time.Duration(60+g.rng.IntN(181)) * time.Second)
	if ok, next := surveyWorking(g.t); !ok {
		g.t = next.Add(time.Duration(g.rng.IntN(600)) * time.Second)
		if ok2, next2 := surveyWorking(g.t); !ok2 { // jitter ran past the period's end
			g.t = next2
		}
	}
	if g.next == len(g.vertices) {
		// Move on to a neighbouring parcel 150–400 m away.
		d := 150 + 250*g.rng.Float64()
		a := 2 * math.Pi * g.rng.Float64()
		g.cx = clamp(g.cx+d*math.Cos(a), gkNorthing-40_000, gkNorthing+40_000)
		g.cy = clamp(g.cy+d*math.Sin(a), gkZone*1_000_000+gkFalseEast-60_000, gkZone*1_000_000+gkFalseEast+60_000)
		g.parcelNo++
		g.newParcel()
	}
	v := g.vertices[g.next]
	g.next++
	in := instruments[g.inst]
	hp := in.hMin + (in.hMax-in.hMin)*g.rng.Float64()
	vp := in.vMin + (in.vMax-in.vMin)*g.rng.Float64()
	x := v[0] + hp*g.rng.NormFloat64()
	y := v[1] + hp*g.rng.NormFloat64()
	h := g.terrain(v[0], v[1]) + vp*g.rng.NormFloat64()
	parcel := fmt.Sprintf("%s-parcel-%04d", g.site, g.parcelNo)
	return Reading{At: g.t, Kind: device.KindSurvey, Data: SurveyPoint{
		Instrument: in.name,
		Point:      fmt.Sprintf("J%d", g.next),
		X:          round(x, 4), Y: round(y, 4), H: round(h, 4),
		HPrec: round(hp, 4), VPrec: round(vp, 4),
		Parcel: parcel, Operator: g.operator,
	}}
}

// ---- env: dust and noise that follow the working day ----

// EnvInterval is how often a dust monitor reports (simulated time).
const EnvInterval = time.Minute

type envGen struct {
	rng        *rand.Rand
	t          time.Time
	background float64 // slowly varying regional PM10, µg/m³
	burst      float64 // site activity excursion (earthworks, trucks)
	ratio      float64 // PM2.5 / PM10
}

func newEnvGen(c GenConfig, rng *rand.Rand) *envGen {
	return &envGen{rng: rng, t: c.Start, background: 45 + 20*rng.Float64(), ratio: 0.45}
}

// siteActivity is 1 while the site works (07:00–12:00 and 13:00–18:00,
// Monday to Saturday), 0.4 over lunch and 0.05 at night and on Sundays.
func siteActivity(t time.Time) float64 {
	l := t.In(SiteZone)
	if l.Weekday() == time.Sunday {
		return 0.05
	}
	h := l.Hour()
	switch {
	case h >= 7 && h < 12, h >= 13 && h < 18:
		return 1
	case h == 12:
		return 0.4
	}
	return 0.05
}

func (g *envGen) Next() Reading {
	g.t = g.t.Add(EnvInterval)
	act := siteActivity(g.t)
	// AR(1) processes: regional background drifts over hours, site bursts
	// decay over minutes.
	g.background = clamp(g.background+0.02*(55-g.background)+1.5*g.rng.NormFloat64(), 15, 180)
	g.burst = clamp(0.85*g.burst+act*(18*g.rng.Float64()+8*g.rng.NormFloat64()), 0, 600)
	g.ratio = clamp(g.ratio+0.01*g.rng.NormFloat64(), 0.3, 0.65)
	pm10 := g.background + g.burst + 3*g.rng.NormFloat64()
	pm10 = clamp(pm10, 5, 1500)
	pm25 := clamp(pm10*g.ratio, 2, pm10)
	noise := 44 + 26*act + 4*g.rng.NormFloat64()
	if act == 1 && g.rng.Float64() < 0.05 { // a breaker or a pile driver
		noise += 8 + 6*g.rng.Float64()
	}
	noise = clamp(noise, 30, 120)
	return Reading{At: g.t, Kind: device.KindDust, Data: Dust{PM25: round(pm25, 1), PM10: round(pm10, 1), Noise: round(noise, 1)}}
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d)) }
