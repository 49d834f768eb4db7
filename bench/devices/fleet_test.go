package devices

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/bench/internal/benchkit"
	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
	"github.com/edgeanchor/edgeanchor/sim"
)

// schedule says when a device takes its readings: reading k (0-based) of a
// device with phase offset o is taken at t0 + o + k*interval, and none at
// or after stop. A device sends what it has taken and not yet had
// acknowledged (its spool), in order, one at a time (firmware-sim's
// default window of 1).
type schedule struct {
	t0       time.Time
	interval time.Duration
	stop     time.Time
}

// taken is how many readings a device with offset o has taken by now (at
// most m, the readings it has signed).
func (s *schedule) taken(o time.Duration, now time.Time, m int) int {
	if !now.Before(s.stop) {
		now = s.stop.Add(-1)
	}
	first := s.t0.Add(o)
	if now.Before(first) {
		return 0
	}
	return min(m, int(now.Sub(first)/s.interval)+1)
}

// at is when reading k of a device with offset o is taken.
func (s *schedule) at(o time.Duration, k int) time.Time {
	return s.t0.Add(o + time.Duration(k)*s.interval)
}

// Outcomes of a connect attempt, as the device sees them.
const (
	attemptOK      = iota
	attemptDial    // TCP connection refused or timed out (the gateway is down)
	attemptRefused // connection closed before CONNACK, or a refusing CONNACK (throttled, busy)
	nOutcomes
)

type ackEvent struct {
	at  time.Time     // PUBACK read
	lat time.Duration // PUBLISH written → PUBACK read
}

type attemptEvent struct {
	at      time.Time
	outcome int
}

// simDevice is one quiet device of the load generator: a raw MQTT
// connection from its own loopback address, its readings' PUBLISH frames
// signed and encoded before any clock starts, and firmware-sim's reconnect
// policy (sim.Backoff).
type simDevice struct {
	signer *device.KeySigner
	src    *net.TCPAddr
	frames [][]byte // reading k = seq k+1
	offset time.Duration

	acked     atomic.Int32
	connected atomic.Bool

	// Written by the device's goroutine only, read after it ended.
	acks     []ackEvent
	attempts []attemptEvent
}

// sourceAddr is device i's own loopback address, 127.a.b.c with a, b, c in
// 1..250: each device has the ephemeral ports of its own address, as
// devices of a site have their own IP addresses.
func sourceAddr(i int) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IPv4(127, byte(1+i/62500), byte(1+i/250%250), byte(1+i%250))}
}

// newKeys makes n device keys on all cores.
func newKeys(tb testing.TB, n int) []*device.KeySigner {
	tb.Helper()
	out := make([]*device.KeySigner, n)
	parallel(tb, n, func(i int) error {
		priv, err := device.GenerateKey()
		if err != nil {
			return err
		}
		out[i] = device.NewKeySigner(priv)
		return nil
	})
	return out
}

// newDevices makes the load generator's devices for signers, m readings
// each (signed env.dust envelopes, seq 1..m, encoded as QoS 1 PUBLISH
// frames), with phases spread uniformly over interval.
func newDevices(tb testing.TB, signers []*device.KeySigner, m int, interval time.Duration) []*simDevice {
	tb.Helper()
	devs := make([]*simDevice, len(signers))
	data := map[string]any{"pm25_ugm3": 12.5, "pm10_ugm3": 30, "noise_dba": 55}
	ts := time.Now().Add(-time.Duration(m) * interval)
	parallel(tb, len(signers), func(i int) error {
		s := signers[i]
		d := &simDevice{signer: s, src: sourceAddr(i), frames: make([][]byte, m),
			offset: time.Duration(rand.Int64N(int64(interval)))}
		topic := broker.UpTopic(s.DID())
		for k := range m {
			body, err := device.NewBody(s.DID(), uint64(k+1), ts.Add(time.Duration(k)*interval), device.KindDust, data)
			if err != nil {
				return err
			}
			env, err := device.Seal(s, body)
			if err != nil {
				return err
			}
			d.frames[k] = benchkit.PublishFrame(topic, benchkit.PacketID(k), env)
		}
		devs[i] = d
		return nil
	})
	return devs
}

func parallel(tb testing.TB, n int, f func(i int) error) {
	tb.Helper()
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					first = cmp(first, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		tb.Fatal(first)
	}
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// Timeouts of the load generator's devices.
const (
	connectTimeout = 10 * time.Second
	ackTimeout     = 15 * time.Second
	backoffMin     = 250 * time.Millisecond // firmware-sim's defaults
	backoffMax     = 5 * time.Second
)

// run keeps the device connected to addr and sends its readings as the
// schedule (which the benchmark may replace) takes them, until ctx ends. gate, if not nil, is held during the
// first connect only (the initial connect of a fleet is paced by the load
// generator; reconnects are paced by the devices' backoff alone).
func (d *simDevice) run(ctx context.Context, addr string, sch *atomic.Pointer[schedule], gate chan struct{}) {
	did := string(d.signer.DID())
	bo := sim.Backoff{Min: backoffMin, Max: backoffMax}
	for ctx.Err() == nil {
		if gate != nil {
			select {
			case gate <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
		at := time.Now()
		pw, err := credential.MakeConnect(d.signer, at)
		var c *benchkit.RawConn
		if err == nil {
			c, err = benchkit.RawConnectFrom(d.src, addr, did, did, pw, connectTimeout)
		}
		if gate != nil {
			<-gate
		}
		if err != nil {
			outcome := attemptRefused
			if oe := (*net.OpError)(nil); errors.As(err, &oe) && oe.Op == "dial" {
				outcome = attemptDial
			}
			d.attempts = append(d.attempts, attemptEvent{at, outcome})
			if sleep(ctx, bo.Next()) != nil {
				return
			}
			continue
		}
		gate = nil
		d.attempts = append(d.attempts, attemptEvent{at, attemptOK})
		bo.Reset()
		d.connected.Store(true)
		d.send(ctx, c, sch)
		d.connected.Store(false)
		c.Close()
		if sleep(ctx, bo.Next()) != nil { // sim: a lost connection waits too
			return
		}
	}
}

// send publishes the readings taken and not yet acknowledged, in order,
// each after the previous one's PUBACK, and waits for the next reading
// while watching the connection, until the connection is lost or ctx ends.
func (d *simDevice) send(ctx context.Context, c *benchkit.RawConn, sched *atomic.Pointer[schedule]) {
	stop := context.AfterFunc(ctx, func() { _ = c.C.Close() })
	defer stop()
	for ctx.Err() == nil {
		sch := sched.Load()
		a := int(d.acked.Load())
		now := time.Now()
		if a < sch.taken(d.offset, now, len(d.frames)) {
			_ = c.C.SetDeadline(now.Add(ackTimeout))
			if _, err := c.C.Write(d.frames[a]); err != nil {
				return
			}
			id, err := c.ReadPuback()
			if err != nil {
				return
			}
			if id != benchkit.PacketID(a) {
				return // not this reading's PUBACK: reconnect and resend
			}
			done := time.Now()
			d.acks = append(d.acks, ackEvent{done, done.Sub(now)})
			d.acked.Add(1)
			continue
		}
		// Wake for the next reading, and at least every second to see ctx
		// and a new schedule; a lost connection (EOF) ends the wait at once.
		// A reading due at or after the schedule's stop is never taken: its
		// time is no deadline (it lies in the past once the window ended,
		// and waiting for it would spin).
		next := now.Add(time.Second)
		if a < len(d.frames) {
			if at := sch.at(d.offset, a); at.After(now) && at.Before(next) && at.Before(sch.stop) {
				next = at
			}
		}
		if err := c.WaitIdle(next); err != nil {
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// raiseNoFile raises this process's RLIMIT_NOFILE (soft and, as root with
// CAP_SYS_RESOURCE, hard) to n, below /proc/sys/fs/nr_open; the gateway
// child inherits it. The user's system limits are not touched: only this
// process and its children. Where the hard limit cannot be raised (a
// container without CAP_SYS_RESOURCE) the soft limit is raised to the hard
// one. It returns the limit in force.
func raiseNoFile(tb testing.TB, n uint64) uint64 {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatalf("getrlimit NOFILE: %v", err)
	}
	if lim.Cur >= n {
		return lim.Cur
	}
	if raw, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if nrOpen, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64); err == nil {
			n = min(n, nrOpen)
		}
	}
	want := syscall.Rlimit{Cur: n, Max: max(lim.Max, n)}
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
	if err != nil {
		logf(tb, "RLIMIT_NOFILE hard limit %d cannot be raised to %d (%v): soft limit raised to it", lim.Max, n, err)
		want = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			tb.Fatalf("raise RLIMIT_NOFILE to %d: %v", lim.Max, err)
		}
	}
	return want.Cur
}

// fdReserve is what a process keeps below RLIMIT_NOFILE besides its
// connections: the gateway's mqtt.fd_headroom (512) plus its margin (64),
// and some for the load generator's own files.
const fdReserve = 1000

// capDevices limits a device count to what RLIMIT_NOFILE lets one process
// hold (the gateway holds every device's connection, the load generator
// too).
func capDevices(tb testing.TB, n int, limit uint64) int {
	tb.Helper()
	if most := int(limit) - fdReserve; n > most {
		most = most / 1000 * 1000
		logf(tb, "%d devices do not fit RLIMIT_NOFILE %d: measuring %d instead", n, limit, most)
		return most
	}
	return n
}

// connectedCount counts the devices connected now.
func connectedCount(devs []*simDevice) int {
	n := 0
	for _, d := range devs {
		if d.connected.Load() {
			n++
		}
	}
	return n
}

// waitAll polls cond every 100 ms until it holds or limit passes.
func waitAll(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

// pct is the p-quantile of sorted latencies, in ms.
func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[int(float64(len(sorted)-1)*p)].Microseconds()) / 1000
}

// scrapeAll reads every sample of the gateway's /metrics as "name{labels}"
// → value.
func scrapeAll(httpAddr string) (map[string]float64, error) {
	resp, err := httpClient.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, nil
}

// nonZero is the samples of m whose name starts with prefix and whose value
// is not 0, sorted names.
func nonZero(m map[string]float64, prefixes ...string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		for _, p := range prefixes {
			if strings.HasPrefix(k, p) && v != 0 {
				out[k] = v
			}
		}
	}
	return out
}

var httpClient = newHTTPClient()

func newHTTPClient() *http.Client { return &http.Client{Timeout: 30 * time.Second} }

func mb(bytes float64) float64 { return bytes / (1 << 20) }

func logf(tb testing.TB, format string, args ...any) {
	tb.Helper()
	tb.Logf("%s "+format, append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

// connectFleet starts every device on addr, held by a schedule that starts
// a day ahead (no reading before all are connected; the caller sets the
// real one), and waits until all are connected (at most 3 minutes). It
// returns the schedule, the time the connects took, and the stop that ends
// the devices and waits for them.
func connectFleet(b *testing.B, devs []*simDevice, addr string, interval time.Duration) (*atomic.Pointer[schedule], time.Duration, func()) {
	b.Helper()
	sch := new(atomic.Pointer[schedule])
	sch.Store(&schedule{t0: time.Now().Add(24 * time.Hour), interval: interval, stop: time.Now().Add(25 * time.Hour)})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stop := func() { cancel(); wg.Wait() }
	gate := make(chan struct{}, connectInFlight)
	start := time.Now()
	for _, d := range devs {
		wg.Add(1)
		go func() { defer wg.Done(); d.run(ctx, addr, sch, gate) }()
	}
	if !waitAll(3*time.Minute, func() bool { return connectedCount(devs) == len(devs) }) {
		stop()
		b.Fatalf("%d devices: %d connected after 3 minutes", len(devs), connectedCount(devs))
	}
	return sch, time.Since(start), stop
}
