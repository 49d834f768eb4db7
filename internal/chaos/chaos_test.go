//go:build chaos

package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/httpapi"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/sim"
)

// envInt reads a positive integer from the environment, or returns def.
func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a whole number >= 0", name, v)
	}
	return n
}

// stack is the system under test: each part a separate OS process.
type stack struct {
	t        *testing.T
	dir      string
	ea, fw   string // binaries
	ledger   *testutil.Process
	home     string
	rpc      string
	gwConf   string
	gwHTTP   string
	gwMQTT   string
	gwDID    device.DID
	gw       *testutil.Process
	gwStarts int
	fleet    *testutil.Process
	client   *ledgerclient.Client
}

// logFile opens dir/name.log for appending (a restarted process adds to
// its log).
func (s *stack) logFile(name string) *os.File {
	f, err := os.OpenFile(filepath.Join(s.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { f.Close() })
	return f
}

func (s *stack) run(args ...string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.ea, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			s.t.Fatalf("edgeanchor %s: %v\n%s", strings.Join(args, " "), err, ee.Stderr)
		}
		s.t.Fatalf("edgeanchor %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

func newStack(t *testing.T) *stack {
	s := &stack{t: t, ea: testbin.Path(t, "./cmd/edgeanchor"), fw: testbin.Path(t, "./firmware-sim")}
	s.dir = os.Getenv("CHAOS_DIR")
	if s.dir == "" {
		s.dir = t.TempDir()
	} else if err := os.MkdirAll(s.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Logf("state and logs in %s", s.dir)
	key := filepath.Join(s.dir, "gateway.pem")
	s.run("keygen", "--out", key)
	signer, err := device.LoadKeySigner(key)
	if err != nil {
		t.Fatal(err)
	}
	s.gwDID = signer.DID()
	ports := testutil.FreePorts(t, 5)
	s.home = filepath.Join(s.dir, "ledger")
	s.run("ledger", "init", "--home", s.home, "--chain-id", "edgeanchor-chaos",
		"--p2p-port", fmt.Sprint(ports[0]), "--rpc-port", fmt.Sprint(ports[1]), "--prometheus-port", fmt.Sprint(ports[2]),
		"--gateway-pub", filepath.Join(s.dir, "gateway.pub.pem"), "--gateway-site", "site-a", "--gateway-name", "chaos")
	s.rpc = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	s.gwHTTP = fmt.Sprintf("http://127.0.0.1:%d", ports[3])
	s.gwMQTT = fmt.Sprintf("127.0.0.1:%d", ports[4])
	s.gwConf = filepath.Join(s.dir, "gateway.yaml")
	conf := fmt.Sprintf(`data_dir: %s
key_path: %s
site: site-a
name: chaos
ledger_rpc: %s
mqtt:
  tcp: %s
  ws: ""
  tls: ""
http:
  addr: %s
`, filepath.Join(s.dir, "gateway"), key, s.rpc, s.gwMQTT, strings.TrimPrefix(s.gwHTTP, "http://"))
	if err := os.WriteFile(s.gwConf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if s.client, err = ledgerclient.NewClient(s.rpc, ledgerclient.ClientOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.client.Close() })
	s.startLedger()
	return s
}

func (s *stack) startLedger() {
	s.t.Helper()
	cmd := exec.Command(s.ea, "ledger", "start", "--home", s.home, "--log-level", "warn")
	cmd.Stdout = s.logFile("ledger")
	s.ledger = testutil.StartProcess(s.t, cmd)
	testutil.WaitFor(s.t, 60*time.Second, "the ledger past height 2", func() error {
		select {
		case <-s.ledger.Exited():
			s.t.Fatalf("the ledger node exited: %v\n%s", s.ledger.Err(), s.ledger.Output.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		h, err := s.client.Height(ctx)
		if err == nil && h < 2 {
			err = fmt.Errorf("height %d", h)
		}
		return err
	})
}

// startGateway starts the gateway process and returns how long it took to
// answer /readyz 200.
func (s *stack) startGateway() time.Duration {
	s.t.Helper()
	cmd := exec.Command(s.ea, "gateway", "--config", s.gwConf, "--log-level", "warn")
	cmd.Stdout = s.logFile("gateway")
	began := time.Now()
	s.gw = testutil.StartProcess(s.t, cmd)
	s.gwStarts++
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-s.gw.Exited():
			s.t.Fatalf("the gateway exited at start %d: %v\n%s", s.gwStarts, s.gw.Err(), tail(s.gw.Output.String()))
		default:
		}
		if resp, err := client.Get(s.gwHTTP + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(began)
			}
		}
		if time.Since(began) > 60*time.Second {
			s.t.Fatalf("gateway start %d: not ready in 60 s\n%s", s.gwStarts, tail(s.gw.Output.String()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *stack) killGateway() {
	_ = s.gw.Cmd.Process.Signal(syscall.SIGKILL)
	<-s.gw.Exited()
}

func tail(s string) string {
	if len(s) > 8000 {
		return s[len(s)-8000:]
	}
	return s
}

// metric sums the samples of one metric family on the gateway's /metrics
// (0 if absent or unreachable).
func (s *stack) metric(name string) float64 {
	b, err := testutil.HTTPGet(s.gwHTTP + "/metrics")
	if err != nil {
		return 0
	}
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// lastGSeq is the highest gseq the gateway has stored.
func (s *stack) lastGSeq() (uint64, error) {
	b, err := testutil.HTTPGet(s.gwHTTP + "/v1/records?from_gseq=1&to_gseq=1")
	if err != nil {
		return 0, err
	}
	var ans httpapi.RangeAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		return 0, err
	}
	return ans.LastGSeq, nil
}

// anchoredThrough is the last gseq of the last batch on the ledger.
func (s *stack) anchoredThrough() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := s.client.LastBatch(ctx, s.gwDID)
	if errors.Is(err, ledgerclient.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	h, err := anchor.ParseHeader(b.Header)
	if err != nil {
		return 0, err
	}
	return h.Last, nil
}

// fleetStats parses the fleet's last progress or stop line.
var statsLine = regexp.MustCompile(`taken=(\d+) acked=(\d+) spooled=(\d+) dropped=(\d+) refused=(\d+)`)

type fleetStats struct{ taken, acked, spooled, dropped, refused uint64 }

func (s *stack) fleetStats() fleetStats {
	m := statsLine.FindAllStringSubmatch(s.fleet.Output.String(), -1)
	if len(m) == 0 {
		return fleetStats{}
	}
	last := m[len(m)-1]
	n := func(i int) uint64 { v, _ := strconv.ParseUint(last[i], 10, 64); return v }
	return fleetStats{n(1), n(2), n(3), n(4), n(5)}
}

// TestChaos runs the fault campaign of issue 12 on real processes:
//
//  1. CHAOS_DEVICES (150) simulated env devices (firmware-sim, window 4)
//     taking CHAOS_RATE (500) readings/s in all enrol through the gateway
//     and publish;
//  2. the gateway is killed with SIGKILL CHAOS_CYCLES (20) times, at a
//     random moment 2-6 s after it became ready, and started again at once
//     (restart-to-ready is measured: process start to /readyz 200);
//  3. the ledger node is stopped for CHAOS_OUTAGE_S (60) seconds while
//     ingest goes on; then the time until the backlog stored meanwhile is
//     anchored is measured;
//  4. the fleet is stopped and everything anchored; then every seq each
//     device took is stored exactly once or still in the device's spool
//     (nothing acknowledged is lost: the spool deletes a reading only after
//     its PUBACK), the fleet gave nothing up and dropped nothing, gseq
//     1..last is present without a hole, and `edgeanchor audit` walks the
//     header chain (in order, contiguous) and every record, its only
//     findings being gaps of seqs still held in a spool.
//
// CHAOS_DIR keeps state and logs in that directory instead of a temporary
// one.
func TestChaos(t *testing.T) {
	devices := envInt(t, "CHAOS_DEVICES", 150)
	rate := envInt(t, "CHAOS_RATE", 500)
	cycles := envInt(t, "CHAOS_CYCLES", 20)
	outage := time.Duration(envInt(t, "CHAOS_OUTAGE_S", 60)) * time.Second
	campaign := time.Now()
	s := newStack(t)
	s.startGateway()

	// The fleet: tokens from the CLI, then firmware-sim.
	toks := s.run("token", "create", "--site", "site-a", "--kind", "env", "--count", fmt.Sprint(devices), "--ttl", "2h", "--config", s.gwConf)
	tokFile := filepath.Join(s.dir, "tokens.txt")
	if err := os.WriteFile(tokFile, []byte("env\n"+toks), 0o600); err != nil {
		t.Fatal(err)
	}
	simDir := filepath.Join(s.dir, "sim")
	fcmd := exec.Command(s.fw, "--gateway", "tcp://"+s.gwMQTT, "--devices", fmt.Sprint(devices), "--profile", "env",
		"--rate", strconv.FormatFloat(float64(rate)/float64(devices), 'f', 3, 64), "--tokens", tokFile,
		"--state", simDir, "--window", "4", "--stats", "2s")
	fcmd.Stdout = s.logFile("fleet-stdout")
	s.fleet = testutil.StartProcess(t, fcmd)
	testutil.WaitFor(t, 120*time.Second, "every device connected", func() error {
		select {
		case <-s.fleet.Exited():
			t.Fatalf("firmware-sim exited: %v\n%s", s.fleet.Err(), tail(s.fleet.Output.String()))
		default:
		}
		if n := s.metric("edgeanchor_devices_connected"); int(n) < devices {
			return fmt.Errorf("%v of %d connected", n, devices)
		}
		return nil
	})
	g0, _ := s.lastGSeq()
	time.Sleep(5 * time.Second)
	g1, _ := s.lastGSeq()
	t.Logf("fleet up after %s: %d devices, %.0f records/s stored", time.Since(campaign).Round(time.Second), devices, float64(g1-g0)/5)

	// The kill -9 loop.
	var ready []time.Duration
	loopFrom, loopG := time.Now(), g1
	for i := 0; i < cycles; i++ {
		time.Sleep(2*time.Second + rand.N(4*time.Second))
		s.killGateway()
		d := s.startGateway()
		ready = append(ready, d)
	}
	loopG2, err := s.lastGSeq()
	if err != nil {
		t.Fatal(err)
	}
	loopTook := time.Since(loopFrom)
	slices.Sort(ready)
	if cycles > 0 {
		t.Logf("kill -9 loop: %d cycles in %s, %d records stored meanwhile (%.0f/s); restart to ready min %s median %s max %s",
			cycles, loopTook.Round(time.Second), loopG2-loopG, float64(loopG2-loopG)/loopTook.Seconds(),
			ready[0].Round(time.Millisecond), ready[len(ready)/2].Round(time.Millisecond), ready[len(ready)-1].Round(time.Millisecond))
	}

	// The ledger outage.
	if outage > 0 {
		time.Sleep(3 * time.Second)
		before, err := s.anchoredThrough()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.ledger.Stop(syscall.SIGTERM, 30*time.Second); errors.Is(err, testutil.ErrStillRunning) {
			t.Fatalf("ledger stop: %v", err)
		}
		o0, _ := s.lastGSeq()
		time.Sleep(outage)
		o1, err := s.lastGSeq()
		if err != nil {
			t.Fatal(err)
		}
		stored := o1 - o0
		t.Logf("ledger outage of %s: %d records stored meanwhile (%.0f/s); anchored through gseq %d before it", outage, stored, float64(stored)/outage.Seconds(), before)
		if float64(stored) < 0.5*float64(rate)*outage.Seconds() {
			t.Errorf("ingest during the ledger outage: %d records in %s, want at least half of %d/s", stored, outage, rate)
		}
		backAt := time.Now()
		s.startLedger()
		backlog, _ := s.lastGSeq()
		testutil.WaitFor(t, 10*time.Minute, "the outage's backlog anchored", func() error {
			a, err := s.anchoredThrough()
			if err == nil && a < backlog {
				err = fmt.Errorf("anchored through gseq %d of %d", a, backlog)
			}
			return err
		})
		t.Logf("ledger back: backlog of %d records (gseq %d..%d) anchored %s after the ledger started again",
			backlog-before, before+1, backlog, time.Since(backAt).Round(100*time.Millisecond))
	}

	// Stop the fleet and let everything be anchored.
	if err := s.fleet.Stop(syscall.SIGTERM, 60*time.Second); err != nil {
		t.Fatalf("firmware-sim stop: %v\n%s", err, tail(s.fleet.Output.String()))
	}
	fs := s.fleetStats()
	last, err := s.lastGSeq()
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Minute, "every record anchored", func() error {
		a, err := s.anchoredThrough()
		if err == nil && a < last {
			err = fmt.Errorf("anchored through gseq %d of %d", a, last)
		}
		return err
	})
	t.Logf("fleet stopped: taken %d, acknowledged %d, still spooled %d, dropped %d, given up %d; gateway stored %d records",
		fs.taken, fs.acked, fs.spooled, fs.dropped, fs.refused, last)
	if fs.dropped != 0 || fs.refused != 0 {
		t.Errorf("the fleet dropped %d readings and gave up %d", fs.dropped, fs.refused)
	}

	// What each device took, and still holds.
	type devState struct {
		taken uint64
		held  map[uint64]bool
		kept  map[uint64]int // seq -> times stored
	}
	devs := map[device.DID]*devState{}
	entries, err := os.ReadDir(simDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dd := filepath.Join(simDir, e.Name())
		b, err := os.ReadFile(filepath.Join(dd, "device.json"))
		if err != nil {
			continue
		}
		var st struct {
			DID device.DID `json:"did"`
		}
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		seqb, err := os.ReadFile(filepath.Join(dd, "seq"))
		if err != nil {
			t.Fatal(err)
		}
		taken, err := strconv.ParseUint(strings.TrimSpace(string(seqb)), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		sp, err := sim.OpenSpool(filepath.Join(dd, "spool"), sim.DefaultSpoolMax)
		if err != nil {
			t.Fatal(err)
		}
		ds := &devState{taken: taken, held: map[uint64]bool{}, kept: map[uint64]int{}}
		for _, seq := range sp.Pending(0, 1<<30) {
			ds.held[seq] = true
		}
		devs[st.DID] = ds
	}

	// Every stored record, in gseq order.
	var next uint64 = 1
	for next <= last {
		to := min(last, next+httpapi.MaxRangeRecords-1)
		b, err := testutil.HTTPGet(fmt.Sprintf("%s/v1/records?from_gseq=%d&to_gseq=%d", s.gwHTTP, next, to))
		if err != nil {
			t.Fatal(err)
		}
		var ans httpapi.RangeAnswer
		if err := json.Unmarshal(b, &ans); err != nil {
			t.Fatal(err)
		}
		for _, r := range ans.Records {
			if r.GSeq != next {
				t.Fatalf("gseq %d missing (the gateway answered %d next)", next, r.GSeq)
			}
			next++
			ds := devs[r.DID]
			if ds == nil {
				t.Fatalf("gseq %d: record of a device not in the fleet: %s", r.GSeq, r.DID)
			}
			ds.kept[r.Seq]++
		}
		if len(ans.Records) == 0 {
			t.Fatalf("gseq %d..%d: no records", next, to)
		}
	}
	var lost, dups, heldOnly, total uint64
	for did, ds := range devs {
		for seq := uint64(1); seq <= ds.taken; seq++ {
			n := ds.kept[seq]
			switch {
			case n > 1:
				dups++
				t.Errorf("%s seq %d stored %d times", did, seq, n)
			case n == 0 && ds.held[seq]:
				heldOnly++
			case n == 0:
				lost++
				t.Errorf("%s seq %d taken, not stored and not in the device's spool", did, seq)
			}
			total++
		}
	}
	t.Logf("records: %d readings taken, %d stored once, %d still held only in a spool, %d lost, %d stored twice; gseq 1..%d without a hole",
		total, total-heldOnly-lost-dups, heldOnly, lost, dups, last)

	// The audit: chain, records, roots; a sequence gap only where the
	// device still holds the missing seqs.
	out, _ := exec.Command(s.ea, "audit", "--gateway", string(s.gwDID), "--ledger", s.rpc, "--api", s.gwHTTP).Output()
	gapLine := regexp.MustCompile(`^✗ sequence_gap: device (\S+): seq jumps from (\d+) to (\d+)`)
	lowLine := regexp.MustCompile(`^✗ sequence_gap: device (\S+): lowest seq is (\d+)`)
	var findings int
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "✗") {
			continue
		}
		findings++
		m := gapLine.FindStringSubmatch(line)
		if l := lowLine.FindStringSubmatch(line); l != nil {
			m = []string{l[0], l[1], "0", l[2]}
		}
		if m == nil {
			t.Errorf("audit: %s", line)
			continue
		}
		ds := devs[device.DID(m[1])]
		from, _ := strconv.ParseUint(m[2], 10, 64)
		to, _ := strconv.ParseUint(m[3], 10, 64)
		for seq := from + 1; ds != nil && seq < to; seq++ {
			if !ds.held[seq] {
				t.Errorf("audit: %s, and seq %d is not in the device's spool", line, seq)
			}
		}
	}
	if !strings.Contains(string(out), "checked ") {
		t.Errorf("audit did not run to the end:\n%s", tail(string(out)))
	}
	t.Logf("audit: %d findings, each a gap the devices still hold; %s", findings, firstLine(string(out), "checked "))
	t.Logf("campaign took %s; load average %s", time.Since(campaign).Round(time.Second), loadavg())
}

func firstLine(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}
