package ledgerbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/bench/plot"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// BenchmarkLedgerGrowth (issue 18, item 4: how the ledger's own store grows
// over a year, extrapolated from a measured hour): LEDGER_GROWTH_GATEWAYS
// (100) gateways anchor one batch a second each, as the anchorer does at
// batch_interval 1 s, into LEDGER_SCALE_VALIDATORS (4) validators for
// LEDGER_GROWTH_SECONDS (3,600). Every LEDGER_GROWTH_SAMPLE_SECONDS (60) it
// records the space allocated to each validator's data directory, part by
// part (blockstore.db, state.db, tx_index.db, the application's database,
// cs.wal, evidence.db). The year is extrapolated per part from its growth
// over the second half of the hour (after the first compactions), so that a
// part that stops growing (the consensus WAL is a rotating group of bounded
// size, 1 GiB) is counted at its bound. Results: bench/results/ledger-growth.json and
// ledger-growth.png (or LEDGER_SCALE_OUT).
func BenchmarkLedgerGrowth(b *testing.B) {
	var (
		gateways   = envInt("LEDGER_GROWTH_GATEWAYS", 100)
		seconds    = envInt("LEDGER_GROWTH_SECONDS", 3600)
		every      = envInt("LEDGER_GROWTH_SAMPLE_SECONDS", 60)
		validators = envInt("LEDGER_SCALE_VALIDATORS", 4)
		outDir     = envStr("LEDGER_SCALE_OUT", filepath.Join("..", "results"))
	)
	if seconds < 2*every {
		b.Fatalf("LEDGER_GROWTH_SECONDS (%d) must be at least two samples (LEDGER_GROWTH_SAMPLE_SECONDS %d)", seconds, every)
	}
	start := time.Now()
	rep := growthReport{Date: start.UTC().Format(time.RFC3339), LoadAvgFrom: loadAvg(), Validators: validators,
		Gateways: gateways, Seconds: seconds, SampleSeconds: every,
		Method: "one AnchorBatch tx per gateway per second for the window; every sample is the space allocated (blocks) to " +
			"each validator's data directory, per part, averaged over the validators; a part's rate is the least-squares slope " +
			"of its samples over the second half of the window, extrapolated linearly to a day and a year at this many gateways; " +
			"the consensus WAL (cs.wal) is a rotating group that CometBFT caps at 1 GiB, so it is counted at most at that bound"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second+20*time.Minute)
	defer cancel()
	cl, clients, signers := startGateways(ctx, b, validators, gateways, ledgertest.ClusterOptions{})
	// A few minutes signed ahead; the rest is signed as it is sent (one SM2
	// signature per gateway-second, counted as signed_in_phase).
	presign(b, signers, gateways, min(seconds, 300), int64(gateways*seconds*2))

	var (
		mu      sync.Mutex
		samples []growthSample
	)
	sample := func(at time.Duration) {
		s := growthSample{Seconds: at.Seconds(), Parts: map[string]int64{}}
		for _, h := range cl.Homes {
			for part, n := range partBytes(filepath.Join(h, "data")) {
				s.Parts[part] += n / int64(validators)
			}
		}
		for _, n := range s.Parts {
			s.Total += n
		}
		s.Height, _ = clients[0].Height(ctx)
		mu.Lock()
		samples = append(samples, s)
		mu.Unlock()
		b.Logf("%5.0f s: %.1f MB a validator, height %d (load %s)", s.Seconds, float64(s.Total)/1e6, s.Height, loadAvg())
	}
	loadStart := time.Now()
	sample(0)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(time.Duration(every) * time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				sample(time.Since(loadStart))
			case <-stop:
				return
			}
		}
	}()
	rep.Phase = load(ctx, b, cl, clients, signers, seconds, int64(gateways*seconds*2), loadShape{window: 4, interval: time.Second})
	close(stop)
	<-sampled
	sample(time.Since(loadStart))
	rep.Samples = samples

	// Per part: the slope of its samples over the second half.
	half := samples[len(samples)/2:]
	rep.PerPart = map[string]partGrowth{}
	parts := map[string]bool{}
	for _, s := range samples {
		for p := range s.Parts {
			parts[p] = true
		}
	}
	for p := range parts {
		var xs, ys []float64
		for _, s := range half {
			xs, ys = append(xs, s.Seconds), append(ys, float64(s.Parts[p]))
		}
		rate := slope(xs, ys)
		g := partGrowth{BytesPerSecond: rate, BytesPerDay: rate * 86400, BytesPerYear: rate * 86400 * 365,
			BytesAtEnd: samples[len(samples)-1].Parts[p]}
		g.BytesAfterYear = g.BytesAtEnd + int64(max(rate, 0)*86400*365)
		if bound, ok := boundedParts[p]; ok {
			g.BoundBytes = bound
			g.BytesAfterYear = min(g.BytesAfterYear, max(bound, g.BytesAtEnd))
		} else if rate > 0 {
			rep.BytesPerDay += g.BytesPerDay
			rep.BytesPerYear += g.BytesPerYear
		}
		rep.BytesAfterYear += g.BytesAfterYear
		rep.PerPart[p] = g
	}
	rep.BytesPerGatewayDay = rep.BytesPerDay / float64(gateways)
	last := samples[len(samples)-1]
	if last.Height > samples[0].Height && rep.Phase.Committed > 0 {
		rep.BytesPerBlock = float64(last.Total-samples[0].Total) / float64(last.Height-samples[0].Height)
		rep.BytesPerTx = float64(last.Total-samples[0].Total) / float64(rep.Phase.Committed)
	}
	names := slices.Sorted(maps.Keys(parts))
	for _, p := range names {
		g := rep.PerPart[p]
		b.Logf("%-14s %8.1f MB at the end, %8.1f MB a day, %8.1f GB after a year (bound %d MB)", p, float64(g.BytesAtEnd)/1e6, g.BytesPerDay/1e6, float64(g.BytesAfterYear)/1e9, g.BoundBytes>>20)
	}
	b.Logf("%d gateways, %.0f tx/s committed, anchor p50 %.0f ms p99 %.0f ms: a validator's data grows %.2f GB a day once its WAL is at its bound, %.1f MB per gateway-day, %.0f GB after a year (%.0f B per tx, %.0f B per block)",
		gateways, rep.Phase.TxPerSec, rep.Phase.P50Ms, rep.Phase.P99Ms, rep.BytesPerDay/1e9, rep.BytesPerGatewayDay/1e6, float64(rep.BytesAfterYear)/1e9, rep.BytesPerTx, rep.BytesPerBlock)

	rep.LoadAvgTo = loadAvg()
	rep.TotalSeconds = time.Since(start).Seconds()
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		b.Fatal(err)
	}
	out, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(outDir, "ledger-growth.json"), append(out, '\n'), 0o644); err != nil {
		b.Fatal(err)
	}
	var series []plot.Series
	for _, p := range append([]string{"total"}, names...) {
		s := plot.Series{Name: p}
		for _, smp := range samples {
			n := smp.Total
			if p != "total" {
				n = smp.Parts[p]
			}
			s.X, s.Y = append(s.X, smp.Seconds/60), append(s.Y, float64(n)/1e6)
		}
		if p == "total" || s.Y[len(s.Y)-1] >= 1 {
			series = append(series, s)
		}
	}
	if err := plot.Lines(filepath.Join(outDir, "ledger-growth.png"),
		fmt.Sprintf("A validator's data directory, %d gateways anchoring 1 batch/s", gateways),
		"minutes", "MB (allocated)", series...); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("ledger growth results (%s):\n%s\n", filepath.Join(outDir, "ledger-growth.json"), out)
}

type growthSample struct {
	Seconds float64          `json:"s"`
	Height  int64            `json:"height"`
	Total   int64            `json:"total_bytes"`
	Parts   map[string]int64 `json:"parts"`
}

type partGrowth struct {
	BytesAtEnd     int64   `json:"bytes_at_end"`
	BytesPerSecond float64 `json:"bytes_per_s"`
	BytesPerDay    float64 `json:"bytes_per_day"`
	BytesPerYear   float64 `json:"bytes_per_year"` // the rate over a year, bound or not
	// BoundBytes: where the part stops growing (0: it does not);
	// BytesAfterYear: its size a year after the window, at most the bound.
	BoundBytes     int64 `json:"bound_bytes,omitempty"`
	BytesAfterYear int64 `json:"bytes_after_year"`
}

// boundedParts are the parts of a validator's data directory that stop
// growing: CometBFT keeps its consensus WAL (cs.wal) as a rotating group of
// 10 MB files, 1 GiB in all (libs/autofile's defaults), deleting the
// oldest.
var boundedParts = map[string]int64{"cs.wal": 1 << 30}

type growthReport struct {
	Date          string                `json:"date"`
	LoadAvgFrom   string                `json:"loadavg_from"`
	LoadAvgTo     string                `json:"loadavg_to"`
	Validators    int                   `json:"validators"`
	Gateways      int                   `json:"gateways"`
	Seconds       int                   `json:"seconds"`
	SampleSeconds int                   `json:"sample_seconds"`
	Method        string                `json:"method"`
	Phase         phaseResult           `json:"anchoring"`
	Samples       []growthSample        `json:"samples"`
	PerPart       map[string]partGrowth `json:"per_part"`
	// BytesPerDay, BytesPerYear: the growth of the parts without a bound;
	// BytesAfterYear: the whole directory a year after the window.
	BytesPerDay        float64 `json:"bytes_per_node_day"`
	BytesPerYear       float64 `json:"bytes_per_node_year"`
	BytesAfterYear     int64   `json:"bytes_per_node_after_year"`
	BytesPerGatewayDay float64 `json:"bytes_per_gateway_day"`
	BytesPerTx         float64 `json:"bytes_per_tx"`
	BytesPerBlock      float64 `json:"bytes_per_block"`
	TotalSeconds       float64 `json:"total_s"`
}

// partBytes is the space allocated under dir, by its first path element
// (a CometBFT data directory: blockstore.db, state.db, tx_index.db, cs.wal,
// evidence.db, the application's database; loose files count as "files").
func partBytes(dir string) map[string]int64 {
	out := map[string]int64{}
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		part, _, nested := strings.Cut(filepath.ToSlash(rel), "/")
		if !nested {
			part = "files"
		}
		out[part] += st.Blocks * 512
		return nil
	})
	return out
}

// slope is the least-squares slope of ys over xs (0 under two points).
func slope(xs, ys []float64) float64 {
	if len(xs) < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx, sy, sxx, sxy = sx+xs[i], sy+ys[i], sxx+xs[i]*xs[i], sxy+xs[i]*ys[i]
	}
	n := float64(len(xs))
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}
