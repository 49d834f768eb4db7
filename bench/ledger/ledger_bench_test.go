// Package ledgerbench measures the consortium ledger under AnchorBatch load:
// committed tx/s and commit latency (broadcast_tx_sync to the receipt seen
// by the client) with 1 and 4 validators, each an OS process on 127.0.0.1
// made by `ledger testnet` and run by `ledger start`. Run by `make bench`;
// results go to bench/results/ledger.json.
//
// LEDGER_BENCH_GATEWAYS gateways (64), admitted by the admin, each anchor
// their own chain of signed batch headers, spread over the validators' RPCs.
// Each case runs three phases of LEDGER_BENCH_SECONDS (15) each:
//
//   - capacity: every gateway keeps LEDGER_BENCH_WINDOW headers (16) in
//     flight; committed tx/s is the ledger's capacity;
//   - target: every gateway sends on a fixed schedule so that together they
//     offer LEDGER_BENCH_RATE tx/s (1500, the target), with at most
//     LEDGER_BENCH_PACED_WINDOW (16) headers in flight, as a gateway's
//     anchorer would (a slow ledger makes it send later, not pile up);
//     latency counts from the send. The window must hold rate × latency /
//     gateways headers (Little's law): at 1,500 tx/s, 400 ms and 64
//     gateways that is 9.4, so a window of 4 alone capped the phase at
//     256 in flight, 640 tx/s at 400 ms;
//   - light: the same at LEDGER_BENCH_LIGHT_RATE tx/s (100): the commit
//     latency of an unloaded ledger.
//
// LEDGER_BENCH_MAX_TX (100000) caps the txs of a phase.
//
// The gateways' headers are signed before a phase starts (its clock and CPU
// counters), as a gateway signs a batch header when it closes the batch,
// not when the ledger is ready for it: LEDGER_BENCH_PRESIGN_RATE (3000)
// tx/s for the capacity phase, the offered rate for the others (+10%). A
// gateway that runs out signs the rest during the phase (counted in
// signed_in_phase and in the load generator's CPU).
//
// LEDGER_BENCH_VALIDATOR_PROCS, if set, is the validators' GOMAXPROCS
// (an experiment: four idle validators used 0.16 instead of 0.29 cores
// with 1, but under load no difference showed).
//
// LEDGER_BENCH_OUT writes the results elsewhere than
// bench/results/ledger.json (experiments).
//
// LEDGER_BENCH_CONFIG overrides config.toml settings of every validator
// (experiments): "section.key=value;…", value in TOML ("200ms" quoted).
// LEDGER_BENCH_PPROF_DIR, if set, makes validator 0 serve pprof (CometBFT's
// rpc.pprof_laddr) and saves its CPU profile over the capacity phase (or
// LEDGER_BENCH_PPROF_PHASE: target, light) there
// (validator0-of-N.cpu.pprof); `go test -cpuprofile` profiles the load
// generator. LEDGER_BENCH_BLOCK_MAX_BYTES and LEDGER_BENCH_MEMPOOL_SIZE
// override those settings.
package ledgerbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// phaseResult is one load phase.
type phaseResult struct {
	OfferedTxPerSec float64 `json:"offered_tx_per_s,omitempty"` // 0: closed loop
	WindowPerGW     int     `json:"window_per_gateway,omitempty"`
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
	SignedInPhase   int64   `json:"signed_in_phase"` // headers not signed ahead (see presign)
	// CPU time used during the phase by all validator processes together
	// and by the load generator (this process: gateways and clients).
	NodesCPUSeconds float64 `json:"validators_cpu_s"`
	NodesCPUPerTxMs float64 `json:"validators_cpu_ms_per_tx"`
	GenCPUSeconds   float64 `json:"loadgen_cpu_s"`
}

// procCPU is the user+system CPU time of the processes pids, from
// /proc/PID/stat (clock ticks of 10 ms).
func procCPU(pids []int) float64 {
	var ticks float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// fields after the ")" of the command name: state is field 3,
		// utime 14 and stime 15 (1-based)
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 12 {
			u, _ := strconv.ParseFloat(f[11], 64)
			st, _ := strconv.ParseFloat(f[12], 64)
			ticks += u + st
		}
	}
	return ticks / 100
}

func selfCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

type caseResult struct {
	Validators    int    `json:"validators"`
	Gateways      int    `json:"gateways"`
	TimeoutCommit string `json:"timeout_commit"`
	// GOMAXPROCS of each validator process (LEDGER_BENCH_VALIDATOR_PROCS).
	ValidatorProcs int         `json:"validator_gomaxprocs"`
	Capacity       phaseResult `json:"capacity"`
	Target         phaseResult `json:"at_target_rate"`
	Light          phaseResult `json:"light_load"`
	TargetTxPerS   float64     `json:"target_tx_per_s,omitempty"`
	TargetP50Ms    float64     `json:"target_p50_ms,omitempty"`
	MeetsTargets   *bool       `json:"meets_targets,omitempty"`
}

type report struct {
	Date        string       `json:"date"`
	GoOS        string       `json:"goos"`
	GoArch      string       `json:"goarch"`
	CPUs        int          `json:"cpus"`
	LoadAvgFrom string       `json:"loadavg_at_start"`
	LoadAvgTo   string       `json:"loadavg_at_end"`
	Cases       []caseResult `json:"cases"`
	Note        string       `json:"note"`
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	return strings.Join(f[:min(len(f), 3)], " ")
}

func BenchmarkAnchorBatch(b *testing.B) {
	rep := report{
		Date: time.Now().UTC().Format(time.RFC3339), GoOS: runtime.GOOS, GoArch: runtime.GOARCH, CPUs: runtime.NumCPU(),
		LoadAvgFrom: loadAvg(),
		Note: "AnchorBatch txs from many gateways (each a chain of signed headers); commit latency from the " +
			"(scheduled) broadcast_tx_sync to the client's receipt; validators are OS processes on 127.0.0.1 " +
			"sharing this machine's CPUs with the load generator and with whatever else runs (see loadavg)",
	}
	for _, nv := range []int{1, 4} {
		b.Run(fmt.Sprintf("validators=%d", nv), func(b *testing.B) {
			r := runCase(b, nv)
			if nv == 4 {
				r.TargetTxPerS, r.TargetP50Ms = 1500, 400
				ok := r.Target.TxPerSec >= 0.98*r.TargetTxPerS && r.Target.P50Ms <= r.TargetP50Ms
				r.MeetsTargets = &ok
			}
			rep.Cases = append(rep.Cases, r)
			b.ReportMetric(r.Capacity.TxPerSec, "capacity_tx/s")
			b.ReportMetric(r.Target.TxPerSec, "tx/s@target")
			b.ReportMetric(r.Target.P50Ms, "p50_ms@target")
			b.ReportMetric(r.Target.P99Ms, "p99_ms@target")
			b.ReportMetric(r.Light.P50Ms, "p50_ms@light")
			for _, ph := range []struct {
				name string
				p    phaseResult
			}{{"capacity", r.Capacity}, {"target", r.Target}, {"light", r.Light}} {
				b.Logf("validators=%d %-8s offered %5.0f tx/s: committed %6.0f tx/s, commit p50 %5.0f ms p90 %5.0f p99 %5.0f max %5.0f, %4.0f tx/block, refused %d, errors %d; CPU validators %.1fs (%.2f ms/tx), loadgen %.1fs",
					nv, ph.name, ph.p.OfferedTxPerSec, ph.p.TxPerSec, ph.p.P50Ms, ph.p.P90Ms, ph.p.P99Ms, ph.p.MaxMs, ph.p.TxPerBlock, ph.p.Refused, ph.p.OtherErrors,
					ph.p.NodesCPUSeconds, ph.p.NodesCPUPerTxMs, ph.p.GenCPUSeconds)
			}
		})
	}
	if len(rep.Cases) == 0 {
		return
	}
	rep.LoadAvgTo = loadAvg()
	out, _ := json.MarshalIndent(rep, "", "  ")
	path := os.Getenv("LEDGER_BENCH_OUT")
	if path == "" {
		path = filepath.Join("..", "results", "ledger.json")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("ledger bench results (bench/results/ledger.json):\n%s\n", out)
}

func runCase(b *testing.B, validators int) caseResult {
	var (
		seconds     = envInt("LEDGER_BENCH_SECONDS", 15)
		gateways    = envInt("LEDGER_BENCH_GATEWAYS", 64)
		window      = envInt("LEDGER_BENCH_WINDOW", 16)
		rate        = envInt("LEDGER_BENCH_RATE", 1500)
		lightRate   = envInt("LEDGER_BENCH_LIGHT_RATE", 100)
		pacedWindow = envInt("LEDGER_BENCH_PACED_WINDOW", 16)
		maxTx       = int64(envInt("LEDGER_BENCH_MAX_TX", 100000))
	)
	var opts ledgertest.ClusterOptions
	mb, ms := envInt("LEDGER_BENCH_BLOCK_MAX_BYTES", 0), envInt("LEDGER_BENCH_MEMPOOL_SIZE", 0)
	profDir := os.Getenv("LEDGER_BENCH_PPROF_DIR")
	overrides, err := parseOverrides(os.Getenv("LEDGER_BENCH_CONFIG"))
	if err != nil {
		b.Fatal(err)
	}
	var pprofAddr string
	opts.Prepare = func(home string) error {
		for _, o := range overrides {
			if err := setConfig(home, o.section, o.key, o.value); err != nil {
				return err
			}
		}
		if mb > 0 {
			if err := setBlockMaxBytes(home, mb); err != nil {
				return err
			}
		}
		if ms > 0 {
			if err := setConfig(home, "mempool", "size", strconv.Itoa(ms)); err != nil {
				return err
			}
		}
		if profDir != "" && pprofAddr == "" { // the first validator serves pprof
			port, err := freePort()
			if err != nil {
				return err
			}
			pprofAddr = fmt.Sprintf("127.0.0.1:%d", port)
			return setConfig(home, "rpc", "pprof_laddr", strconv.Quote(pprofAddr))
		}
		return nil
	}
	// LEDGER_BENCH_VALIDATOR_PROCS: the validators' GOMAXPROCS (they
	// inherit this process's environment), as a container's CPU limit
	// would set it. 0: Go's default (all cores).
	procs := envInt("LEDGER_BENCH_VALIDATOR_PROCS", 0)
	if procs > 0 {
		if old, had := os.LookupEnv("GOMAXPROCS"); had {
			defer os.Setenv("GOMAXPROCS", old)
		} else {
			defer os.Unsetenv("GOMAXPROCS")
		}
		os.Setenv("GOMAXPROCS", strconv.Itoa(procs))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Duration(seconds)*time.Second+5*time.Minute)
	defer cancel()
	cl, clients, signers := startGateways(ctx, b, validators, gateways, opts)

	paced := func(rate int) loadShape {
		return loadShape{window: pacedWindow, interval: time.Duration(float64(time.Second) * float64(gateways) / float64(rate))}
	}
	r := caseResult{Validators: validators, Gateways: gateways, TimeoutCommit: cl.TimeoutCommit, ValidatorProcs: procs}
	// profile starts validator 0's CPU profile if phase is the one asked
	// for (LEDGER_BENCH_PPROF_PHASE, default capacity) and returns a wait.
	profile := func(phase string) func() {
		want := os.Getenv("LEDGER_BENCH_PPROF_PHASE")
		if pprofAddr == "" || phase != want && (want != "" || phase != "capacity") {
			return func() {}
		}
		done := make(chan error, 1)
		path := filepath.Join(profDir, fmt.Sprintf("validator0-of-%d.cpu.pprof", validators))
		go func() { done <- profileNode(ctx, pprofAddr, max(seconds-2, 1), path) }()
		return func() {
			if err := <-done; err != nil {
				b.Logf("validator profile: %v", err)
			}
		}
	}
	presignRate := envInt("LEDGER_BENCH_PRESIGN_RATE", 3000)
	presign(b, signers, presignRate, seconds, maxTx)
	wait := profile("capacity")
	r.Capacity = load(ctx, b, cl, clients, signers, seconds, maxTx, loadShape{window: window})
	wait()
	r.Capacity.WindowPerGW = window
	presign(b, signers, rate, seconds, maxTx)
	wait = profile("target")
	r.Target = load(ctx, b, cl, clients, signers, seconds, maxTx, paced(rate))
	wait()
	r.Target.OfferedTxPerSec = float64(rate)
	r.Target.WindowPerGW = pacedWindow
	presign(b, signers, lightRate, seconds, maxTx)
	wait = profile("light")
	r.Light = load(ctx, b, cl, clients, signers, seconds, maxTx, paced(lightRate))
	wait()
	r.Light.OfferedTxPerSec = float64(lightRate)
	r.Light.WindowPerGW = pacedWindow
	for _, p := range []phaseResult{r.Capacity, r.Target, r.Light} {
		if p.Committed == 0 {
			b.Fatalf("a phase committed nothing: %+v", p)
		}
	}
	return r
}

type loadShape struct {
	window   int           // headers in flight per gateway
	interval time.Duration // 0: send as soon as the window allows; else one header per interval
}

// load runs gateways against the clients for seconds and measures commits.
func load(ctx context.Context, b testing.TB, cl *ledgertest.Cluster, clients []*ledgerclient.Client, gws []*presigner, seconds int, maxTx int64, sh loadShape) phaseResult {
	pids := cl.PIDs()
	nodeCPU0, genCPU0 := procCPU(pids), selfCPU()
	var (
		mu        sync.Mutex
		lat       []time.Duration
		committed atomic.Int64
		sent      atomic.Int64
		refused   atomic.Int64
		otherErr  atomic.Int64
		signedNow atomic.Int64
		wg        sync.WaitGroup
	)
	dur := time.Duration(seconds) * time.Second
	loadCtx, stopLoad := context.WithTimeout(ctx, dur)
	defer stopLoad()
	start := time.Now()
	end := start.Add(dur)
	startHeight, _ := clients[0].Height(ctx)
	count := func(err error) {
		var ref *ledgerclient.RefusedError
		if errors.As(err, &ref) {
			refused.Add(1)
		} else {
			otherErr.Add(1)
		}
	}
	for gi, gw := range gws {
		c := clients[gi%len(clients)]
		type inflight struct {
			p  *ledgerclient.PendingTx
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
					at = time.Now()
					// no debt: a gateway held back by its window sends
					// its next header one interval after this one
					if next.Before(at.Add(-sh.interval)) {
						next = at.Add(-sh.interval)
					}
					next = next.Add(sh.interval)
				}
				tx, late := gw.next(b)
				if late {
					signedNow.Add(1)
				}
				p, err := c.Broadcast(ctx, tx)
				for err != nil && ctx.Err() == nil {
					var ref *ledgerclient.RefusedError
					if errors.As(err, &ref) {
						refused.Add(1)
						return // this gateway's chain is broken
					}
					// mempool full or RPC overloaded: the same bytes again
					// (the gateway's chain must not skip a header)
					otherErr.Add(1)
					time.Sleep(50 * time.Millisecond)
					p, err = c.Broadcast(ctx, tx)
				}
				if err != nil {
					return
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
	nodeCPU, genCPU := procCPU(pids)-nodeCPU0, selfCPU()-genCPU0
	wg.Wait() // drain: every header sent is waited for

	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	r := phaseResult{
		Seconds: elapsed.Seconds(), Committed: committed.Load(),
		TxPerSec: float64(committed.Load()) / elapsed.Seconds(),
		P50Ms:    pct(0.50), P90Ms: pct(0.90), P99Ms: pct(0.99), MaxMs: pct(1),
		Blocks: endHeight - startHeight, Refused: refused.Load(), OtherErrors: otherErr.Load(),
		SignedInPhase: signedNow.Load(),
	}
	if r.Blocks > 0 {
		r.TxPerBlock = float64(r.Committed) / float64(r.Blocks)
	}
	r.NodesCPUSeconds, r.GenCPUSeconds = nodeCPU, genCPU
	if r.Committed > 0 {
		r.NodesCPUPerTxMs = 1000 * nodeCPU / float64(r.Committed)
	}
	return r
}

// presigner holds a gateway's next headers, signed ahead in chain order.
type presigner struct {
	gw    *ledgertest.Gateway
	ready [][]byte
}

// next returns the gateway's next signed header; late reports that it had
// to be signed now.
func (p *presigner) next(b testing.TB) (tx []byte, late bool) {
	if len(p.ready) > 0 {
		tx, p.ready = p.ready[0], p.ready[1:]
		return tx, false
	}
	tx, _ = p.gw.NextAnchor(b, 100)
	return tx, true
}

// presign tops every gateway up to the headers it sends in seconds at rate
// tx/s (all gateways together) plus 10%, at most maxTx in all, signing on
// all CPUs before the phase starts.
func presign(b testing.TB, ps []*presigner, rate, seconds int, maxTx int64) {
	want := int64(float64(rate)*float64(seconds)*1.1)/int64(len(ps)) + 1
	want = min(want, maxTx/int64(len(ps))+1)
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(len(ps)); i = next.Add(1) - 1 {
				p := ps[i]
				for int64(len(p.ready)) < want {
					tx, _ := p.gw.NextAnchor(b, 100)
					p.ready = append(p.ready, tx)
				}
			}
		}()
	}
	wg.Wait()
}

type override struct{ section, key, value string }

// parseOverrides reads LEDGER_BENCH_CONFIG: "section.key=value;…".
func parseOverrides(s string) ([]override, error) {
	var out []override
	for _, f := range strings.Split(s, ";") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		k, v, ok := strings.Cut(f, "=")
		sec, key, ok2 := strings.Cut(strings.TrimSpace(k), ".")
		if !ok || !ok2 {
			return nil, fmt.Errorf("LEDGER_BENCH_CONFIG: %q: want section.key=value", f)
		}
		out = append(out, override{sec, key, strings.TrimSpace(v)})
	}
	return out, nil
}

// setBlockMaxBytes rewrites consensus_params.block.max_bytes in a home's
// genesis (an experiment knob: LEDGER_BENCH_BLOCK_MAX_BYTES).
func setBlockMaxBytes(home string, n int) error {
	path := filepath.Join(home, "config", "genesis.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var g map[string]any
	if err := json.Unmarshal(b, &g); err != nil {
		return err
	}
	cp, _ := g["consensus_params"].(map[string]any)
	blk, _ := cp["block"].(map[string]any)
	if blk == nil {
		return errors.New("genesis has no consensus_params.block")
	}
	blk["max_bytes"] = strconv.Itoa(n)
	if ev, _ := cp["evidence"].(map[string]any); ev != nil {
		ev["max_bytes"] = strconv.Itoa(n / 4) // must not exceed the block's
	}
	out, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o600)
}

// setConfig rewrites "key = ..." in a [section] of a home's config.toml (an
// experiment knob). value is TOML (quote strings).
func setConfig(home, section, key, value string) error {
	path := filepath.Join(home, "config", "config.toml")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	cur, done := "", false
	for i, l := range lines {
		if strings.HasPrefix(l, "[") {
			cur = strings.TrimSpace(l)
		}
		if cur == "["+section+"]" && strings.HasPrefix(l, key+" = ") {
			lines[i], done = key+" = "+value, true
		}
	}
	if !done {
		return fmt.Errorf("config.toml has no [%s] %s", section, key)
	}
	return os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600)
}

// freePort is a port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// profileNode saves a CPU profile of the node serving pprof at addr, taken
// over secs seconds, to path.
func profileNode(ctx context.Context, addr string, secs int, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof: %s", resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
