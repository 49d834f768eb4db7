package devices

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/bench/internal/benchkit"
	"github.com/edgeanchor/edgeanchor/bench/plot"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway"
	"github.com/edgeanchor/edgeanchor/gateway/httpapi"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

type stormScale struct {
	devices  int
	interval time.Duration // one reading per device per interval
	before   time.Duration // quiet readings before the kill
	outage   time.Duration // the gateway is down this long: the spools fill
	after    time.Duration // readings are still taken this long after the restart
	limit    time.Duration // after the restart, everything must be back and stored within this
}

func stormConfig() stormScale {
	if os.Getenv(quickEnv) != "" {
		return stormScale{devices: 1000, interval: 10 * time.Second, before: 10 * time.Second,
			outage: 20 * time.Second, after: 10 * time.Second, limit: 2 * time.Minute}
	}
	return stormScale{devices: 10000, interval: 10 * time.Second, before: 20 * time.Second,
		outage: 60 * time.Second, after: 20 * time.Second, limit: 3 * time.Minute}
}

// stormSecond is one second of the storm after the restart, as the devices
// saw it.
type stormSecond struct {
	T         float64 `json:"t_s"` // seconds since the restarted gateway was started
	Connected int     `json:"connected"`
	Pending   int     `json:"readings_pending"` // taken, not yet acknowledged
	Attempts  int     `json:"connect_attempts"`
	Acks      int     `json:"pubacks"`
	P50ms     float64 `json:"puback_p50_ms"`
	P99ms     float64 `json:"puback_p99_ms"`
	RSSMB     float64 `json:"gateway_rss_mb"`
}

type stormResults struct {
	When          string `json:"when"`
	CPUs          int    `json:"cpus"`
	Go            string `json:"go"`
	Registry      string `json:"registry"`
	Devices       int    `json:"devices"`
	Interval      string `json:"reading_interval"`
	Outage        string `json:"outage"`
	Backoff       string `json:"device_reconnect_policy"`
	Limits        string `json:"gateway_connect_limits"`
	MemoryLimitMB int    `json:"gateway_memory_limit_mb"`
	// Spooled: readings taken while the gateway was down (each device's
	// unacknowledged spool at the restart), in all.
	Spooled int `json:"spooled_readings"`
	// Times from the restarted gateway process's start: its READY line
	// (store open, listeners up), every device connected again, every
	// spooled reading acknowledged.
	ReadySeconds      float64 `json:"restart_to_ready_s"`
	AllBackSeconds    float64 `json:"restart_to_all_connected_s"`
	AllStoredSeconds  float64 `json:"restart_to_all_spooled_stored_s"`
	PeakRSSMB         float64 `json:"peak_rss_mb"`
	PeakRSSAnonMB     float64 `json:"rss_anon_mb_at_end"`
	GatewayCPUSeconds float64 `json:"gateway_cpu_s_until_all_stored"`
	// PUBACKs while devices were still connecting (from READY until all
	// were back): the gateway stays responsive while CONNECTs queue.
	StormAcks  int     `json:"pubacks_while_connecting"`
	StormP50ms float64 `json:"puback_p50_ms_while_connecting"`
	StormP99ms float64 `json:"puback_p99_ms_while_connecting"`
	StormMaxMs float64 `json:"puback_max_ms_while_connecting"`
	// Connect attempts after the kill, by what the device saw: refused at
	// TCP (gateway down), refused or closed by the gateway (throttled,
	// busy), accepted.
	AttemptsDown     int `json:"attempts_gateway_down"`
	AttemptsRefused  int `json:"attempts_refused_by_gateway"`
	AttemptsAccepted int `json:"attempts_accepted"`
	MaxAttempts      int `json:"max_attempts_one_device"`
	// The restarted gateway's refusals and duplicates, from its /metrics
	// (non-zero samples only).
	GatewayRefusals map[string]float64 `json:"gateway_refusals"`
	// The store afterwards: every (device, seq) exactly once, seq 1..taken
	// for every device, gseq without a hole.
	Records    int           `json:"records_stored"`
	Expected   int           `json:"records_expected"`
	Missing    int           `json:"missing"`
	Duplicated int           `json:"duplicated"`
	GSeqHoles  int           `json:"gseq_holes"`
	LoadAvg    []string      `json:"loadavg_before_after"`
	Timeline   []stormSecond `json:"timeline"`
}

// BenchmarkReconnectStorm is issue 18's item 2 (run with -benchtime 1x;
// make bench): devices connected to one gateway, publishing quietly; the
// gateway is killed with SIGKILL; while it is down every device keeps
// taking readings into its spool; the gateway restarts on the same store
// and every device comes back (firmware-sim's reconnect policy,
// sim.Backoff) and sends its spool. It writes bench/results/storm.json and
// storm-*.png.
func BenchmarkReconnectStorm(b *testing.B) {
	for range b.N {
		benchStorm(b)
	}
}

func benchStorm(b *testing.B) {
	sc := stormConfig()
	n := capDevices(b, sc.devices, raiseNoFile(b, uint64(sc.devices+8192)))
	readings := int((sc.before+sc.outage+sc.after)/sc.interval) + 2
	signers := newKeys(b, n)
	devs := newDevices(b, signers, readings, sc.interval)
	def := gateway.DefaultConfig().Limits
	res := stormResults{
		When: time.Now().UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), Go: runtime.Version(),
		Registry: "static (devices in the broker's StaticRegistry, not enrolled through the ledger); every CONNECT verifies the device's SM2 connect credential",
		Devices:  n, Interval: sc.interval.String(), Outage: sc.outage.String(),
		Backoff: fmt.Sprintf("sim.Backoff: wait before every attempt, the first after a lost connection included, uniform in [0, c]; c from %s doubling to %s", backoffMin, backoffMax),
		Limits: fmt.Sprintf("gateway defaults: connect_rate %g/s burst %d, connect_source_rate %g/s burst %d (every device from its own address)",
			def.ConnectRate, def.ConnectBurst, def.ConnectSourceRate, def.ConnectSourceBurst),
		LoadAvg:       []string{benchkit.Loadavg()},
		MemoryLimitMB: memoryLimitMB(b),
	}

	// The restarted gateway must listen where the devices reconnect.
	mqttAddr := fmt.Sprintf("127.0.0.1:%d", testutil.StablePorts(b, 1)[0])
	env := []string{
		benchkit.DevicesEnv + "=" + benchkit.WriteDevices(b, signers),
		benchkit.DataEnv + "=" + b.TempDir(),
		benchkit.ConfigEnv + "=" + fmt.Sprintf("mqtt: {tcp: %q}\nmemory_limit_mb: %d\nlimits: {max_connections: %d, connect_rate: %g, connect_burst: %d, connect_source_rate: %g, connect_source_burst: %d}\n",
			mqttAddr, memoryLimitMB(b), n+1024, def.ConnectRate, def.ConnectBurst, def.ConnectSourceRate, def.ConnectSourceBurst),
	}
	g := benchkit.StartChild(b, "gateway", env...)
	if g.Addrs[0] != mqttAddr {
		b.Fatalf("gateway listens on %s, want %s", g.Addrs[0], mqttAddr)
	}

	sch, took, stopFleet := connectFleet(b, devs, mqttAddr, sc.interval)
	defer stopFleet()
	logf(b, "%d devices connected in %.1f s (through the gateway's default connect limits)", n, took.Seconds())

	t0 := time.Now().Add(time.Second)
	killAt := t0.Add(sc.before)
	steady := &schedule{t0: t0, interval: sc.interval, stop: killAt.Add(sc.outage + sc.after)}
	sch.Store(steady)
	time.Sleep(time.Until(killAt))
	g.Kill()
	killed := time.Now()
	logf(b, "gateway killed (SIGKILL) with %d devices connected; down for %s", n, sc.outage)
	time.Sleep(time.Until(killed.Add(sc.outage)))

	restart := time.Now()
	for _, d := range devs {
		res.Spooled += steady.taken(d.offset, restart, len(d.frames)) - int(d.acked.Load())
	}
	g = benchkit.StartChild(b, "gateway", env...)
	defer g.Stop()
	ready := time.Now()
	res.ReadySeconds = ready.Sub(restart).Seconds()
	httpAddr := g.Addrs[1]
	// Spooled readings: what each device had taken by the restart.
	spooledUpTo := make([]int, n)
	for i, d := range devs {
		spooledUpTo[i] = steady.taken(d.offset, restart, len(d.frames))
	}
	cpu0 := g.Stats(b)
	var allBack, allStored time.Time
	sampleStop := make(chan struct{})
	var rssSamples sync.Map // second -> MB
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sampleStop:
				return
			case now := <-t.C:
				if ps, err := benchkit.ReadProc(g.Pid()); err == nil {
					sec := int(now.Sub(restart).Seconds())
					if v, ok := rssSamples.Load(sec); !ok || v.(float64) < ps.RSSMB {
						rssSamples.Store(sec, ps.RSSMB)
					}
				}
			}
		}
	}()
	deadline := restart.Add(sc.limit)
	for time.Now().Before(deadline) {
		now := time.Now()
		if allBack.IsZero() && connectedCount(devs) == n {
			allBack = now
		}
		if allStored.IsZero() {
			done := true
			for i, d := range devs {
				if int(d.acked.Load()) < spooledUpTo[i] {
					done = false
					break
				}
			}
			if done {
				allStored = now
				res.GatewayCPUSeconds = g.Stats(b).CPUSeconds - cpu0.CPUSeconds
			}
		}
		if !allBack.IsZero() && !allStored.IsZero() && now.After(steady.stop) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if allBack.IsZero() || allStored.IsZero() {
		b.Errorf("after %s: %d of %d devices connected; every spooled reading stored: %v", sc.limit, connectedCount(devs), n, !allStored.IsZero())
	}
	// The readings taken after the restart: wait for their PUBACKs too.
	due := func() (due, acked int) {
		for _, d := range devs {
			due += steady.taken(d.offset, steady.stop, len(d.frames))
			acked += int(d.acked.Load())
		}
		return due, acked
	}
	waitAll(ackTimeout+10*time.Second, func() bool { d, a := due(); return a >= d })
	close(sampleStop)
	sampler.Wait()
	end := g.Stats(b)
	res.PeakRSSMB, res.PeakRSSAnonMB = end.PeakRSSMB, end.RSSAnonMB
	if !allBack.IsZero() {
		res.AllBackSeconds = allBack.Sub(restart).Seconds()
	}
	if !allStored.IsZero() {
		res.AllStoredSeconds = allStored.Sub(restart).Seconds()
	}
	metrics, err := scrapeAll(httpAddr)
	if err != nil {
		b.Fatalf("metrics: %v", err)
	}
	res.GatewayRefusals = nonZero(metrics, "edgeanchor_mqtt_connect_throttled_total", "edgeanchor_mqtt_connections_refused_total",
		"edgeanchor_auth_failures_total", "edgeanchor_messages_refused_total", "edgeanchor_messages_duplicate_total",
		"edgeanchor_mqtt_connect_timeouts_total", "edgeanchor_mqtt_accept_errors_total")
	stopFleet()

	// What the devices saw, second by second after the restart.
	secs := int(time.Since(restart).Seconds()) + 1
	timeline := make([]stormSecond, secs)
	lats := make([][]time.Duration, secs)
	var storm []time.Duration
	for _, d := range devs {
		for _, a := range d.attempts {
			if a.at.Before(killed) {
				continue
			}
			switch a.outcome {
			case attemptDial:
				res.AttemptsDown++
			case attemptRefused:
				res.AttemptsRefused++
			default:
				res.AttemptsAccepted++
			}
			if s := int(a.at.Sub(restart).Seconds()); a.at.After(restart) && s < secs {
				timeline[s].Attempts++
			}
		}
		after := 0
		for _, a := range d.attempts {
			if !a.at.Before(killed) {
				after++
			}
		}
		res.MaxAttempts = max(res.MaxAttempts, after)
		for _, a := range d.acks {
			if a.at.Before(restart) {
				continue
			}
			if s := int(a.at.Sub(restart).Seconds()); s < secs {
				lats[s] = append(lats[s], a.lat)
			}
			if !allBack.IsZero() && a.at.Before(allBack) {
				storm = append(storm, a.lat)
			}
		}
	}
	slices.Sort(storm)
	res.StormAcks = len(storm)
	res.StormP50ms, res.StormP99ms, res.StormMaxMs = pct(storm, 0.5), pct(storm, 0.99), pct(storm, 1)
	for s := range timeline {
		at := restart.Add(time.Duration(s+1) * time.Second)
		st := &timeline[s]
		st.T = float64(s + 1)
		for _, d := range devs {
			if connectedAt(d, at) {
				st.Connected++
			}
			st.Pending += steady.taken(d.offset, at, len(d.frames)) - ackedBy(d, at)
		}
		slices.Sort(lats[s])
		st.Acks = len(lats[s])
		st.P50ms, st.P99ms = pct(lats[s], 0.5), pct(lats[s], 0.99)
		if v, ok := rssSamples.Load(s); ok {
			st.RSSMB = v.(float64)
		}
	}
	res.Timeline = timeline

	logf(b, "restart: ready in %.2f s, all %d devices back in %.1f s, all %d spooled readings stored in %.1f s (gateway CPU %.1f s); peak RSS %.0f MB",
		res.ReadySeconds, n, res.AllBackSeconds, res.Spooled, res.AllStoredSeconds, res.GatewayCPUSeconds, res.PeakRSSMB)
	logf(b, "while connecting: %d PUBACKs, p50 %.1f ms, p99 %.1f ms, max %.1f ms; attempts after the kill: %d refused at TCP (down), %d refused by the gateway, %d accepted, at most %d by one device",
		res.StormAcks, res.StormP50ms, res.StormP99ms, res.StormMaxMs, res.AttemptsDown, res.AttemptsRefused, res.AttemptsAccepted, res.MaxAttempts)
	logf(b, "gateway refusals: %v", res.GatewayRefusals)
	// Nothing lost, nothing stored twice: read the whole store back.
	counts, holes, total := readStore(b, httpAddr, signersDIDs(devs))
	res.Records, res.GSeqHoles = total, holes
	for _, d := range devs {
		want := steady.taken(d.offset, steady.stop, len(d.frames))
		res.Expected += want
		got := counts[d.signer.DID()]
		for seq := 1; seq <= want; seq++ {
			switch c := got[uint64(seq)]; {
			case c == 0:
				res.Missing++
			case c > 1:
				res.Duplicated += c - 1
			}
		}
		for seq, c := range got {
			if seq < 1 || seq > uint64(want) {
				res.Duplicated += c // stored, never sent: cannot be
			}
		}
	}
	res.LoadAvg = append(res.LoadAvg, benchkit.Loadavg())
	logf(b, "store: %d records, %d expected, %d missing, %d duplicated, %d gseq holes; load %s", res.Records, res.Expected, res.Missing, res.Duplicated, res.GSeqHoles, res.LoadAvg[1])
	if res.Missing != 0 || res.Duplicated != 0 || res.GSeqHoles != 0 || res.Records != res.Expected {
		b.Errorf("store after the storm: %d records for %d readings, %d missing, %d duplicated, %d gseq holes",
			res.Records, res.Expected, res.Missing, res.Duplicated, res.GSeqHoles)
	}

	dir := resultsDir(b)
	writeJSON(b, filepath.Join(dir, "storm.json"), res)
	var ts, conn, pend, att, p50, p99 []float64
	for _, s := range timeline {
		ts = append(ts, s.T)
		conn = append(conn, float64(s.Connected))
		pend = append(pend, float64(s.Pending))
		att = append(att, float64(s.Attempts))
		p50 = append(p50, s.P50ms)
		p99 = append(p99, s.P99ms)
	}
	for _, err := range []error{
		plot.Lines(filepath.Join(dir, "storm-devices.png"), fmt.Sprintf("Reconnect storm: %d devices after a kill -9 and restart", n), "seconds since the gateway restarted", "devices / readings",
			plot.Series{Name: "devices connected", X: ts, Y: conn},
			plot.Series{Name: "readings not yet stored", X: ts, Y: pend},
			plot.Series{Name: "connect attempts in that second", X: ts, Y: att}),
		plot.Lines(filepath.Join(dir, "storm-latency.png"), "Publish to PUBACK during the reconnect storm", "seconds since the gateway restarted", "ms",
			plot.Series{Name: "p50", X: ts, Y: p50},
			plot.Series{Name: "p99", X: ts, Y: p99}),
	} {
		if err != nil {
			b.Fatal(err)
		}
	}
	logf(b, "wrote %s/storm.json and storm-{devices,latency}.png", dir)
}

// connectedAt tells whether d's last connect attempt at or before at was
// accepted (it stays connected until it next tries: a device tries again
// only after losing its connection).
func connectedAt(d *simDevice, at time.Time) bool {
	ok := false
	for _, a := range d.attempts {
		if a.at.After(at) {
			break
		}
		ok = a.outcome == attemptOK
	}
	return ok
}

// ackedBy is how many of d's readings were acknowledged by at.
func ackedBy(d *simDevice, at time.Time) int {
	return len(d.acks) - len(d.acks[sortSearch(d.acks, at):])
}

func sortSearch(acks []ackEvent, at time.Time) int {
	i, _ := slices.BinarySearchFunc(acks, at, func(a ackEvent, t time.Time) int { return a.at.Compare(t) })
	return i
}

// readStore reads every device's records back from the gateway's HTTP API
// (GET /v1/devices/{did}/records, 8 at a time) and counts them by device
// and seq. A record stored twice under one (device, seq), or any record
// that is not a device's, would leave a gseq that no device's records
// name: holes counts the gseqs from 1 to the highest one named that no
// device's records name, and a record after the highest (GET
// /v1/records/{gseq}) is one more.
func readStore(tb testing.TB, httpAddr string, dids []device.DID) (counts map[device.DID]map[uint64]int, holes, total int) {
	tb.Helper()
	counts = make(map[device.DID]map[uint64]int, len(dids))
	var (
		mu    sync.Mutex
		gseqs = map[uint64]bool{}
		first error
		next  atomic.Int64
		wg    sync.WaitGroup
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(dids) {
					return
				}
				page, err := deviceRecords(httpAddr, dids[i])
				mu.Lock()
				if err != nil {
					first = cmp(first, err)
					mu.Unlock()
					return
				}
				c := map[uint64]int{}
				for _, r := range page.Records {
					c[r.Seq]++
					gseqs[r.GSeq] = true
					total++
				}
				counts[dids[i]] = c
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		tb.Fatalf("read the store: %v", first)
	}
	var last uint64
	for g := range gseqs {
		last = max(last, g)
	}
	holes = int(last) - len(gseqs)
	resp, err := httpClient.Get(fmt.Sprintf("http://%s/v1/records/%d", httpAddr, last+1))
	if err != nil {
		tb.Fatalf("read the store: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		holes++
		tb.Errorf("GET /v1/records/%d after the highest gseq the devices' records name: status %d, want 404", last+1, resp.StatusCode)
	}
	return counts, holes, total
}

func deviceRecords(httpAddr string, did device.DID) (*httpapi.DeviceRecordsPage, error) {
	url := fmt.Sprintf("http://%s/v1/devices/%s/records?limit=500", httpAddr, did)
	resp, err := httpClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var page httpapi.DeviceRecordsPage
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	if page.NextFromSeq != 0 {
		return nil, fmt.Errorf("%s: more than one page (%d records)", url, len(page.Records))
	}
	return &page, nil
}

func signersDIDs(devs []*simDevice) []device.DID {
	out := make([]device.DID, len(devs))
	for i, d := range devs {
		out[i] = d.signer.DID()
	}
	return out
}
