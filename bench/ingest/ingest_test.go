package ingest

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/bench/internal/benchkit"
)

// Targets of issue 5, on this machine with the load generator included.
const (
	targetMsgsPerS  = 14_000
	targetP99ms     = 20
	fixedRate       = 10_000 // msgs/s offered in the latency run
	window          = 16     // unacknowledged publishes per device
	msgs200         = 500    // per device, 200 devices: 100,000 publishes
	msgs1000        = 100    // per device, 1,000 devices: 100,000 publishes
	fixedRateMsgs   = 50     // per device, 1,000 devices at 10,000/s: 5 s
	halfRate        = 5_000  // a second fixed-rate run, for latency below saturation
	halfRateMsgs    = 25     // per device, 1,000 devices at 5,000/s: 5 s
	rssLimitMB      = 200    // issue 5: gateway RSS with 1,000 devices under load
	runLimit        = 90 * time.Second
	resultsRelative = "../results/ingest.json"
)

// run is one measured run: the load generator's view and the server's.
type run struct {
	Name   string     `json:"name"`
	Server string     `json:"server"` // "edgeanchor" or "mochi"
	Load   loadResult `json:"load"`
	// CPU seconds the server process spent during the run, and its RSS
	// after the run and at its peak (since the process started).
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	ServerCPUCores   float64 `json:"server_cpu_cores"` // CPU seconds / wall seconds
	ServerRSSMB      float64 `json:"server_rss_mb"`
	ServerPeakRSSMB  float64 `json:"server_peak_rss_mb"`
	ServerRSSAnonMB  float64 `json:"server_rss_anon_mb"` // heap, stacks
	ServerRSSFileMB  float64 `json:"server_rss_file_mb"` // memory-mapped files (Badger)
	// LoadGenCores is the load generator's (this process's) CPU seconds
	// per wall second; IdleCores the machine's idle CPU over the run (from
	// /proc/stat): what the server could still have used.
	LoadGenCores float64 `json:"loadgen_cpu_cores"`
	IdleCores    float64 `json:"idle_cores"`
	// Gateway means over the run from its own /metrics: publish received
	// to stored (before PUBACK), one group commit, records per group.
	GatewayIngestMeanMs   float64 `json:"gateway_ingest_mean_ms,omitempty"`
	GatewayStoreWriteMs   float64 `json:"gateway_store_write_mean_ms,omitempty"`
	GatewayRecordsPerSync float64 `json:"gateway_records_per_group,omitempty"`
	// GatewayIngestP99Ms: the gateway's own publish → stored p99, from its
	// histogram's buckets (coarse); the load generator's p99 adds the
	// network, the PUBACK's way back and its own scheduling.
	GatewayIngestP99Ms float64 `json:"gateway_ingest_p99_ms,omitempty"`
}

// scrape returns the sum and count samples of the histograms named in
// /metrics of the gateway at httpAddr.
func scrape(httpAddr string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if strings.HasSuffix(name, "_sum") || strings.HasSuffix(name, "_count") ||
			strings.HasPrefix(name, "edgeanchor_ingest_latency_seconds_bucket{") {
			v, _ := strconv.ParseFloat(val, 64)
			out[name] = v
		}
	}
	return out
}

// bucketQuantile estimates quantile q (in ms) of the histogram name over
// the run from its bucket counts, interpolating within the bucket (so it is
// as coarse as the buckets: 10, 20, 50, 100 ms ...).
func bucketQuantile(after, before map[string]float64, name string, q float64) float64 {
	prefix := name + "_bucket{le=\""
	type bucket struct{ le, n float64 }
	var bs []bucket
	for k, v := range after {
		le, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		bound, err := strconv.ParseFloat(strings.TrimSuffix(le, "\"}"), 64)
		if err != nil {
			continue // +Inf
		}
		bs = append(bs, bucket{bound, v - before[k]})
	}
	total := after[name+"_count"] - before[name+"_count"]
	if len(bs) == 0 || total <= 0 {
		return 0
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	want, lo, prev := q*total, 0.0, 0.0
	for _, b := range bs {
		if b.n >= want {
			return (lo + (b.le-lo)*(want-prev)/max(b.n-prev, 1)) * 1000
		}
		lo, prev = b.le, b.n
	}
	return math.Inf(1) // beyond the last bound
}

func mean(after, before map[string]float64, name string, scale float64) float64 {
	n := after[name+"_count"] - before[name+"_count"]
	if n <= 0 {
		return 0
	}
	return (after[name+"_sum"] - before[name+"_sum"]) / n * scale
}

type results struct {
	When     string             `json:"when"`
	CPUs     int                `json:"cpus"`
	Go       string             `json:"go"`
	Window   int                `json:"inflight_per_device"`
	Registry string             `json:"registry"`
	Runs     []run              `json:"runs"`
	Ratio    map[string]float64 `json:"ratio_to_mochi"`
	Targets  map[string]any     `json:"targets"`
	// MemoryCgroup is the 1,000-device run repeated with the gateway in a
	// memory cgroup limited to rssLimitMB (nil with NotMeasured set when
	// no cgroup can be made here).
	MemoryCgroup *benchkit.CgroupStats `json:"memory_cgroup,omitempty"`
	NotMeasured  string                `json:"memory_cgroup_not_measured,omitempty"`
	// LoadAvg is /proc/loadavg before and after: the machine is shared, and
	// a load well above its CPU count means the figures are CPU-starved.
	LoadAvg []string `json:"loadavg_before_after"`
}

// measure runs spec against a server child and adds the server's CPU and
// memory to the result.
func measure(b *testing.B, name, server string, c *benchkit.Child, spec loadSpec) run {
	b.Helper()
	var mBefore map[string]float64
	if len(c.Addrs) > 1 {
		mBefore = scrape(c.Addrs[1])
	}
	before := c.Stats(b)
	genBefore, _ := benchkit.ReadProc(os.Getpid())
	idleBefore := benchkit.IdleSeconds()
	res, err := runLoad(context.Background(), spec)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	after := c.Stats(b)
	genAfter, _ := benchkit.ReadProc(os.Getpid())
	idle := benchkit.IdleSeconds() - idleBefore
	r := run{Name: name, Server: server, Load: res,
		ServerCPUSeconds: after.CPUSeconds - before.CPUSeconds,
		ServerRSSMB:      after.RSSMB, ServerPeakRSSMB: after.PeakRSSMB,
		ServerRSSAnonMB: after.RSSAnonMB, ServerRSSFileMB: after.RSSFileMB}
	if res.Seconds > 0 {
		r.ServerCPUCores = r.ServerCPUSeconds / res.Seconds
		r.LoadGenCores = (genAfter.CPUSeconds - genBefore.CPUSeconds) / res.Seconds
		r.IdleCores = idle / res.Seconds
	}
	if len(c.Addrs) > 1 {
		mAfter := scrape(c.Addrs[1])
		r.GatewayIngestMeanMs = mean(mAfter, mBefore, "edgeanchor_ingest_latency_seconds", 1000)
		r.GatewayStoreWriteMs = mean(mAfter, mBefore, "edgeanchor_store_write_seconds", 1000)
		r.GatewayRecordsPerSync = mean(mAfter, mBefore, "edgeanchor_store_group_records", 1)
		r.GatewayIngestP99Ms = bucketQuantile(mAfter, mBefore, "edgeanchor_ingest_latency_seconds", 0.99)
		b.Logf("%-28s gateway: ingest mean %.2f ms (p99 ~%.0f ms), group commit mean %.2f ms, %.0f records per group",
			name, r.GatewayIngestMeanMs, r.GatewayIngestP99Ms, r.GatewayStoreWriteMs, r.GatewayRecordsPerSync)
	}
	b.Logf("%-28s acked %7d in %5.2fs = %8.0f msgs/s  p50 %6.2f ms  p99 %7.2f ms  server CPU %5.1fs (%.2f cores; load generator %.2f, idle %.2f)  RSS %5.0f MB (peak %5.0f; anon %4.0f, files %4.0f)",
		name, res.Acked, res.Seconds, res.MsgsPerS, res.P50ms, res.P99ms, r.ServerCPUSeconds, r.ServerCPUCores, r.LoadGenCores, r.IdleCores,
		r.ServerRSSMB, r.ServerPeakRSSMB, r.ServerRSSAnonMB, r.ServerRSSFileMB)
	return r
}

// BenchmarkIngest is the load benchmark; run it with -benchtime 1x
// (make bench). It writes bench/results/ingest.json.
func BenchmarkIngest(b *testing.B) {
	for range b.N {
		benchIngest(b)
	}
}

// quickEnv scales every run down tenfold (a smoke run of the benchmark
// itself; its numbers are not the benchmark's).
const quickEnv = "EDGEANCHOR_BENCH_QUICK"

func benchIngest(b *testing.B) {
	t0 := time.Now()
	msgs200, msgs1000, fixedRateMsgs, halfRateMsgs := msgs200, msgs1000, fixedRateMsgs, halfRateMsgs
	if os.Getenv(quickEnv) != "" {
		msgs200, msgs1000, fixedRateMsgs, halfRateMsgs = msgs200/10, msgs1000/10, fixedRateMsgs/10, halfRateMsgs/5
	}
	f200 := newFleet(b, 200, msgs200)
	f1000 := newFleet(b, 1000, msgs1000+fixedRateMsgs+halfRateMsgs)
	b.Logf("signed %d envelopes for 1,200 devices in %s (before any clock starts)",
		200*msgs200+1000*(msgs1000+fixedRateMsgs+halfRateMsgs), time.Since(t0).Round(time.Millisecond))

	res := results{
		When: time.Now().UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), Go: runtime.Version(),
		Window:   window,
		Registry: "static (devices put in the broker's StaticRegistry; enrollment through the ledger is not part of this benchmark)",
		Ratio:    map[string]float64{},
		LoadAvg:  []string{benchkit.Loadavg()},
	}
	var runs = map[string]run{}
	add := func(r run) { res.Runs = append(res.Runs, r); runs[r.Name] = r }

	for _, sc := range []struct {
		name  string
		f     *fleet
		msgs  int
		fixed bool
	}{
		{"200", f200, msgs200, false},
		{"1000", f1000, msgs1000, true},
	} {
		m := benchkit.StartChild(b, "mochi")
		add(measure(b, "mochi-"+sc.name+"-devices", "mochi", m, loadSpec{
			addr: m.Addrs[0], devices: sc.f.mochiDevices(sc.msgs), window: window, limit: runLimit}))
		m.Stop()

		g := benchkit.StartChild(b, "gateway", benchkit.DevicesEnv+"="+benchkit.WriteDevices(b, sc.f.signers), benchkit.DataEnv+"="+b.TempDir())
		add(measure(b, "edgeanchor-"+sc.name+"-devices", "edgeanchor", g, loadSpec{
			addr: g.Addrs[0], devices: sc.f.gatewayDevices(sc.msgs), window: window, limit: runLimit}))
		if sc.fixed {
			// Seqs continue from the closed-loop run: 5k/s first, then 10k/s.
			from := sc.msgs
			for _, fr := range []struct {
				name string
				rate float64
				msgs int
			}{
				{"edgeanchor-1000-devices-5k-fixed", halfRate, halfRateMsgs},
				{"edgeanchor-1000-devices-10k-fixed", fixedRate, fixedRateMsgs},
			} {
				devs := sc.f.gatewayDevices(from + fr.msgs)
				for _, d := range devs {
					d.envs = d.envs[from:]
				}
				add(measure(b, fr.name, "edgeanchor", g, loadSpec{
					addr: g.Addrs[0], devices: devs, window: window, rate: fr.rate, limit: runLimit}))
				from += fr.msgs
			}
		}
		g.Stop()
	}

	// The closed-loop 1,000-device run once more, on a fresh store, with the
	// gateway limited to rssLimitMB by a memory cgroup: does it fit the box?
	if cg, err := benchkit.NewMemCgroup(fmt.Sprintf("edgeanchor-bench-%d", os.Getpid()), rssLimitMB<<20); err != nil {
		res.NotMeasured = err.Error()
		b.Logf("memory-limited run not measured: %v", err)
	} else {
		g := benchkit.StartChildIn(b, cg, "gateway", benchkit.DevicesEnv+"="+benchkit.WriteDevices(b, f1000.signers), benchkit.DataEnv+"="+b.TempDir())
		add(measure(b, "edgeanchor-1000-devices-in-200MB", "edgeanchor", g, loadSpec{
			addr: g.Addrs[0], devices: f1000.gatewayDevices(msgs1000), window: window, limit: runLimit}))
		g.Stop()
		st := cg.Stats()
		cg.Remove()
		res.MemoryCgroup = &st
		b.Logf("memory cgroup: limit %.0f MB, peak charge %.0f MB (anon + page cache), limit events %d, OOM kills %d",
			st.LimitMB, st.PeakMB, st.LimitHits, st.OOMKills)
	}

	for _, n := range []string{"200", "1000"} {
		gw, mo := runs["edgeanchor-"+n+"-devices"], runs["mochi-"+n+"-devices"]
		if mo.Load.MsgsPerS > 0 {
			res.Ratio[n+"_devices"] = gw.Load.MsgsPerS / mo.Load.MsgsPerS
		}
	}
	worst := min(runs["edgeanchor-200-devices"].Load.MsgsPerS, runs["edgeanchor-1000-devices"].Load.MsgsPerS)
	fixed := runs["edgeanchor-1000-devices-10k-fixed"]
	res.Targets = map[string]any{
		"min_acked_msgs_per_s":      targetMsgsPerS,
		"measured_min_msgs_per_s":   worst,
		"throughput_met":            worst >= targetMsgsPerS,
		"p99_ms_at_10k_offered":     targetP99ms,
		"measured_p99_ms_at_10k":    fixed.Load.P99ms,
		"p99_met":                   fixed.Load.P99ms <= targetP99ms && fixed.Load.Acked == fixed.Load.Published,
		"rss_mb_limit_1000_devices": 200,
		"measured_peak_rss_mb_1000": max(runs["edgeanchor-1000-devices"].ServerPeakRSSMB, fixed.ServerPeakRSSMB),
		"rss_met":                   max(runs["edgeanchor-1000-devices"].ServerPeakRSSMB, fixed.ServerPeakRSSMB) <= 200,
	}
	if lim, ok := runs["edgeanchor-1000-devices-in-200MB"]; ok && res.MemoryCgroup != nil {
		res.Targets["in_200mb_cgroup_msgs_per_s"] = lim.Load.MsgsPerS
		res.Targets["in_200mb_cgroup_peak_rss_mb"] = lim.ServerPeakRSSMB
		res.Targets["in_200mb_cgroup_ok"] = res.MemoryCgroup.OOMKills == 0 && lim.Load.Acked == lim.Load.Published
	}
	res.LoadAvg = append(res.LoadAvg, benchkit.Loadavg())
	b.Logf("load average before %s, after %s (on %d CPUs)", res.LoadAvg[0], res.LoadAvg[1], res.CPUs)
	b.ReportMetric(worst, "acked_msgs/s")
	b.ReportMetric(fixed.Load.P99ms, "p99_ms@10k")

	if os.Getenv(quickEnv) != "" {
		b.Logf("quick run: %s not written", resultsRelative)
		return
	}
	out, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(resultsRelative), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(resultsRelative, append(out, '\n'), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("wrote %s: %s", resultsRelative, out)
}
