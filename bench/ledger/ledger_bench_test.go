// Package ledgerbench measures the consortium ledger under AnchorBatch load:
// committed tx/s and commit latency (broadcast_tx_sync to the receipt seen
// by the client) with 1 and 4 validators, each an OS process on 127.0.0.1.
// Run by `make bench`; results go to bench/results/ledger.json.
//
// Each case has two phases of LEDGER_BENCH_SECONDS (15) each: capacity
// (LEDGER_BENCH_GATEWAYS gateways, 64, each keeping LEDGER_BENCH_WINDOW
// headers in flight, 16) and latency at a fixed offered rate
// (LEDGER_BENCH_RATE tx/s, 1500, each gateway on its own schedule, latency
// counted from the scheduled send). LEDGER_BENCH_MAX_TX (100000) caps the
// txs of a phase.
package ledgerbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgertest"
)

type caseResult struct {
	Validators int `json:"validators"`
	Gateways   int `json:"gateways"`
	// Phase 1 (capacity): Window headers in flight per gateway.
	Window         int     `json:"peak_window_per_gateway"`
	PeakTxPerSec   float64 `json:"peak_tx_per_s"`
	PeakP50Ms      float64 `json:"peak_commit_p50_ms"`
	PeakTxPerBlock float64 `json:"peak_tx_per_block"`
	// Phase 2 (latency at the offered rate), the figures below.
	OfferedTxPerSec float64 `json:"offered_tx_per_s"`
	Seconds         float64 `json:"seconds"`
	Committed       int64   `json:"committed"`
	TxPerSec        float64 `json:"tx_per_s"`
	P50Ms           float64 `json:"commit_p50_ms"`
	P90Ms           float64 `json:"commit_p90_ms"`
	P99Ms           float64 `json:"commit_p99_ms"`
	MaxMs           float64 `json:"commit_max_ms"`
	Blocks          int64   `json:"blocks"`
	TxPerBlock      float64 `json:"tx_per_block"`
	Refused         int64   `json:"refused"`
	OtherErrors     int64   `json:"other_errors"`
	TargetTxPerS    float64 `json:"target_tx_per_s,omitempty"`
	TargetP50Ms     float64 `json:"target_p50_ms,omitempty"`
	MeetsTargets    *bool   `json:"meets_targets,omitempty"`
	TimeoutCommit   string  `json:"timeout_commit,omitempty"`
}

type report struct {
	Date   string       `json:"date"`
	GoOS   string       `json:"goos"`
	GoArch string       `json:"goarch"`
	CPUs   int          `json:"cpus"`
	Cases  []caseResult `json:"cases"`
	Note   string       `json:"note"`
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func BenchmarkAnchorBatch(b *testing.B) {
	rep := report{
		Date: time.Now().UTC().Format(time.RFC3339), GoOS: runtime.GOOS, GoArch: runtime.GOARCH, CPUs: runtime.NumCPU(),
		Note: "AnchorBatch txs from many gateways (each a chain of signed headers, several in flight), " +
			"committed tx/s over the load window and commit latency from broadcast_tx_sync to the client's receipt; " +
			"validators are OS processes on 127.0.0.1 sharing this machine's CPUs with the load generator",
	}
	for _, nv := range []int{1, 4} {
		b.Run(fmt.Sprintf("validators=%d", nv), func(b *testing.B) {
			r := runCase(b, nv)
			if nv == 4 {
				r.TargetTxPerS, r.TargetP50Ms = 1500, 400
				ok := r.TxPerSec >= 0.98*r.TargetTxPerS && r.P50Ms <= r.TargetP50Ms
				r.MeetsTargets = &ok
			}
			rep.Cases = append(rep.Cases, r)
			b.ReportMetric(r.PeakTxPerSec, "peak_tx/s")
			b.ReportMetric(r.TxPerSec, "tx/s")
			b.ReportMetric(r.P50Ms, "p50_ms")
			b.ReportMetric(r.P99Ms, "p99_ms")
			b.ReportMetric(r.TxPerBlock, "tx/block")
			b.Logf("validators=%d: capacity %.0f tx/s (%d gateways x %d in flight, p50 %.0f ms, %.0f tx/block); at %.0f tx/s offered: %.0f tx/s committed, commit p50 %.0f ms p90 %.0f ms p99 %.0f ms max %.0f ms, %.0f tx/block; refused %d, errors %d",
				nv, r.PeakTxPerSec, r.Gateways, r.Window, r.PeakP50Ms, r.PeakTxPerBlock, r.OfferedTxPerSec, r.TxPerSec, r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs, r.TxPerBlock, r.Refused, r.OtherErrors)
		})
	}
	if len(rep.Cases) == 0 {
		return
	}
	out, _ := json.MarshalIndent(rep, "", "  ")
	dir := filepath.Join("..", "results")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ledger.json"), append(out, '\n'), 0o644); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("ledger bench results (bench/results/ledger.json):\n%s\n", out)
}

func runCase(b *testing.B, validators int) caseResult {
	var (
		seconds  = envInt("LEDGER_BENCH_SECONDS", 15)
		gateways = envInt("LEDGER_BENCH_GATEWAYS", 64)
		window   = envInt("LEDGER_BENCH_WINDOW", 16)
		rate     = envInt("LEDGER_BENCH_RATE", 1500)
		maxTx    = int64(envInt("LEDGER_BENCH_MAX_TX", 100000))
	)
	cl := ledgertest.StartCluster(b, validators)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Duration(seconds)*time.Second+5*time.Minute)
	defer cancel()

	clients := make([]*anchor.Client, validators)
	for i := range clients {
		c, err := anchor.NewClient(cl.RPC(i), anchor.ClientOptions{CommitTimeout: 60 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
	}

	// Admit the gateways (admin txs, all in flight at once).
	gws := make([]*ledgertest.Gateway, gateways)
	pend := make([]*anchor.Pending, gateways)
	for i := range gws {
		gws[i] = ledgertest.NewGateway(b, fmt.Sprintf("site-%d", i))
		p, err := clients[0].Broadcast(ctx, gws[i].RegisterTx(b, cl.Admin))
		if err != nil {
			b.Fatalf("register gateway %d: %v", i, err)
		}
		pend[i] = p
	}
	var h0 int64
	for i, p := range pend {
		r, err := p.Wait(ctx)
		if err != nil {
			b.Fatalf("register gateway %d: %v", i, err)
		}
		h0 = max(h0, r.Height)
	}
	cl.WaitHeight(b, h0, 30*time.Second) // every node knows the gateways

	// Phase 1, capacity: each gateway keeps window headers in flight.
	peak := load(ctx, b, clients, gws, seconds, maxTx, func(int) loadShape { return loadShape{window: window} })
	// Phase 2, latency at the target rate: every gateway sends its next
	// header on a fixed schedule (rate/gateways per second each), whatever
	// the ledger does; latency counts from the scheduled send time.
	interval := time.Duration(float64(time.Second) * float64(gateways) / float64(rate))
	paced := load(ctx, b, clients, gws, seconds, maxTx, func(int) loadShape { return loadShape{window: 1 << 14, interval: interval} })

	r := caseResult{
		Validators: validators, Gateways: gateways, Window: window,
		PeakTxPerSec: peak.txPerSec, PeakP50Ms: peak.p50, PeakTxPerBlock: peak.txPerBlock,
		OfferedTxPerSec: float64(rate), Seconds: paced.seconds, Committed: paced.committed,
		TxPerSec: paced.txPerSec, P50Ms: paced.p50, P90Ms: paced.p90, P99Ms: paced.p99, MaxMs: paced.max,
		Blocks: paced.blocks, TxPerBlock: paced.txPerBlock,
		Refused: peak.refused + paced.refused, OtherErrors: peak.otherErr + paced.otherErr,
		TimeoutCommit: cl.TimeoutCommit,
	}
	if peak.committed == 0 || paced.committed == 0 {
		b.Fatalf("nothing committed (refused %d, errors %d)", r.Refused, r.OtherErrors)
	}
	return r
}

type loadShape struct {
	window   int           // headers in flight per gateway
	interval time.Duration // 0: send as soon as the window allows; else one header per interval
}

type loadResult struct {
	seconds, txPerSec, txPerBlock, p50, p90, p99, max float64
	committed, blocks, refused, otherErr              int64
}

// load runs gateways against the clients for seconds and measures commits.
func load(ctx context.Context, b *testing.B, clients []*anchor.Client, gws []*ledgertest.Gateway, seconds int, maxTx int64, shape func(int) loadShape) loadResult {
	var (
		mu        sync.Mutex
		lat       []time.Duration
		committed atomic.Int64
		sent      atomic.Int64
		refused   atomic.Int64
		otherErr  atomic.Int64
		wg        sync.WaitGroup
	)
	dur := time.Duration(seconds) * time.Second
	loadCtx, stopLoad := context.WithTimeout(ctx, dur)
	defer stopLoad()
	start := time.Now()
	end := start.Add(dur)
	startHeight, _ := clients[0].Height(ctx)
	count := func(err error) {
		var ref *anchor.RefusedError
		if errors.As(err, &ref) {
			refused.Add(1)
		} else {
			otherErr.Add(1)
		}
	}
	for gi, gw := range gws {
		c := clients[gi%len(clients)]
		sh := shape(gi)
		type inflight struct {
			p  *anchor.Pending
			at time.Time
		}
		q := make(chan inflight, sh.window)
		wg.Add(2)
		go func() { // sender
			defer wg.Done()
			defer close(q)
			// spread the gateways' schedules over one interval
			next := start.Add(time.Duration(gi) * sh.interval / time.Duration(len(gws)))
			for loadCtx.Err() == nil && sent.Add(1) <= maxTx {
				at := time.Now()
				if sh.interval > 0 {
					if d := time.Until(next); d > 0 {
						select {
						case <-time.After(d):
						case <-loadCtx.Done():
							return
						}
					}
					at = next
					next = next.Add(sh.interval)
				}
				tx, _ := gw.NextAnchor(b, 100)
				p, err := c.Broadcast(ctx, tx)
				if err != nil {
					count(err)
					return // this gateway's chain is broken
				}
				select {
				case q <- inflight{p, at}:
				case <-ctx.Done():
					return
				}
			}
		}()
		go func() { // waiter: receipts in order
			defer wg.Done()
			for f := range q {
				_, err := f.p.Wait(ctx)
				if err != nil {
					count(err)
					continue
				}
				now := time.Now()
				if now.Before(end) {
					committed.Add(1)
				}
				mu.Lock()
				lat = append(lat, now.Sub(f.at))
				mu.Unlock()
			}
		}()
	}
	<-loadCtx.Done()
	elapsed := time.Since(start)
	endHeight, _ := clients[0].Height(ctx)
	wg.Wait() // drain: every header sent is waited for

	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	r := loadResult{
		seconds: elapsed.Seconds(), committed: committed.Load(),
		txPerSec: float64(committed.Load()) / elapsed.Seconds(),
		p50:      pct(0.50), p90: pct(0.90), p99: pct(0.99), max: pct(1),
		blocks: endHeight - startHeight, refused: refused.Load(), otherErr: otherErr.Load(),
	}
	if r.blocks > 0 {
		r.txPerBlock = float64(r.committed) / float64(r.blocks)
	}
	return r
}
