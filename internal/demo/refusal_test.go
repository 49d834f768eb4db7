package demo

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/sim"
	"github.com/edgeanchor/edgeanchor/sim/profile"
)

// gathered sums the samples of one metric family of g (0 if absent).
func gathered(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

// TestRetryableRefusalsInWindow reproduces issue 12's second fault with
// real parts: a ledger node, the gateway with a tight pipeline bound
// (limits.max_inflight 4) and ten simulated devices publishing 4 readings
// in flight as fast as they can (firmware-sim --window 4 --rate 50).
// Readings are refused as inflight_exceeded while later ones of the same
// window are stored; each must be stored when the device sends it again
// (a late fill), so every reading the devices took is stored exactly
// once, `edgeanchor audit` finds no gap, and a late fill's proof bundle
// verifies offline.
//
// The gateway keeps the MQTT 3.1.1 devices connected through refusals
// (limits.v3_refusals_before_disconnect), so the readings after a refused
// one are sent, and a device resends an unacknowledged reading after 1 s.
// The per-device rate (device_rate 5, device_burst 5, as in the issue)
// refuses many readings here too but made no refused-then-later-stored
// pattern in these runs: a window's publishes arrive together and the
// bucket almost never refills between two of them, whereas the pipeline
// frees slots at every group commit.
func TestRetryableRefusalsInWindow(t *testing.T) {
	ea := testbin.Path(t, "./cmd/edgeanchor") // built before the clock starts
	began := time.Now()
	o := testOptions(t, t.TempDir())
	o.Devices, o.Profile, o.Rate = 10, profile.KindEnv, 50
	ctx, s := startLedger(t, o, 180*time.Second)
	gcfg := s.gatewayConfig()
	gcfg.Limits.MaxInFlight = 4
	gcfg.Limits.V3RefusalsBeforeDisconnect = 1000
	reg := prometheus.NewRegistry()
	gctx, gcancel := context.WithCancel(ctx)
	gwDone, err := startGateway(gctx, gcfg, s.signer, s.log.With("component", "gateway"), reg)
	if err != nil {
		gcancel()
		t.Fatal(err)
	}
	defer func() {
		gcancel()
		if err := <-gwDone; err != nil {
			t.Errorf("gateway stopped with %v", err)
		}
	}()
	base := "http://" + gcfg.HTTP.Addr

	scfg, err := s.fleetConfig()
	if err != nil {
		t.Fatal(err)
	}
	const readings = 250 // per device: one a minute of simulated time, taken at once (enough refusals that one lands inside a window in every run: 100 made none once in CI)
	scfg.Start = time.Now().Add(-readings*profile.EnvInterval - profile.EnvInterval/2)
	scfg.Window = 4
	scfg.AckRetries = 1 << 30 // a device keeps every reading until it is stored
	scfg.BackoffMax = time.Second
	scfg.AckTimeout = time.Second
	var (
		mu    sync.Mutex
		taken = map[device.DID][]uint64{}
		acked = map[device.DID]int{}
	)
	scfg.OnTaken = func(tk sim.Taken) {
		mu.Lock()
		defer mu.Unlock()
		taken[tk.Device] = append(taken[tk.Device], tk.Seq)
	}
	scfg.OnAcked = func(tk sim.Taken) {
		mu.Lock()
		defer mu.Unlock()
		acked[tk.Device]++
	}
	fleet, err := sim.Open(scfg)
	if err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithCancel(ctx)
	fleetDone := make(chan error, 1)
	go func() { fleetDone <- fleet.Run(fctx) }()
	stopFleet := func() {
		if fcancel != nil {
			fcancel()
			<-fleetDone
			fcancel = nil
		}
	}
	defer stopFleet()

	testutil.WaitFor(t, 120*time.Second, "every reading taken acknowledged", func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, did := range fleetDIDs(fleet) {
			if n := len(taken[did]); n < readings || acked[did] < n {
				return fmt.Errorf("%s: taken %d, acknowledged %d; fleet %+v; fills %v, refused %v",
					did, n, acked[did], fleet.Stats(), gathered(t, reg, "edgeanchor_sequence_fills_total"),
					gathered(t, reg, "edgeanchor_messages_refused_total"))
			}
		}
		return nil
	})
	stopFleet()
	fills := gathered(t, reg, "edgeanchor_sequence_fills_total")
	refused := gathered(t, reg, "edgeanchor_messages_refused_total")
	st := fleet.Stats()
	t.Logf("%s: fleet %+v; refused %v, late fills %v, gaps %v", time.Since(began).Round(time.Millisecond), st, refused, fills, gathered(t, reg, "edgeanchor_sequence_gaps_total"))
	if fills == 0 {
		t.Fatalf("no late fill: the run did not reproduce a refusal inside a window (refused %v)", refused)
	}
	if st.Refused != 0 || st.Dropped != 0 {
		t.Fatalf("the fleet gave up %d and dropped %d readings", st.Refused, st.Dropped)
	}

	// Every reading taken is stored exactly once; the device's seqs run
	// from 1 without a hole; at least one was stored after a later seq.
	var fill struct {
		did device.DID
		seq uint64
	}
	mu.Lock()
	defer mu.Unlock()
	for did, seqs := range taken {
		recs := deviceRecords(t, base, did)
		gseqOf := map[uint64]uint64{}
		for _, r := range recs {
			if _, ok := gseqOf[r.Seq]; ok {
				t.Fatalf("%s: seq %d stored twice", did, r.Seq)
			}
			gseqOf[r.Seq] = r.GSeq
		}
		for _, seq := range seqs {
			if _, ok := gseqOf[seq]; !ok {
				t.Fatalf("%s: seq %d taken but not stored", did, seq)
			}
		}
		for seq := uint64(1); seq <= uint64(len(recs)); seq++ {
			if _, ok := gseqOf[seq]; !ok {
				t.Fatalf("%s: %d records stored but seq %d is not among them", did, len(recs), seq)
			}
			if g, ok := gseqOf[seq+1]; ok && g < gseqOf[seq] {
				fill.did, fill.seq = did, seq
			}
		}
	}
	if fill.seq == 0 {
		t.Fatal("no record was stored after a later seq of its device")
	}

	// Once everything is anchored, the audit finds nothing, and the late
	// fill's proof bundle verifies offline.
	testutil.WaitFor(t, 60*time.Second, "every record anchored", func() error {
		if n := gathered(t, reg, "edgeanchor_unanchored_records"); n != 0 {
			return fmt.Errorf("%v unanchored", n)
		}
		return nil
	})
	t.Logf("%s: every record anchored", time.Since(began).Round(time.Millisecond))
	audit := exec.Command(ea, "audit", "--gateway", string(s.signer.DID()), "--ledger", gcfg.LedgerRPC, "--api", base)
	out, err := audit.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "✓ no findings") {
		t.Fatalf("audit: %v\n%s", err, out)
	}
	resp, err := http.Get(fmt.Sprintf("%s/v1/devices/%s/records/%d/proof", base, fill.did, fill.seq))
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "fill.json")
	f, err := os.Create(bundle)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.ReadFrom(resp.Body)
	resp.Body.Close()
	f.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("proof of %s seq %d: %s %v", fill.did, fill.seq, resp.Status, err)
	}
	out, err = exec.Command(ea, "verify", bundle, "--trust", s.p.trust).CombinedOutput()
	if err != nil {
		t.Fatalf("verify the late fill %s seq %d: %v\n%s", fill.did, fill.seq, err, out)
	}
}

// fleetDIDs lists the fleet's device DIDs.
func fleetDIDs(f *sim.Fleet) []device.DID {
	var out []device.DID
	for _, d := range f.Devices() {
		out = append(out, d.DID)
	}
	return out
}

// TestV3RateLimitedDevicesKeepReadings runs issue 12's configuration:
// MQTT 3.1.1 simulated devices (firmware-sim --window 4 --rate 50, the
// default AckRetries of 3) against limits.device_rate 5, device_burst 5.
// Such a device is disconnected at each refusal without being told why;
// it pauses before it resends, so the rate limit refills, and gives no
// reading up: every reading is stored exactly once. (Resending at once, it
// gave up 198 of 240 readings here.)
func TestV3RateLimitedDevicesKeepReadings(t *testing.T) {
	o := testOptions(t, t.TempDir())
	o.Devices, o.Profile, o.Rate = 4, profile.KindEnv, 50
	ctx, s := startLedger(t, o, 180*time.Second)
	gcfg := s.gatewayConfig()
	gcfg.Limits.DeviceRate, gcfg.Limits.DeviceBurst = 5, 5
	reg := prometheus.NewRegistry()
	gctx, gcancel := context.WithCancel(ctx)
	gwDone, err := startGateway(gctx, gcfg, s.signer, s.log.With("component", "gateway"), reg)
	if err != nil {
		gcancel()
		t.Fatal(err)
	}
	defer func() {
		gcancel()
		if err := <-gwDone; err != nil {
			t.Errorf("gateway stopped with %v", err)
		}
	}()
	scfg, err := s.fleetConfig()
	if err != nil {
		t.Fatal(err)
	}
	const readings = 60
	scfg.Start = time.Now().Add(-readings*profile.EnvInterval - profile.EnvInterval/2)
	scfg.Window = 4
	fleet, err := sim.Open(scfg)
	if err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithCancel(ctx)
	fleetDone := make(chan error, 1)
	go func() { fleetDone <- fleet.Run(fctx) }()
	defer func() {
		fcancel()
		<-fleetDone
	}()
	testutil.WaitFor(t, 120*time.Second, "every reading sent and answered", func() error {
		if st := fleet.Stats(); st.Taken < uint64(o.Devices*readings) || st.Spooled > 0 {
			return fmt.Errorf("fleet %+v", st)
		}
		return nil
	})
	st := fleet.Stats()
	t.Logf("fleet %+v; refused %v", st, gathered(t, reg, "edgeanchor_messages_refused_total"))
	if gathered(t, reg, "edgeanchor_messages_refused_total") == 0 {
		t.Fatal("no publish was refused: the run did not exercise the rate limit")
	}
	if st.Refused != 0 || st.Acked != st.Taken {
		t.Fatalf("the devices gave up %d readings (%d of %d acknowledged)", st.Refused, st.Acked, st.Taken)
	}
	for _, did := range fleetDIDs(fleet) {
		recs := deviceRecords(t, "http://"+gcfg.HTTP.Addr, did)
		seen := map[uint64]bool{}
		for _, r := range recs {
			if seen[r.Seq] {
				t.Fatalf("%s: seq %d stored twice", did, r.Seq)
			}
			seen[r.Seq] = true
		}
		for seq := uint64(1); seq <= uint64(len(recs)); seq++ {
			if !seen[seq] {
				t.Fatalf("%s: %d records but seq %d missing", did, len(recs), seq)
			}
		}
	}
}
