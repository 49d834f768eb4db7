package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/sim"
)

type storedRecord struct {
	GSeq uint64 `json:"gseq"`
	Seq  uint64 `json:"seq"`
	TS   string `json:"ts"`
	Recv string `json:"recv"`
	Gap  uint64 `json:"gap"`
}

// deviceRecords pages through GET /v1/devices/{did}/records.
func deviceRecords(t *testing.T, base string, did device.DID) []storedRecord {
	t.Helper()
	var out []storedRecord
	from := uint64(1)
	for {
		resp, err := http.Get(fmt.Sprintf("%s/v1/devices/%s/records?from_seq=%d", base, did, from))
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Records     []storedRecord `json:"records"`
			NextFromSeq uint64         `json:"next_from_seq"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("records of %s: status %d, %v", did, resp.StatusCode, err)
		}
		out = append(out, page.Records...)
		if page.NextFromSeq == 0 {
			return out
		}
		from = page.NextFromSeq
	}
}

// TestGatewayOutage stops the gateway while the devices keep taking
// readings (until each has taken 30, about 15 s), against a real ledger
// node, then starts it again on the same ports and data: every reading
// taken in the gap is stored, in order, exactly once, with its original
// device timestamp (checked through the gateway's HTTP API).
func TestGatewayOutage(t *testing.T) {
	o := testOptions(t, t.TempDir())
	o.Devices = 4
	o.Rate = 2
	ctx, s := startLedger(t, o, 150*time.Second)
	gcfg := s.gatewayConfig()
	base := "http://" + gcfg.HTTP.Addr
	stopGW := s.startTestGateway(t, ctx)

	var (
		mu    sync.Mutex
		taken = map[device.DID][]sim.Taken{}
		wall  = map[device.DID][]time.Time{}
		acked = map[device.DID]uint64{}
	)
	scfg, err := s.fleetConfig()
	if err != nil {
		t.Fatal(err)
	}
	scfg.BackoffMax = 2 * time.Second
	scfg.OnTaken = func(tk sim.Taken) {
		mu.Lock()
		defer mu.Unlock()
		taken[tk.Device] = append(taken[tk.Device], tk)
		wall[tk.Device] = append(wall[tk.Device], time.Now())
	}
	scfg.OnAcked = func(tk sim.Taken) {
		mu.Lock()
		defer mu.Unlock()
		acked[tk.Device] = max(acked[tk.Device], tk.Seq)
	}
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

	waitUntil := func(d time.Duration, what string, cond func() bool) {
		t.Helper()
		testutil.WaitFor(t, d, what, func() error {
			if !cond() {
				return fmt.Errorf("fleet %+v", fleet.Stats())
			}
			return nil
		})
	}
	waitUntil(30*time.Second, "the fleet to enroll and send", func() bool {
		st := fleet.Stats()
		return st.Online == o.Devices && st.Acked >= uint64(2*o.Devices)
	})

	stopGW()
	gapFrom := time.Now()
	// The outage lasts until its effects show, however slow the machine:
	// every device knows it is offline and has taken at least 30 readings
	// (15 s at 2 readings/s) since the gateway stopped.
	waitUntil(120*time.Second, "every device offline with 30 readings taken in the outage", func() bool {
		if fleet.Stats().Online != 0 {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		for _, ws := range wall {
			n := 0
			for _, w := range ws {
				if w.After(gapFrom) {
					n++
				}
			}
			if n < 30 {
				return false
			}
		}
		return len(wall) == o.Devices
	})
	gapTo := time.Now()
	stopGW = s.startTestGateway(t, ctx)
	defer func() { stopGW() }()

	mu.Lock()
	inGap := map[device.DID][]sim.Taken{}
	for did, ws := range wall {
		for i, w := range ws {
			if w.After(gapFrom) && w.Before(gapTo) {
				inGap[did] = append(inGap[did], taken[did][i])
			}
		}
	}
	mu.Unlock()
	if len(inGap) != o.Devices {
		t.Fatalf("%d of %d devices took readings during the outage", len(inGap), o.Devices)
	}
	for did, g := range inGap {
		if len(g) < 30 {
			t.Fatalf("%s took only %d readings in the gap", did, len(g))
		}
	}
	waitUntil(60*time.Second, "the gap's readings to be acknowledged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for did, g := range inGap {
			if acked[did] < g[len(g)-1].Seq {
				return false
			}
		}
		return true
	})
	fcancel()
	<-fleetDone
	fleetDone <- nil // for the deferred receive

	mu.Lock()
	defer mu.Unlock()
	for did, g := range inGap {
		recs := deviceRecords(t, base, did)
		bySeq := map[uint64][]storedRecord{}
		for i, r := range recs {
			bySeq[r.Seq] = append(bySeq[r.Seq], r)
			if i > 0 && (r.Seq <= recs[i-1].Seq || r.GSeq <= recs[i-1].GSeq) {
				t.Fatalf("%s: record seq %d (gseq %d) stored after seq %d (gseq %d)", did, r.Seq, r.GSeq, recs[i-1].Seq, recs[i-1].GSeq)
			}
			if r.Gap != 0 {
				t.Fatalf("%s: seq %d stored after a gap of %d", did, r.Seq, r.Gap)
			}
		}
		for _, tk := range taken[did] {
			if tk.Seq > acked[did] {
				break
			}
			got := bySeq[tk.Seq]
			if len(got) != 1 {
				t.Fatalf("%s: seq %d stored %d times, want exactly once", did, tk.Seq, len(got))
			}
			if want := tk.At.UTC().Format(time.RFC3339Nano); got[0].TS != want {
				t.Fatalf("%s: seq %d stored with ts %s, taken at %s", did, tk.Seq, got[0].TS, want)
			}
		}
		for _, tk := range g {
			recv, err := time.Parse(time.RFC3339Nano, bySeq[tk.Seq][0].Recv)
			if err != nil || recv.Before(gapTo) {
				t.Fatalf("%s: seq %d taken in the gap but received at %v", did, tk.Seq, bySeq[tk.Seq][0].Recv)
			}
		}
	}
	st := fleet.Stats()
	t.Logf("fleet after the outage: %+v", st)
	if st.Dropped != 0 {
		t.Fatalf("fleet dropped %d readings", st.Dropped)
	}
}
