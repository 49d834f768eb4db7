package sim

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emmansun/gmsm/sm3"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/sim/profile"
)

// ErrConfig means a Config field is outside its bounds; the error names it.
var ErrConfig = errors.New("sim: bad config")

// Config describes a simulated fleet.
type Config struct {
	Broker     string    // MQTT broker URL, e.g. tcp://127.0.0.1:1883
	Devices    int       // fleet size
	Profile    string    // payroll, survey, env or mixed
	Rate       float64   // readings per second per device while its clock is behind the wall clock
	StateDir   string    // keys, sequence counters, spools (one directory per device)
	TokensFile string    // enrollment tokens, read when a device has not enrolled yet
	Tokens     []Token   // more tokens, e.g. made in-process by the demo
	Site       string    // site name in registrations (default site-a)
	Seed       uint64    // 0: random the first time; kept in {StateDir}/fleet.json
	Start      time.Time // zero: kept in fleet.json, or DefaultStart the first time
	// Arrears seeds wage-arrears cases into payroll terminals' wage runs
	// (kept in fleet.json the first time: a fleet's readings depend on it).
	Arrears  profile.Arrears
	SpoolMax int // readings kept per device while offline (DefaultSpoolMax)
	Window   int // unacknowledged publishes per device (default 1)

	ConnectTimeout time.Duration // per attempt (default 30 s; an enrollment waits for a block)
	AckTimeout     time.Duration // PUBACK wait before the connection is restarted (default 15 s)
	BackoffMin     time.Duration // first reconnect delay (default 250 ms)
	BackoffMax     time.Duration // reconnect delay ceiling (default 5 s)
	// AckRetries is how many times in a row the oldest reading may go
	// unacknowledged on a live connection (PUBACK timeout, or the connection
	// dropped while it was in flight) before it is given up as refused
	// (default 3).
	AckRetries int

	Logger *slog.Logger
	// Now is the wall clock (default time.Now).
	Now func() time.Time
	// OnTaken, if set, is called for every reading once it is signed and
	// spooled; OnAcked once the gateway acknowledged it. Used by tests.
	OnTaken func(Taken)
	OnAcked func(Taken)
}

// Taken describes one signed reading.
type Taken struct {
	Device device.DID
	Seq    uint64
	At     time.Time // simulated reading time, the envelope's ts
	Kind   string
}

// DefaultConfig returns a 10-device mixed fleet against a local gateway.
func DefaultConfig() Config {
	return Config{
		Broker: "tcp://127.0.0.1:1883", Devices: 10, Profile: "mixed", Rate: 1,
		StateDir: "var/sim", Site: "site-a", SpoolMax: DefaultSpoolMax, Window: 1,
	}
}

// Validate names the field and the bound on error.
func (c *Config) Validate() error {
	switch {
	case c.Broker == "":
		return fmt.Errorf("%w: broker is empty", ErrConfig)
	case c.Devices < 1 || c.Devices > 100_000:
		return fmt.Errorf("%w: devices %d must be between 1 and 100000", ErrConfig, c.Devices)
	case c.Rate <= 0 || c.Rate > 10_000:
		return fmt.Errorf("%w: rate %v must be > 0 and <= 10000 readings/s per device", ErrConfig, c.Rate)
	case c.StateDir == "":
		return fmt.Errorf("%w: state dir is empty", ErrConfig)
	case c.SpoolMax < 0:
		return fmt.Errorf("%w: spool max %d must be >= 0 (0 = %d)", ErrConfig, c.SpoolMax, DefaultSpoolMax)
	case c.Window < 0 || c.Window > 1000:
		return fmt.Errorf("%w: window %d must be between 0 and 1000 (0 = 1)", ErrConfig, c.Window)
	case c.Arrears.Unpaid < 0 || c.Arrears.Late < 0 || c.Arrears.BelowFloor < 0 || c.Arrears.Ghost < 0 ||
		c.Arrears.Unpaid > 1000 || c.Arrears.Late > 1000 || c.Arrears.BelowFloor > 1000 || c.Arrears.Ghost > 1000:
		return fmt.Errorf("%w: arrears %+v: each count must be between 0 and 1000", ErrConfig, c.Arrears)
	}
	if _, err := profile.KindFor(c.Profile, 0); err != nil {
		return fmt.Errorf("%w: profile: %w", ErrConfig, err)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Site == "" {
		c.Site = "site-a"
	}
	if c.Window == 0 {
		c.Window = 1
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 30 * time.Second
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = 15 * time.Second
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = 250 * time.Millisecond
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = 5 * time.Second
	}
	if c.AckRetries == 0 {
		c.AckRetries = 3
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// fleetState is {StateDir}/fleet.json: what makes a fleet's readings
// reproducible across restarts.
type fleetState struct {
	Seed  uint64    `json:"seed"`
	Site  string    `json:"site"`
	Start time.Time `json:"start"`
	// Arrears is the plan of seeded wage-arrears cases (absent: none).
	Arrears *profile.Arrears `json:"arrears,omitempty"`
}

// Stats counts what the fleet did since Open (Dropped: over the spools' lives).
type Stats struct {
	Devices         int
	Online          int
	Taken           uint64 // readings signed and spooled
	Acked           uint64 // readings acknowledged by the gateway (deleted from the spool)
	Spooled         int    // readings waiting in spools
	Dropped         uint64 // readings dropped because a spool was full
	Refused         uint64 // readings given up after AckRetries unacknowledged sends (refused by the gateway)
	Connects        uint64
	ConnectFailures uint64
}

// Fleet is a set of simulated devices sharing a state directory.
type Fleet struct {
	cfg     Config
	state   fleetState
	salt    []byte
	devices []*simDevice

	online   atomic.Int64
	taken    atomic.Uint64
	acked    atomic.Uint64
	refused  atomic.Uint64
	connects atomic.Uint64
	connFail atomic.Uint64
	loadProg LoadProgress // the running load run's counters
}

// Open prepares the fleet in cfg.StateDir: keys made once, sequence counters
// and spools reloaded, each generator replayed to where the device stopped,
// tokens assigned to devices that have not enrolled yet.
func Open(cfg Config) (*Fleet, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Check the tokens before anything is written: a fleet that cannot
	// enroll every device fails here and leaves the state directory as it
	// was.
	tokens, err := cfg.tokensIfNeeded()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	f := &Fleet{cfg: cfg}
	if err := f.loadState(); err != nil {
		return nil, err
	}
	h := sm3.New()
	fmt.Fprintf(h, "edgeanchor-sim site salt\n%s\n%d", f.state.Site, f.state.Seed)
	f.salt = h.Sum(nil)

	ids := make([]*identity, cfg.Devices)
	for i := range cfg.Devices {
		kind, _ := profile.KindFor(cfg.Profile, i)
		id, err := loadIdentity(filepath.Join(cfg.StateDir, deviceName(i)), i, kind, f.state.Site)
		if err != nil {
			return nil, err
		}
		ids[i] = id
	}
	if tokens != nil {
		if err := assignTokens(ids, tokens); err != nil {
			return nil, err
		}
	}
	for _, id := range ids {
		d, err := f.newDevice(id)
		if err != nil {
			return nil, err
		}
		f.devices = append(f.devices, d)
	}
	return f, nil
}

// tokensIfNeeded reads the tokens when some device still needs one, and
// checks that every such device will find one. It writes nothing.
func (c *Config) tokensIfNeeded() ([]Token, error) {
	states, err := readStates(c.StateDir, c.Profile, c.Devices)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(states, func(st deviceState) bool { return !st.Enrolled && st.Token == "" }) {
		return nil, nil
	}
	tokens := slices.Clone(c.Tokens)
	if c.TokensFile != "" {
		t, err := ReadTokens(c.TokensFile)
		if err != nil {
			return nil, err
		}
		tokens = append(tokens, t...)
	}
	if _, err := planTokens(states, tokens); err != nil {
		return nil, err
	}
	return tokens, nil
}

func (f *Fleet) loadState() error {
	path := filepath.Join(f.cfg.StateDir, "fleet.json")
	b, err := os.ReadFile(path)
	if err == nil {
		if err := json.Unmarshal(b, &f.state); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrState, path, err)
		}
		if f.cfg.Seed != 0 && f.cfg.Seed != f.state.Seed {
			return fmt.Errorf("%w: %s was made with seed %d, not %d (use another state dir)", ErrConfig, path, f.state.Seed, f.cfg.Seed)
		}
		return nil
	}
	if !os.IsNotExist(err) {
		return fmt.Errorf("sim: %w", err)
	}
	f.state = fleetState{Seed: f.cfg.Seed, Site: f.cfg.Site, Start: f.cfg.Start}
	if f.cfg.Arrears != (profile.Arrears{}) {
		a := f.cfg.Arrears
		f.state.Arrears = &a
	}
	if f.state.Seed == 0 {
		var b [8]byte
		rand.Read(b[:])
		f.state.Seed = binary.BigEndian.Uint64(b[:]) | 1
	}
	if f.state.Start.IsZero() {
		f.state.Start = profile.DefaultStart(f.cfg.Now())
	}
	f.state.Start = f.state.Start.UTC()
	out, _ := json.MarshalIndent(f.state, "", "  ")
	return writeFileSync(path, append(out, '\n'), 0o600)
}

// Seeded returns the wage-arrears cases the fleet's payroll terminals
// seeded in the wage runs generated so far (fleet.json holds the plan; the
// cases follow from it and the seed). Call it while the fleet is not
// running.
func (f *Fleet) Seeded() []profile.SeededCase {
	var out []profile.SeededCase
	for _, d := range f.devices {
		if s, ok := d.gen.(profile.Seeder); ok {
			out = append(out, s.Seeded()...)
		}
	}
	return out
}

// Seed is the fleet's seed (as given, or drawn the first time and kept).
func (f *Fleet) Seed() uint64 { return f.state.Seed }

// Start is where the devices' simulated clocks began.
func (f *Fleet) Start() time.Time { return f.state.Start }

// Salt is the site salt the fleet uses for device.PersonRef (derived from
// site and seed, so a seeded fleet is reproducible).
func (f *Fleet) Salt() []byte { return f.salt }

// DeviceInfo describes one simulated device.
type DeviceInfo struct {
	Name     string
	DID      device.DID
	Kind     string
	Enrolled bool
}

// Devices lists the fleet's devices.
func (f *Fleet) Devices() []DeviceInfo {
	out := make([]DeviceInfo, len(f.devices))
	for i, d := range f.devices {
		out[i] = DeviceInfo{Name: d.id.state.Name, DID: d.id.signer.DID(), Kind: d.id.state.Kind, Enrolled: d.id.enrolled()}
	}
	return out
}

// Stats returns the fleet's counters.
func (f *Fleet) Stats() Stats {
	s := Stats{
		Devices: len(f.devices), Online: int(f.online.Load()),
		Taken: f.taken.Load(), Acked: f.acked.Load(), Refused: f.refused.Load(),
		Connects: f.connects.Load(), ConnectFailures: f.connFail.Load(),
	}
	for _, d := range f.devices {
		s.Spooled += d.spool.Len()
		s.Dropped += d.spool.Dropped()
	}
	return s
}

// Run runs every device until ctx is done. Readings are signed and spooled
// whether or not the gateway is reachable; each device sends its spool in
// order and deletes a reading only after its PUBACK.
func (f *Fleet) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(f.devices))
	for _, d := range f.devices {
		wg.Add(2)
		go func() { defer wg.Done(); errs <- d.takeLoop(ctx) }()
		go func() { defer wg.Done(); d.sendLoop(ctx) }()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			all = append(all, err)
		}
	}
	return errors.Join(all...)
}

// LoadProgress returns the counters of load runs so far: publishes sent,
// acknowledged and refused. It may be called while Load runs.
func (f *Fleet) LoadProgress() (published, acked, refused uint64) {
	return f.loadProg.Published.Load(), f.loadProg.Acked.Load(), f.loadProg.Refused.Load()
}

// Load runs the fleet's devices in load mode: n readings per device are
// signed up front (their sequence numbers reserved on disk first, so they
// are never reused) and queued behind any readings still spooled, then
// published by Load at rate messages/s in total (0:
// as fast as the windows allow) with window unacknowledged per device.
// Devices that have not enrolled enroll with their tokens when they connect.
func (f *Fleet) Load(ctx context.Context, n int, rate float64, window int) (LoadResult, error) {
	if n < 1 {
		return LoadResult{}, fmt.Errorf("%w: messages per device %d must be >= 1", ErrConfig, n)
	}
	devs := make([]LoadDevice, len(f.devices))
	spooled := make([][]uint64, len(f.devices))
	for i, d := range f.devices {
		// Readings still spooled go first, so the device's order holds.
		var envs [][]byte
		for _, seq := range d.spool.Pending(0, d.spool.Len()) {
			env, err := d.spool.Get(seq)
			if err != nil {
				return LoadResult{}, err
			}
			envs = append(envs, env)
			spooled[i] = append(spooled[i], seq)
		}
		first, err := d.id.reserveSeqs(n)
		if err != nil {
			return LoadResult{}, err
		}
		signed, err := sealReadings(d.id.signer, d.gen, first, n)
		if err != nil {
			return LoadResult{}, err
		}
		envs = append(envs, signed...)
		ld := LoadDevice{Signer: d.id.signer, Kind: d.id.state.Kind, Site: d.id.state.Site, Envelopes: envs}
		if !d.id.enrolled() {
			ld.Token = d.id.state.Token
		}
		devs[i] = ld
	}
	res, err := Load(ctx, LoadConfig{
		Broker: f.cfg.Broker, Devices: devs, Rate: rate, Window: window,
		ConnectTimeout: f.cfg.ConnectTimeout, Now: f.cfg.Now, Progress: &f.loadProg,
	})
	if res.Published > 0 {
		// Every device connected, so every device is enrolled.
		for _, d := range f.devices {
			if err := d.id.setEnrolled(); err != nil {
				return res, err
			}
		}
	}
	if err == nil {
		for i, d := range f.devices {
			for _, seq := range spooled[i] {
				if err := d.spool.Delete(seq); err != nil {
					return res, err
				}
			}
		}
	}
	f.taken.Add(res.Published)
	f.acked.Add(res.Acked)
	return res, err
}
