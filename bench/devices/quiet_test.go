package devices

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/bench/internal/benchkit"
	"github.com/edgeanchor/edgeanchor/bench/plot"
	"github.com/edgeanchor/edgeanchor/device"
)

// Targets of issue 18, item 1.
const (
	targetP99ms = 50
	targetRSSMB = 400
	// defaultMemoryLimitMB is the gateway's memory_limit_mb in these runs
	// (memLimitEnv overrides it): the target RSS (the default, 160, is
	// sized for 1,000 devices). Where the connections' live memory comes
	// near it the collector runs all the time and latency shows it.
	defaultMemoryLimitMB = 400
	// connectInFlight paces a fleet's first connect: the load generator
	// keeps this many CONNECTs outstanding (a listen backlog overrun
	// would otherwise measure the kernel's SYN retry timer).
	connectInFlight = 256
)

// Switches (environment).
const (
	quickEnv  = "EDGEANCHOR_BENCH_QUICK"        // small scale, results not written to bench/results
	pointsEnv = "EDGEANCHOR_BENCH_QUIET_POINTS" // e.g. "1000,10000": device counts of the quiet run
	// memLimitEnv: the gateway's memory_limit_mb in both benchmarks
	// (default defaultMemoryLimitMB; 0 for none).
	memLimitEnv = "EDGEANCHOR_BENCH_MEMORY_LIMIT_MB"
)

// memoryLimitMB is the gateway's memory_limit_mb of this run.
func memoryLimitMB(tb testing.TB) int { return memoryLimitFor(tb, 0) }

// memoryLimitFor is the gateway's memory_limit_mb with n devices: the
// target's 400 MB up to the target's 10,000 devices, and above that what
// docs/operations.md tells an operator to configure (100 MB + 35 MB per
// 1,000 devices: under 400 MB the live stacks and heap of 19,000 devices
// alone exceed the limit and the collector never stops). memLimitEnv sets
// one limit for every point.
func memoryLimitFor(tb testing.TB, n int) int {
	v := os.Getenv(memLimitEnv)
	if v == "" {
		if n > 10_000 {
			return 100 + 35*n/1000
		}
		return defaultMemoryLimitMB
	}
	n, err := strconv.Atoi(v)
	if err != nil || n != 0 && (n < 64 || n > 1<<20) {
		tb.Fatalf("%s: %q is not 0 or a size in MB within [64, 1048576]", memLimitEnv, v)
	}
	return n
}

type quietScale struct {
	points   []int
	window   time.Duration // steady window, after every device connected
	interval time.Duration // one reading per device per interval
}

func quietConfig(tb testing.TB) quietScale {
	sc := quietScale{points: []int{1000, 5000, 10000, 20000}, window: 60 * time.Second, interval: 10 * time.Second}
	if os.Getenv(quickEnv) != "" {
		sc = quietScale{points: []int{200, 500, 1000}, window: 20 * time.Second, interval: 10 * time.Second}
	}
	if v := os.Getenv(pointsEnv); v != "" {
		sc.points = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > 60000 {
				tb.Fatalf("%s: %q is not a device count within [1, 60000]", pointsEnv, f)
			}
			sc.points = append(sc.points, n)
		}
	}
	return sc
}

// resultsDir is bench/results, or a temporary directory for a quick run.
func resultsDir(tb testing.TB) string {
	dir := filepath.Join("..", "results")
	if os.Getenv(quickEnv) != "" {
		dir = filepath.Join(os.TempDir(), "edgeanchor-bench-quick")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// quietPoint is one device count of the quiet run.
type quietPoint struct {
	Devices int `json:"devices"`
	// MemoryLimitMB is the gateway's memory_limit_mb at this point.
	MemoryLimitMB int `json:"gateway_memory_limit_mb"`
	// ConnectSeconds: from the first CONNECT to the last CONNACK, with
	// connectInFlight CONNECTs outstanding (each verified by the gateway).
	ConnectSeconds float64 `json:"connect_seconds"`
	ConnectsPerS   float64 `json:"connects_per_s"`
	SteadySeconds  float64 `json:"steady_seconds"`
	Due            int     `json:"readings_due"`
	Acked          int     `json:"acked"`
	Reconnects     int     `json:"reconnects"`
	MsgsPerS       float64 `json:"acked_msgs_per_s"`
	// Publish → PUBACK of the steady window's readings, as the devices
	// measured it.
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
	// The gateway's CPU seconds per wall second over the steady window,
	// and per acknowledged reading.
	GatewayCPUCores float64 `json:"gateway_cpu_cores"`
	CPUPerMsgUs     float64 `json:"gateway_cpu_us_per_msg"`
	// The gateway's memory: before any device, with every device
	// connected before the first reading, at the end of the window, and
	// the highest sample in the window.
	Idle           benchkit.ProcStats `json:"idle"`
	Connected      benchkit.ProcStats `json:"connected"`
	SteadyEnd      benchkit.ProcStats `json:"steady_end"`
	SteadyMaxRSSMB float64            `json:"steady_max_rss_mb"`
	// Per connected device, from the idle and connected figures: anonymous
	// RSS, and the Go runtime's heap in use, stacks and goroutines.
	AnonKBPerDevice     float64 `json:"anon_kb_per_device"`
	HeapKBPerDevice     float64 `json:"go_heap_kb_per_device"`
	StackKBPerDevice    float64 `json:"go_stack_kb_per_device"`
	GoroutinesPerDevice float64 `json:"goroutines_per_device"`
	// The Go runtime's memory at the end of the window (MB).
	GoEnd        goMem    `json:"go_end"`
	LoadGenCores float64  `json:"loadgen_cpu_cores"`
	LoadAvg      []string `json:"loadavg_before_after"`
}

type quietResults struct {
	When     string `json:"when"`
	CPUs     int    `json:"cpus"`
	Go       string `json:"go"`
	Registry string `json:"registry"`
	Interval string `json:"reading_interval"`
	// MemoryLimitMB: up to 10,000 devices (each point has its own).
	MemoryLimitMB int `json:"gateway_memory_limit_mb"`
	// FDLimit is RLIMIT_NOFILE of the gateway and of the load generator:
	// it bounds the devices one process can hold (capDevices).
	FDLimit uint64       `json:"rlimit_nofile"`
	Points  []quietPoint `json:"points"`
	// Slopes by least squares over the points: MB of RSS per 1,000
	// connected devices (steady end), all and anonymous.
	RSSMBPer1000  float64        `json:"rss_mb_per_1000_devices"`
	AnonMBPer1000 float64        `json:"anon_mb_per_1000_devices"`
	Targets       map[string]any `json:"targets"`
}

// BenchmarkQuietDevices is issue 18's item 1: many quiet devices on one
// gateway (run with -benchtime 1x; make bench). It writes
// bench/results/devices.json and the devices-*.png plots.
func BenchmarkQuietDevices(b *testing.B) {
	for range b.N {
		benchQuiet(b)
	}
}

func benchQuiet(b *testing.B) {
	sc := quietConfig(b)
	fdLimit := raiseNoFile(b, uint64(slices.Max(sc.points)+8192))
	for i, n := range sc.points {
		sc.points[i] = capDevices(b, n, fdLimit)
	}
	sc.points = slices.Compact(sc.points)
	maxN := slices.Max(sc.points)
	t0 := time.Now()
	signers := newKeys(b, maxN)
	readings := int(sc.window/sc.interval) + 1
	devs := newDevices(b, signers, readings, sc.interval)
	logf(b, "%d device keys and %d signed readings in %s (before any clock starts)", maxN, maxN*readings, time.Since(t0).Round(time.Millisecond))

	res := quietResults{
		When: time.Now().UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), Go: runtime.Version(),
		Registry:      "static (devices in the broker's StaticRegistry, not enrolled through the ledger); every CONNECT verifies the device's SM2 connect credential",
		Interval:      sc.interval.String(),
		MemoryLimitMB: memoryLimitMB(b),
		FDLimit:       fdLimit,
	}
	for _, n := range sc.points {
		res.Points = append(res.Points, quietRun(b, devs[:n], sc))
	}
	var xs, rss, anon []float64
	for _, p := range res.Points {
		xs = append(xs, float64(p.Devices))
		rss = append(rss, p.SteadyEnd.RSSMB)
		anon = append(anon, p.SteadyEnd.RSSAnonMB)
	}
	res.RSSMBPer1000 = slope(xs, rss) * 1000
	res.AnonMBPer1000 = slope(xs, anon) * 1000
	res.Targets = map[string]any{"p99_ms": targetP99ms, "rss_mb": targetRSSMB}
	for _, p := range res.Points {
		if p.Devices >= 10000 {
			k := strconv.Itoa(p.Devices)
			res.Targets["p99_met_"+k] = p.P99ms <= targetP99ms && p.Acked == p.Due
			res.Targets["rss_met_"+k] = p.SteadyMaxRSSMB <= targetRSSMB && p.SteadyEnd.PeakRSSMB <= targetRSSMB
		}
	}
	logf(b, "slope: %.1f MB RSS (%.1f MB anonymous) per 1,000 connected devices", res.RSSMBPer1000, res.AnonMBPer1000)

	dir := resultsDir(b)
	writeJSON(b, filepath.Join(dir, "devices.json"), res)
	col := func(f func(quietPoint) float64) []float64 {
		out := make([]float64, len(res.Points))
		for i, p := range res.Points {
			out[i] = f(p)
		}
		return out
	}
	plots := []error{
		plot.Lines(filepath.Join(dir, "devices-memory.png"), "Gateway memory with quiet devices connected", "connected devices", "MB",
			plot.Series{Name: "RSS", X: xs, Y: rss},
			plot.Series{Name: "anonymous (heap, stacks)", X: xs, Y: anon},
			plot.Series{Name: "file-backed (Badger)", X: xs, Y: col(func(p quietPoint) float64 { return p.SteadyEnd.RSSFileMB })}),
		plot.Lines(filepath.Join(dir, "devices-cpu.png"), "Gateway CPU, one signed reading per device every "+sc.interval.String(), "connected devices", "CPU cores",
			plot.Series{Name: "gateway", X: xs, Y: col(func(p quietPoint) float64 { return p.GatewayCPUCores })}),
		plot.Lines(filepath.Join(dir, "devices-latency.png"), "Publish to PUBACK with quiet devices connected", "connected devices", "ms",
			plot.Series{Name: "p50", X: xs, Y: col(func(p quietPoint) float64 { return p.P50ms })},
			plot.Series{Name: "p99", X: xs, Y: col(func(p quietPoint) float64 { return p.P99ms })}),
	}
	for _, err := range plots {
		if err != nil {
			b.Fatal(err)
		}
	}
	logf(b, "wrote %s/devices.json and devices-{memory,cpu,latency}.png", dir)
}

// quietRun connects devs to a fresh gateway, waits for all of them, and
// runs one steady window of quiet readings.
func quietRun(b *testing.B, devs []*simDevice, sc quietScale) quietPoint {
	b.Helper()
	n := len(devs)
	p := quietPoint{Devices: n, MemoryLimitMB: memoryLimitFor(b, n), LoadAvg: []string{benchkit.Loadavg()}}
	for _, d := range devs {
		d.acked.Store(0)
		d.acks, d.attempts = nil, nil
	}
	g := benchkit.StartChild(b, "gateway",
		benchkit.DevicesEnv+"="+benchkit.WriteDevices(b, signersOf(devs)),
		benchkit.DataEnv+"="+b.TempDir(),
		benchkit.ConfigEnv+"="+fmt.Sprintf("limits: {max_connections: %d}\nmemory_limit_mb: %d\n", n+1024, p.MemoryLimitMB))
	defer g.Stop()
	mqttAddr, httpAddr := g.Addrs[0], g.Addrs[1]
	p.Idle = g.Stats(b)
	mIdle, err := scrapeAll(httpAddr)
	if err != nil {
		b.Fatalf("metrics: %v", err)
	}

	// No reading before every device is connected: the schedule starts
	// far ahead and is set once they are.
	sch, took, stopFleet := connectFleet(b, devs, mqttAddr, sc.interval)
	defer stopFleet()
	p.ConnectSeconds = took.Seconds()
	p.ConnectsPerS = float64(n) / p.ConnectSeconds
	time.Sleep(2 * time.Second) // let the connect burst's garbage be collected
	p.Connected = g.Stats(b)
	mConn, err := scrapeAll(httpAddr)
	if err != nil {
		b.Fatalf("metrics: %v", err)
	}
	p.AnonKBPerDevice = (p.Connected.RSSAnonMB - p.Idle.RSSAnonMB) * 1024 / float64(n)
	perDev := func(name string) float64 { return (mConn[name] - mIdle[name]) / float64(n) }
	p.HeapKBPerDevice = perDev("go_memstats_heap_inuse_bytes") / 1024
	p.StackKBPerDevice = perDev("go_memstats_stack_inuse_bytes") / 1024
	p.GoroutinesPerDevice = perDev("go_goroutines")
	logf(b, "%5d devices connected in %.1f s (%.0f CONNECTs/s); gateway RSS idle %.0f MB → connected %.0f MB (anon %.0f, files %.0f): %.1f kB anonymous, %.1f kB Go heap, %.1f kB stack, %.1f goroutines per device",
		n, p.ConnectSeconds, p.ConnectsPerS, p.Idle.RSSMB, p.Connected.RSSMB, p.Connected.RSSAnonMB, p.Connected.RSSFileMB,
		p.AnonKBPerDevice, p.HeapKBPerDevice, p.StackKBPerDevice, p.GoroutinesPerDevice)

	// The steady window: reading k of each device at t0 + its phase + k*interval.
	t0 := time.Now().Add(time.Second)
	steady := &schedule{t0: t0, interval: sc.interval, stop: t0.Add(sc.window)}
	sch.Store(steady)
	time.Sleep(time.Until(t0))
	cpu0, gen0 := g.Stats(b), mustProc(b, os.Getpid())
	for time.Now().Before(steady.stop) {
		time.Sleep(time.Second)
		p.SteadyMaxRSSMB = max(p.SteadyMaxRSSMB, g.Stats(b).RSSMB)
	}
	cpu1, gen1 := g.Stats(b), mustProc(b, os.Getpid())
	p.SteadySeconds = time.Since(t0).Seconds()
	for _, d := range devs {
		p.Due += steady.taken(d.offset, steady.stop, len(d.frames))
	}
	acked := func() int {
		a := 0
		for _, d := range devs {
			a += int(d.acked.Load())
		}
		return a
	}
	waitAll(ackTimeout+5*time.Second, func() bool { return acked() >= p.Due })
	p.SteadyEnd = g.Stats(b)
	if m, err := scrapeAll(httpAddr); err != nil {
		logf(b, "%d devices: the gateway's /metrics at the end: %v", n, err)
	} else {
		p.GoEnd = goMemOf(m)
	}
	stopFleet()
	var lats []time.Duration
	for _, d := range devs {
		for _, a := range d.acks {
			lats = append(lats, a.lat)
		}
		p.Reconnects += max(0, len(d.attempts)-1)
	}
	slices.Sort(lats)
	p.Acked = len(lats)
	p.MsgsPerS = float64(p.Acked) / p.SteadySeconds
	p.P50ms, p.P99ms, p.MaxMs = pct(lats, 0.5), pct(lats, 0.99), pct(lats, 1)
	p.GatewayCPUCores = (cpu1.CPUSeconds - cpu0.CPUSeconds) / p.SteadySeconds
	p.LoadGenCores = (gen1.CPUSeconds - gen0.CPUSeconds) / p.SteadySeconds
	if p.Acked > 0 {
		p.CPUPerMsgUs = (cpu1.CPUSeconds - cpu0.CPUSeconds) / float64(p.Acked) * 1e6
	}
	p.LoadAvg = append(p.LoadAvg, benchkit.Loadavg())
	logf(b, "%5d devices: Go heap in use %.0f MB, idle not released %.0f MB, stacks %.0f MB, next GC at %.0f MB, %.0f goroutines, %.0f GC cycles",
		n, p.GoEnd.HeapInuseMB, p.GoEnd.HeapIdleMB, p.GoEnd.StackMB, p.GoEnd.NextGCMB, p.GoEnd.Goroutines, p.GoEnd.GCCycles)
	logf(b, "%5d devices: %d of %d readings acknowledged in the %.0f s window (%.0f/s), publish→PUBACK p50 %.1f ms p99 %.1f ms max %.1f ms; gateway %.2f cores (%.0f µs per reading), RSS end %.0f MB (anon %.0f, files %.0f; window max %.0f, peak %.0f); %d reconnects; load generator %.2f cores; load %s",
		n, p.Acked, p.Due, p.SteadySeconds, p.MsgsPerS, p.P50ms, p.P99ms, p.MaxMs, p.GatewayCPUCores, p.CPUPerMsgUs,
		p.SteadyEnd.RSSMB, p.SteadyEnd.RSSAnonMB, p.SteadyEnd.RSSFileMB, p.SteadyMaxRSSMB, p.SteadyEnd.PeakRSSMB, p.Reconnects, p.LoadGenCores, p.LoadAvg[1])
	if p.Acked < p.Due {
		b.Errorf("%d devices: %d of %d readings acknowledged", n, p.Acked, p.Due)
	}
	return p
}

// goMem is the Go runtime's memory as the gateway's /metrics shows it.
type goMem struct {
	HeapInuseMB float64 `json:"heap_inuse_mb"`
	HeapIdleMB  float64 `json:"heap_idle_not_released_mb"`
	StackMB     float64 `json:"stack_inuse_mb"`
	NextGCMB    float64 `json:"next_gc_mb"`
	Goroutines  float64 `json:"goroutines"`
	GCCycles    float64 `json:"gc_cycles"`
}

func goMemOf(m map[string]float64) goMem {
	return goMem{
		HeapInuseMB: mb(m["go_memstats_heap_inuse_bytes"]),
		HeapIdleMB:  mb(m["go_memstats_heap_idle_bytes"] - m["go_memstats_heap_released_bytes"]),
		StackMB:     mb(m["go_memstats_stack_inuse_bytes"]),
		NextGCMB:    mb(m["go_memstats_next_gc_bytes"]),
		Goroutines:  m["go_goroutines"],
		GCCycles:    m["go_gc_duration_seconds_count"],
	}
}

func signersOf(devs []*simDevice) []*device.KeySigner {
	out := make([]*device.KeySigner, len(devs))
	for i, d := range devs {
		out[i] = d.signer
	}
	return out
}

func mustProc(tb testing.TB, pid int) benchkit.ProcStats {
	tb.Helper()
	ps, err := benchkit.ReadProc(pid)
	if err != nil {
		tb.Fatal(err)
	}
	return ps
}

// slope is the least-squares slope of y over x.
func slope(x, y []float64) float64 {
	n := float64(len(x))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		sxy += x[i] * y[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

func writeJSON(tb testing.TB, path string, v any) {
	tb.Helper()
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		tb.Fatal(err)
	}
}
