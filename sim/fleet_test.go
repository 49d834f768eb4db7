package sim

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/sim/profile"
)

// arrival is one publish the broker received.
type arrival struct {
	did device.DID
	seq uint64
	ts  string
}

// captureHook records every envelope published to the broker, used only
// for unit tests against a plain (allow-all) mochi broker.
type captureHook struct {
	mqtt.HookBase
	mu   sync.Mutex
	got  []arrival
	errs []error
}

func (h *captureHook) ID() string { return "capture" }
func (h *captureHook) Provides(b byte) bool {
	return b == mqtt.OnPublish
}
func (h *captureHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	o, err := device.Open(pk.Payload, 0)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.errs = append(h.errs, err)
		return pk, nil
	}
	if pk.TopicName != UpTopic(o.Body.DID) || cl.ID != string(o.Body.DID) {
		h.errs = append(h.errs, os.ErrInvalid)
	}
	h.got = append(h.got, arrival{o.Body.DID, o.Body.Seq, o.Body.TS})
	return pk, nil
}

func (h *captureHook) arrivals() []arrival {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]arrival(nil), h.got...)
}

// startBroker runs an allow-all mochi broker on addr feeding hook; the
// returned func stops it.
func startBroker(t *testing.T, addr string, hook *captureHook) func() {
	t.Helper()
	return serveBroker(t, newBroker(), addr, hook)
}

func newBroker() *mqtt.Server {
	return mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
}

// serveBroker serves s, allowing every client, with hook on addr; the
// returned func (also run at the end of the test) stops it.
func serveBroker(t *testing.T, s *mqtt.Server, addr string, hook mqtt.Hook) func() {
	t.Helper()
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.AddHook(hook, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { s.Close() }) }
	t.Cleanup(stop)
	return stop
}

// runFleet opens a fleet on cfg and runs it for at most within; the func it
// returns ends the run and fails the test if Run returned an error. A run
// still going at the end of the test is ended there.
func runFleet(t *testing.T, cfg Config, within time.Duration) (*Fleet, func()) {
	t.Helper()
	f, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var (
		once   sync.Once
		runErr error
	)
	wait := func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { _ = wait() })
	return f, func() {
		t.Helper()
		if err := wait(); err != nil {
			t.Fatal(err)
		}
	}
}

type takenLog struct {
	mu    sync.Mutex
	taken map[device.DID][]Taken
	wall  map[device.DID][]time.Time
	acked map[device.DID]uint64 // highest acked seq
}

func newTakenLog() *takenLog {
	return &takenLog{taken: map[device.DID][]Taken{}, wall: map[device.DID][]time.Time{}, acked: map[device.DID]uint64{}}
}

func (l *takenLog) onTaken(tk Taken) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.taken[tk.Device] = append(l.taken[tk.Device], tk)
	l.wall[tk.Device] = append(l.wall[tk.Device], time.Now())
}

func (l *takenLog) onAcked(tk Taken) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked[tk.Device] = max(l.acked[tk.Device], tk.Seq)
}

func testConfig(t *testing.T, broker string, log *takenLog) Config {
	cfg := DefaultConfig()
	cfg.Broker = "tcp://" + broker
	cfg.Devices = 4
	cfg.Rate = 20
	cfg.StateDir = filepath.Join(t.TempDir(), "sim")
	cfg.Seed = 77
	cfg.Start = time.Now().Add(-48 * time.Hour)
	cfg.BackoffMin = 50 * time.Millisecond
	cfg.BackoffMax = 400 * time.Millisecond
	cfg.ConnectTimeout = 2 * time.Second
	for i := range cfg.Devices {
		cfg.Tokens = append(cfg.Tokens, Token{Value: tokenHex("0123"[i])})
	}
	if log != nil {
		cfg.OnTaken, cfg.OnAcked = log.onTaken, log.onAcked
	}
	return cfg
}

func TestStoreAndForwardAcrossBrokerOutage(t *testing.T) {
	addr := testutil.FreeAddr(t)
	hook := &captureHook{}
	stop := startBroker(t, addr, hook)
	log := newTakenLog()
	cfg := testConfig(t, addr, log)
	f, stopFleet := runFleet(t, cfg, 60*time.Second)

	testutil.WaitUntil(t, 10*time.Second, "devices online", func() bool { return f.Stats().Online == cfg.Devices })
	// Every device has a reading acknowledged before the outage.
	testutil.WaitUntil(t, 10*time.Second, "a reading acknowledged from every device", func() bool {
		log.mu.Lock()
		defer log.mu.Unlock()
		return len(log.acked) == cfg.Devices
	})
	stop()
	gapFrom := time.Now()
	testutil.WaitUntil(t, 5*time.Second, "devices to notice the outage", func() bool { return f.Stats().Online == 0 })
	// The outage lasts until every device has taken two readings in it
	// (so at least one is spooled), however slow the machine.
	testutil.WaitUntil(t, 20*time.Second, "readings taken by every device during the outage", func() bool {
		log.mu.Lock()
		defer log.mu.Unlock()
		for _, d := range f.devices {
			n := 0
			for _, w := range log.wall[d.id.signer.DID()] {
				if w.After(gapFrom) {
					n++
				}
			}
			if n < 2 {
				return false
			}
		}
		return true
	})
	gapTo := time.Now()
	if f.Stats().Spooled == 0 {
		t.Fatal("nothing spooled while the broker was down")
	}
	startBroker(t, addr, hook)

	// Readings taken in the gap: every device's highest one must be acked.
	log.mu.Lock()
	gapLast := map[device.DID]uint64{}
	for did, ts := range log.wall {
		for i, w := range ts {
			if w.After(gapFrom) && w.Before(gapTo) {
				gapLast[did] = log.taken[did][i].Seq
			}
		}
	}
	log.mu.Unlock()
	if len(gapLast) != cfg.Devices {
		t.Fatalf("only %d devices took readings during the outage", len(gapLast))
	}
	testutil.WaitUntil(t, 20*time.Second, "the gap's readings to be acknowledged", func() bool {
		log.mu.Lock()
		defer log.mu.Unlock()
		for did, seq := range gapLast {
			if log.acked[did] < seq {
				return false
			}
		}
		return true
	})
	stopFleet()
	if st := f.Stats(); st.ConnectFailures == 0 || st.Dropped != 0 || st.Refused != 0 {
		t.Fatalf("stats %+v: want reconnect failures during the outage, nothing dropped or refused", st)
	}

	// Per device: arrivals, with repeats of an already-received reading
	// removed (a PUBACK lost in the outage), are 1, 2, …, k in order with
	// the timestamps the device signed; k+1 … N are still in the spool.
	byDev := map[device.DID][]arrival{}
	for _, a := range hook.arrivals() {
		byDev[a.did] = append(byDev[a.did], a)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	for _, d := range f.devices {
		did := d.id.signer.DID()
		taken := log.taken[did]
		var next uint64 = 1
		repeats := 0
		for _, a := range byDev[did] {
			switch {
			case a.seq == next:
				if want := taken[a.seq-1].At.Format(time.RFC3339Nano); a.ts != want {
					t.Fatalf("%s seq %d arrived with ts %s, taken at %s", did, a.seq, a.ts, want)
				}
				next++
			case a.seq < next:
				repeats++
			default:
				t.Fatalf("%s: seq %d arrived before seq %d", did, a.seq, next)
			}
		}
		if repeats > 2*cfg.Window {
			t.Errorf("%s: %d repeated arrivals; only the in-flight reading of a dropped connection may repeat", did, repeats)
		}
		if next-1 < gapLast[did] {
			t.Fatalf("%s: received up to %d, the gap ran to %d", did, next-1, gapLast[did])
		}
		// The spool holds a contiguous run up to the last reading taken,
		// starting at most Window readings before the first not received
		// (received, but stopped before its PUBACK came back).
		held := d.spool.Pending(0, 1<<20)
		for i, seq := range held {
			if seq != held[0]+uint64(i) {
				t.Fatalf("%s: spool %v not contiguous", did, held)
			}
		}
		if len(held) > 0 && (held[0] > next || held[0]+uint64(cfg.Window) < next || held[len(held)-1] != uint64(len(taken))) {
			t.Fatalf("%s: spool holds %v; received up to %d of %d taken", did, held, next-1, len(taken))
		}
		if len(held) == 0 && next-1 != uint64(len(taken)) {
			t.Fatalf("%s: spool empty but received %d of %d taken", did, next-1, len(taken))
		}
	}
	if len(hook.errs) > 0 {
		t.Fatalf("broker saw bad publishes: %v", hook.errs)
	}
}

func TestSpoolFullDropsOldestWhileOffline(t *testing.T) {
	addr := testutil.FreeAddr(t) // nothing listens: the gateway is unreachable
	cfg := testConfig(t, addr, nil)
	cfg.Devices = 2
	cfg.Rate = 100
	cfg.SpoolMax = 5
	f, stopFleet := runFleet(t, cfg, 20*time.Second)
	testutil.WaitUntil(t, 10*time.Second, "readings to overflow the spools", func() bool { return f.Stats().Taken >= 40 })
	stopFleet()
	st := f.Stats()
	if st.Spooled != 10 {
		t.Fatalf("spooled %d, want 2 devices × 5", st.Spooled)
	}
	if st.Dropped != st.Taken-10 {
		t.Fatalf("dropped %d, want taken %d - 10 held", st.Dropped, st.Taken)
	}
	// The newest readings are the ones kept.
	for _, d := range f.devices {
		if held := d.spool.Pending(0, 100); held[len(held)-1] != d.id.seq || len(held) != 5 {
			t.Fatalf("spool %v, last seq %d", held, d.id.seq)
		}
	}
	// The counter survives a restart.
	f2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if f2.Stats().Dropped != st.Dropped {
		t.Fatalf("dropped after reopen %d, want %d", f2.Stats().Dropped, st.Dropped)
	}
}

func TestFleetRestartKeepsIdentityAndSeq(t *testing.T) {
	addr := testutil.FreeAddr(t)
	hook := &captureHook{}
	startBroker(t, addr, hook)
	cfg := testConfig(t, addr, nil)
	cfg.Devices = 2
	run := func() *Fleet {
		f, stopFleet := runFleet(t, cfg, 30*time.Second)
		testutil.WaitUntil(t, 10*time.Second, "readings acknowledged", func() bool { return f.Stats().Acked >= 6 })
		stopFleet()
		return f
	}
	a := run()
	before := len(hook.arrivals())
	b := run()
	for i := range a.devices {
		da, db := a.devices[i], b.devices[i]
		if da.id.signer.DID() != db.id.signer.DID() {
			t.Fatal("device key changed across a restart")
		}
		if !db.id.enrolled() || db.id.state.Token != da.id.state.Token {
			t.Fatal("enrollment not kept across a restart")
		}
	}
	// After the restart each device continues its sequence.
	last := map[device.DID]uint64{}
	for i, a := range hook.arrivals() {
		if prev, ok := last[a.did]; ok && a.seq <= prev {
			t.Fatalf("arrival %d (after restart: %v): %s seq %d after %d", i, i >= before, a.did, a.seq, prev)
		}
		last[a.did] = a.seq
	}
	if a.Seed() != 77 || b.Start() != a.Start() {
		t.Fatal("fleet seed or start not kept")
	}
}

func TestLoadModePublishesPreSignedInOrder(t *testing.T) {
	addr := testutil.FreeAddr(t)
	hook := &captureHook{}
	startBroker(t, addr, hook)
	cfg := testConfig(t, addr, nil)
	cfg.Devices = 3
	f, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Device 0 took a reading while offline: it goes out first.
	d0 := f.devices[0]
	if err := d0.take(d0.gen.Next()); err != nil {
		t.Fatal(err)
	}
	res, err := f.Load(ctx, 50, 0, 8)
	if err != nil {
		t.Fatal(err)
	}
	if res.Published != 151 || res.Acked != 151 || res.Rate() <= 0 {
		t.Fatalf("result %+v", res)
	}
	if d0.spool.Len() != 0 {
		t.Fatal("spooled reading not deleted after the load run acknowledged it")
	}
	last := map[device.DID]uint64{}
	for _, a := range hook.arrivals() {
		if a.seq != last[a.did]+1 {
			t.Fatalf("%s: seq %d after %d", a.did, a.seq, last[a.did])
		}
		last[a.did] = a.seq
	}
	for i, d := range f.devices {
		want := uint64(50)
		if i == 0 {
			want = 51
		}
		if last[d.id.signer.DID()] != want || d.id.seq != want || !d.id.enrolled() {
			t.Fatalf("%s: received %d, counter %d, enrolled %v", d.id.state.Name, last[d.id.signer.DID()], d.id.seq, d.id.enrolled())
		}
	}
	// A second run continues the sequence numbers from the disk counter.
	if _, err := f.Load(ctx, 5, 200, 2); err != nil {
		t.Fatal(err)
	}
	for _, a := range hook.arrivals() {
		last[a.did] = a.seq
	}
	for i, d := range f.devices {
		want := uint64(55)
		if i == 0 {
			want = 56
		}
		if got := last[d.id.signer.DID()]; got != want {
			t.Fatalf("%s: second load run ended at seq %d, want %d", d.id.state.Name, got, want)
		}
	}
}

// refuseHook refuses (and disconnects, as the gateway does to an MQTT 3.1.1
// client) every publish of one sequence number; used only for unit tests.
type refuseHook struct {
	mqtt.HookBase
	srv      *mqtt.Server
	seq      uint64
	mu       sync.Mutex
	refusals int
	accepted []uint64
}

func (h *refuseHook) ID() string           { return "refuse" }
func (h *refuseHook) Provides(b byte) bool { return b == mqtt.OnPublish }
func (h *refuseHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	o, err := device.Open(pk.Payload, 0)
	if err != nil {
		return pk, packets.ErrRejectPacket
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if o.Body.Seq == h.seq {
		h.refusals++
		_ = h.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		return pk, packets.ErrRejectPacket
	}
	h.accepted = append(h.accepted, o.Body.Seq)
	return pk, nil
}

func TestRefusedReadingIsGivenUpAfterRetries(t *testing.T) {
	addr := testutil.FreeAddr(t)
	s := newBroker()
	hook := &refuseHook{srv: s, seq: 3}
	serveBroker(t, s, addr, hook)
	cfg := testConfig(t, addr, nil)
	cfg.Devices = 1
	f, stopFleet := runFleet(t, cfg, 30*time.Second)
	testutil.WaitUntil(t, 20*time.Second, "readings after the refused one", func() bool {
		hook.mu.Lock()
		defer hook.mu.Unlock()
		return len(hook.accepted) >= 5
	})
	stopFleet()
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if hook.refusals != 3 {
		t.Fatalf("seq 3 sent %d times, want 3 (AckRetries)", hook.refusals)
	}
	if st := f.Stats(); st.Refused != 1 {
		t.Fatalf("refused %d, want 1", st.Refused)
	}
	for i, seq := range hook.accepted[:4] {
		if want := []uint64{1, 2, 4, 5}[i]; seq != want {
			t.Fatalf("accepted %v, want 1 2 4 5 …", hook.accepted)
		}
	}
}

func TestOpenWithoutEnoughTokensWritesNothing(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1", nil)
	cfg.Tokens = cfg.Tokens[:3] // four devices
	if _, err := Open(cfg); !errors.Is(err, ErrNoToken) {
		t.Fatalf("err %v, want ErrNoToken", err)
	}
	if _, err := os.Stat(cfg.StateDir); !os.IsNotExist(err) {
		t.Fatalf("state directory made although Open failed: %v", err)
	}
	cfg.Profile = "drone"
	if _, err := Open(cfg); !errors.Is(err, ErrConfig) {
		t.Fatalf("bad profile: err %v, want ErrConfig", err)
	}
}

func TestFleetReadingsReproducibleWithSeed(t *testing.T) {
	start := time.Date(2026, 10, 30, 0, 0, 0, 0, profile.SiteZone)
	open := func(seed uint64) *Fleet {
		cfg := testConfig(t, "127.0.0.1:1", nil)
		cfg.Seed, cfg.Start = seed, start
		f, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	readings := func(f *Fleet) []string {
		var out []string
		for _, d := range f.devices {
			out = append(out, encode(t, []profile.Reading{d.gen.Next(), d.gen.Next(), d.gen.Next()})...)
		}
		return out
	}
	a, b, c := open(21), open(21), open(22)
	if a.devices[0].id.signer.DID() == b.devices[0].id.signer.DID() {
		t.Fatal("two fleets share a key")
	}
	ra, rb, rc := readings(a), readings(b), readings(c)
	for i := range ra {
		if ra[i] != rb[i] {
			t.Fatalf("reading %d differs between fleets of the same seed:\n%s\n%s", i, ra[i], rb[i])
		}
	}
	same := 0
	for i := range ra {
		if ra[i] == rc[i] {
			same++
		}
	}
	if same == len(ra) {
		t.Fatal("another seed gave the same readings")
	}
}

// encode writes readings as comparable lines.
func encode(t *testing.T, rs []profile.Reading) []string {
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
