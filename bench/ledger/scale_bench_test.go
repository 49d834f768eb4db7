package ledgerbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/bench/plot"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// BenchmarkManyGateways (issue 18, item 4): gateways anchoring one batch a
// second each, as the gateway's anchorer does at batch_interval 1 s, into
// LEDGER_SCALE_VALIDATORS (4) validators (OS processes on 127.0.0.1, made
// as for BenchmarkAnchorBatch), for LEDGER_SCALE_SECONDS (120) per step of
// LEDGER_SCALE_GATEWAYS gateways ("10,50,100"). Per step: anchor latency
// (broadcast to the client's receipt) p50/p99, committed tx/s, and the
// growth of each validator's data directory (allocated blocks: block
// store, state, tx index and the application's database) over the window,
// extrapolated linearly to a gateway-day and to the ledger's year at that
// many gateways. Then the query that serves a gateway's device
// registrations (GET /gateway/{did}/devices, what the identity cache asks
// at start) with LEDGER_SCALE_DEVICES (10,000) devices registered through
// one gateway. Results: bench/results/ledger-scale.json and
// ledger-scale.png (or LEDGER_SCALE_OUT, a directory).
func BenchmarkManyGateways(b *testing.B) {
	var (
		seconds    = envInt("LEDGER_SCALE_SECONDS", 120)
		validators = envInt("LEDGER_SCALE_VALIDATORS", 4)
		ndev       = envInt("LEDGER_SCALE_DEVICES", 10_000)
		steps      []int
	)
	for _, f := range strings.Split(envStr("LEDGER_SCALE_GATEWAYS", "10,50,100"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			b.Fatalf("LEDGER_SCALE_GATEWAYS: %q", f)
		}
		steps = append(steps, n)
	}
	outDir := envStr("LEDGER_SCALE_OUT", filepath.Join("..", "results"))
	start := time.Now()
	rep := scaleReport{Date: start.UTC().Format(time.RFC3339), LoadAvgFrom: loadAvg(), Validators: validators, Seconds: seconds,
		Method: "each step offers one AnchorBatch tx per gateway per second for the window; growth is the increase of every " +
			"validator's data directory (allocated blocks) over the window, averaged over the validators, divided by the " +
			"gateways and scaled to 86,400 s (a gateway-day) and to 365 days at that many gateways (linear: blocks, tx index and " +
			"state grow per tx and per block; LevelDB compaction makes short windows noisy)"}

	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(len(steps)*seconds)*time.Second+20*time.Minute)
	defer cancel()
	cl, clients, signers := startGateways(ctx, b, validators, slices.Max(steps), ledgertest.ClusterOptions{})

	for _, g := range steps {
		presign(b, signers[:g], g, seconds, int64(g*seconds*2))
		before := dataBytes(cl.Homes)
		ph := load(ctx, b, cl, clients, signers[:g], seconds, int64(g*seconds*2), loadShape{window: 4, interval: time.Second})
		after := dataBytes(cl.Homes)
		st := scaleStep{Gateways: g, OfferedTxPerS: float64(g), Phase: ph,
			GrowthBytesPerNode: (after - before) / int64(validators)}
		perSec := float64(st.GrowthBytesPerNode) / ph.Seconds
		st.BytesPerGatewayDay = perSec / float64(g) * 86400
		st.LedgerBytesPerYear = perSec * 86400 * 365
		st.DataBytesPerNodeAfter = after / int64(validators)
		rep.Steps = append(rep.Steps, st)
		b.Logf("%d gateways: %.0f tx/s committed, anchor p50 %.0f ms p99 %.0f ms max %.0f; growth %d B/node in %.0f s: %.1f MB per gateway-day, %.1f GB per node-year at %d gateways (load %s)",
			g, ph.TxPerSec, ph.P50Ms, ph.P99Ms, ph.MaxMs, st.GrowthBytesPerNode, ph.Seconds, st.BytesPerGatewayDay/1e6, st.LedgerBytesPerYear/1e9, g, loadAvg())
	}

	// Growth rate r(G) = base + per×G over the steps (least squares): per
	// is what one more gateway adds, base what the chain costs with none
	// (blocks and their commits every second).
	if len(rep.Steps) >= 2 {
		var sx, sy, sxx, sxy float64
		for _, st := range rep.Steps {
			x, y := float64(st.Gateways), float64(st.GrowthBytesPerNode)/st.Phase.Seconds
			sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
		}
		n := float64(len(rep.Steps))
		per := (n*sxy - sx*sy) / (n*sxx - sx*sx)
		base := (sy - per*sx) / n
		rep.FitBytesPerGatewayDay, rep.FitBaseBytesPerDay = per*86400, base*86400
		rep.FitBytesPerYear100 = (base + 100*per) * 86400 * 365
		b.Logf("fit: %.1f MB per gateway-day, %.1f MB per day with no gateway; a node-year at 100 gateways: %.1f GB",
			rep.FitBytesPerGatewayDay/1e6, rep.FitBaseBytesPerDay/1e6, rep.FitBytesPerYear100/1e9)
	}

	// A gateway with ndev devices: register them (in flight 256 at a time),
	// then time the identity cache's query.
	gw := signers[0].gw
	t0 := time.Now()
	var inflight []*ledgerclient.PendingTx
	for i := 0; i < ndev; i++ {
		_, tx := gw.NewDevice(b, "env")
		p, err := clients[i%validators].Broadcast(ctx, tx)
		if err != nil {
			b.Fatalf("register device %d: %v", i, err)
		}
		inflight = append(inflight, p)
		if len(inflight) >= 256 || i == ndev-1 {
			for _, p := range inflight {
				if _, err := p.Wait(ctx); err != nil {
					b.Fatalf("register device: %v", err)
				}
			}
			inflight = inflight[:0]
		}
	}
	rep.DevicesRegistered = ndev
	rep.RegisterSeconds = time.Since(t0).Seconds()
	var qs []float64
	for range 5 {
		t1 := time.Now()
		devs, err := clients[0].GatewayDevices(ctx, gw.DID())
		if err != nil {
			b.Fatalf("gateway devices: %v", err)
		}
		qs = append(qs, float64(time.Since(t1).Microseconds())/1000)
		if len(devs) != ndev {
			b.Fatalf("gateway devices: %d, want %d", len(devs), ndev)
		}
		if rep.QueryBytes == 0 {
			raw, _ := json.Marshal(devs)
			rep.QueryBytes = len(raw)
		}
	}
	slices.Sort(qs)
	rep.QueryMsMedian, rep.QueryMsMax = qs[len(qs)/2], qs[len(qs)-1]
	b.Logf("%d devices registered in %.1f s; the gateway's device query: median %.0f ms, max %.0f ms, %d bytes of JSON",
		ndev, rep.RegisterSeconds, rep.QueryMsMedian, rep.QueryMsMax, rep.QueryBytes)

	rep.LoadAvgTo = loadAvg()
	rep.TotalSeconds = time.Since(start).Seconds()
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		b.Fatal(err)
	}
	out, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(outDir, "ledger-scale.json"), append(out, '\n'), 0o644); err != nil {
		b.Fatal(err)
	}
	var x, p50, p99 []float64
	for _, s := range rep.Steps {
		x = append(x, float64(s.Gateways))
		p50 = append(p50, s.Phase.P50Ms)
		p99 = append(p99, s.Phase.P99Ms)
	}
	if err := plot.Lines(filepath.Join(outDir, "ledger-scale.png"), fmt.Sprintf("Anchor latency, %d validators, 1 batch/s per gateway", validators),
		"gateways", "ms (broadcast to commit receipt)", plot.Series{Name: "p50", X: x, Y: p50}, plot.Series{Name: "p99", X: x, Y: p99}); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("ledger scale results (%s):\n%s\n", filepath.Join(outDir, "ledger-scale.json"), out)
}

type scaleStep struct {
	Gateways              int         `json:"gateways"`
	OfferedTxPerS         float64     `json:"offered_tx_per_s"`
	Phase                 phaseResult `json:"anchoring"`
	GrowthBytesPerNode    int64       `json:"growth_bytes_per_node"`
	DataBytesPerNodeAfter int64       `json:"data_bytes_per_node_after"`
	BytesPerGatewayDay    float64     `json:"bytes_per_gateway_day"`
	LedgerBytesPerYear    float64     `json:"ledger_bytes_per_node_year"`
}

type scaleReport struct {
	Date        string      `json:"date"`
	LoadAvgFrom string      `json:"loadavg_from"`
	LoadAvgTo   string      `json:"loadavg_to"`
	Validators  int         `json:"validators"`
	Seconds     int         `json:"seconds_per_step"`
	Method      string      `json:"method"`
	Steps       []scaleStep `json:"steps"`
	// Least-squares fit of the steps' growth rates: bytes per node.
	FitBytesPerGatewayDay float64 `json:"fit_bytes_per_gateway_day,omitempty"`
	FitBaseBytesPerDay    float64 `json:"fit_base_bytes_per_day,omitempty"`
	FitBytesPerYear100    float64 `json:"fit_bytes_per_node_year_at_100_gateways,omitempty"`
	DevicesRegistered     int     `json:"devices_registered"`
	RegisterSeconds       float64 `json:"devices_register_s"`
	QueryMsMedian         float64 `json:"gateway_devices_query_ms_median"`
	QueryMsMax            float64 `json:"gateway_devices_query_ms_max"`
	QueryBytes            int     `json:"gateway_devices_query_json_bytes"`
	TotalSeconds          float64 `json:"total_s"`
}

func envStr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// dataBytes is the space allocated to the data directories of homes.
func dataBytes(homes []string) int64 {
	var n int64
	for _, h := range homes {
		_ = filepath.WalkDir(filepath.Join(h, "data"), func(_ string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			if fi, err := d.Info(); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					n += st.Blocks * 512
				}
			}
			return nil
		})
	}
	return n
}

// startGateways starts validators OS-process validators and admits
// gateways gateways (admin txs, all in flight at once), each with a
// presigner of its anchor headers. The clients, one per validator, share
// client 0's block follower, as a gateway's do; they are closed at the end
// of b.
func startGateways(ctx context.Context, b *testing.B, validators, gateways int, opts ledgertest.ClusterOptions) (*ledgertest.Cluster, []*ledgerclient.Client, []*presigner) {
	b.Helper()
	cl := ledgertest.StartClusterWith(b, validators, opts)
	clients := make([]*ledgerclient.Client, validators)
	for i := range clients {
		o := ledgerclient.ClientOptions{CommitTimeout: 60 * time.Second}
		if i > 0 {
			o.Follower = clients[0]
		}
		c, err := ledgerclient.NewClient(cl.RPC(i), o)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		clients[i] = c
	}
	gws := make([]*ledgertest.Gateway, gateways)
	pend := make([]*ledgerclient.PendingTx, gateways)
	for i := range gws {
		gws[i] = ledgertest.NewGateway(b, fmt.Sprintf("site-%d", i))
		p, err := clients[0].Broadcast(ctx, gws[i].RegisterTx(b, cl.Committee))
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
	cl.WaitHeight(b, h0, 30*time.Second)
	signers := make([]*presigner, gateways)
	for i, gw := range gws {
		signers[i] = &presigner{gw: gw}
	}
	return cl, clients, signers
}
