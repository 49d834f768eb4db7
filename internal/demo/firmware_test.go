package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

// TestFirmwareSimBinary runs bin/firmware-sim as docs/run.md shows it,
// against a real gateway and ledger: tokens made with `edgeanchor token
// create` under kind headers, devices that enroll and publish, a clean stop
// on SIGINT, then load mode on the same state.
func TestFirmwareSimBinary(t *testing.T) {
	ea := testbin.Path(t, "./cmd/edgeanchor")
	fs := testbin.Path(t, "./firmware-sim")
	o := testOptions(t, t.TempDir())
	ctx, s := startLedger(t, o, 120*time.Second)
	gcfg := s.gatewayConfig()
	defer s.startTestGateway(t, ctx)()

	var tokens bytes.Buffer
	for _, kc := range []struct {
		kind, count string
	}{{"payroll", "2"}, {"survey", "1"}, {"env", "1"}} {
		out, err := exec.Command(ea, "token", "create", "--site", "site-a", "--kind", kc.kind, "--count", kc.count, "--data-dir", s.p.gateway).Output()
		if err != nil {
			t.Fatalf("token create: %v", err)
		}
		tokens.WriteString(kc.kind + "\n")
		tokens.Write(out)
	}
	tokPath := filepath.Join(o.Dir, "tokens.txt")
	if err := os.WriteFile(tokPath, tokens.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(o.Dir, "fs")
	args := []string{"--gateway", "tcp://" + gcfg.MQTT.TCP, "--devices", "4", "--profile", "mixed", "--rate", "5",
		"--tokens", tokPath, "--state", state, "--seed", "5", "--stats", "1s"}
	fsim := testutil.StartProcess(t, exec.Command(fs, args...))

	dids := make([]device.DID, 4)
	base := "http://" + gcfg.HTTP.Addr
	if err := testutil.Poll(60*time.Second, func() error {
		ready := 0
		for i := range dids {
			if dids[i] == "" {
				var st struct {
					DID device.DID `json:"did"`
				}
				if b, err := os.ReadFile(filepath.Join(state, fmt.Sprintf("dev-%04d", i), "device.json")); err == nil && json.Unmarshal(b, &st) == nil {
					dids[i] = st.DID
				}
			}
			if dids[i] != "" && len(deviceRecords(t, base, dids[i])) >= 5 {
				ready++
			}
		}
		if ready != len(dids) {
			return fmt.Errorf("only %d of 4 devices have 5 records stored", ready)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, fsim.Output.String())
	}
	if err := fsim.Stop(syscall.SIGINT, 15*time.Second); err != nil {
		t.Fatalf("firmware-sim after SIGINT: %v\n%s", err, fsim.Output.String())
	}
	if !strings.Contains(fsim.Output.String(), "fleet stopped") {
		t.Fatalf("no final summary:\n%s", fsim.Output.String())
	}
	// A reading taken as the fleet stopped may still wait in a spool; load
	// mode sends it first.
	before := map[device.DID]int{}
	spooled := 0
	for i, did := range dids {
		held, _ := filepath.Glob(filepath.Join(state, fmt.Sprintf("dev-%04d", i), "spool", "*.env"))
		spooled += len(held)
		before[did] = len(deviceRecords(t, base, did)) + len(held)
	}

	// Load mode on the same, now enrolled, state: no tokens needed.
	out, err := exec.Command(fs, "--gateway", "tcp://"+gcfg.MQTT.TCP, "--devices", "4", "--state", state,
		"load", "--messages", "25", "--inflight", "8").CombinedOutput()
	if err != nil {
		t.Fatalf("firmware-sim load: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("%d acknowledged", 100+spooled)) {
		t.Fatalf("load output:\n%s", out)
	}
	for _, did := range dids {
		recs := deviceRecords(t, base, did)
		if len(recs) != before[did]+25 {
			t.Fatalf("%s: %d records after load, want %d + 25", did, len(recs), before[did])
		}
		for i := 1; i < len(recs); i++ {
			if recs[i].Seq != recs[i-1].Seq+1 {
				t.Fatalf("%s: seq %d follows %d", did, recs[i].Seq, recs[i-1].Seq)
			}
		}
	}

	// kill -9 in the middle of a run, then start again: no sequence number
	// is ever used twice, nothing is stored twice, and every reading the
	// devices signed reaches the store except at most one per device whose
	// number was reserved when the process died.
	runArgs := []string{"--gateway", "tcp://" + gcfg.MQTT.TCP, "--devices", "4", "--rate", "20", "--state", state, "--stats", "0"}
	seqCounter := func(i int) uint64 {
		b, _ := os.ReadFile(filepath.Join(state, fmt.Sprintf("dev-%04d", i), "seq"))
		var n uint64
		fmt.Sscan(string(b), &n)
		return n
	}
	stored := func() []int {
		n := make([]int, len(dids))
		for i, did := range dids {
			n[i] = len(deviceRecords(t, base, did))
		}
		return n
	}
	// Round 0 is killed once every device has signed new readings and
	// the gateway has stored some of them (in the middle of a run however
	// slow the machine). Round 1 runs until the readings spooled at the
	// kill have been sent and acknowledged (their files are gone) and every
	// device has stored readings taken after the restart, then stops
	// cleanly. Readings it takes faster than a loaded machine sends them
	// stay spooled and are counted below.
	run := testutil.StartProcess(t, exec.Command(fs, runArgs...))
	counted, storedBefore := make([]uint64, len(dids)), stored()
	for i := range dids {
		counted[i] = seqCounter(i)
	}
	if err := testutil.Poll(60*time.Second, func() error {
		now := stored()
		for i := range dids {
			if c := seqCounter(i); c < counted[i]+5 || now[i] <= storedBefore[i] {
				return fmt.Errorf("device %d: counter %d (was %d), %d stored (was %d)", i, c, counted[i], now[i], storedBefore[i])
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("before kill -9: %v\n%s", err, run.Output.String())
	}
	if err := run.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-run.Exited()
	leftAtKill, _ := filepath.Glob(filepath.Join(state, "dev-*", "spool", "*.env"))
	storedAtKill := stored()
	for i := range dids {
		counted[i] = seqCounter(i)
	}
	run = testutil.StartProcess(t, exec.Command(fs, runArgs...))
	if err := testutil.Poll(60*time.Second, func() error {
		for _, f := range leftAtKill {
			if _, err := os.Stat(f); err == nil {
				return fmt.Errorf("%s, spooled at the kill, not acknowledged yet", filepath.Base(f))
			}
		}
		for i, did := range dids {
			recs := deviceRecords(t, base, did)
			if len(recs) <= storedAtKill[i] || recs[len(recs)-1].Seq <= counted[i] {
				return fmt.Errorf("device %d: no reading taken after the restart stored yet", i)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("after kill -9 and restart: %v\n%s", err, run.Output.String())
	}
	if err := run.Stop(syscall.SIGINT, 30*time.Second); err != nil {
		t.Fatalf("firmware-sim after kill -9 and restart: %v\n%s", err, run.Output.String())
	}
	for i, did := range dids {
		recs := deviceRecords(t, base, did)
		b, err := os.ReadFile(filepath.Join(state, fmt.Sprintf("dev-%04d", i), "seq"))
		if err != nil {
			t.Fatal(err)
		}
		var counter uint64
		fmt.Sscan(string(b), &counter)
		held, _ := filepath.Glob(filepath.Join(state, fmt.Sprintf("dev-%04d", i), "spool", "*.env"))
		missing := 0
		for j := 1; j < len(recs); j++ {
			if recs[j].Seq <= recs[j-1].Seq || recs[j].GSeq <= recs[j-1].GSeq {
				t.Fatalf("%s: seq %d (gseq %d) after seq %d (gseq %d)", did, recs[j].Seq, recs[j].GSeq, recs[j-1].Seq, recs[j-1].GSeq)
			}
			missing += int(recs[j].Seq - recs[j-1].Seq - 1)
		}
		last := recs[len(recs)-1].Seq
		missing += int(counter-last) - len(held)
		if missing > 1 || last > counter {
			t.Fatalf("%s: stored up to seq %d, counter %d, %d spooled: %d readings lost", did, last, counter, len(held), missing)
		}
	}
}

// TestFirmwareSimLoadReportsRefusal: `firmware-sim load` logs progress every
// --stats, and a publish the gateway refuses (here: over the device's rate)
// ends the run with the gateway's reason and MQTT 5 reason code, not with a
// lost connection.
func TestFirmwareSimLoadReportsRefusal(t *testing.T) {
	ea := testbin.Path(t, "./cmd/edgeanchor")
	fs := testbin.Path(t, "./firmware-sim")
	o := testOptions(t, t.TempDir())
	ctx, s := startLedger(t, o, 120*time.Second)
	gcfg := s.gatewayConfig()
	gcfg.Limits.DeviceRate, gcfg.Limits.DeviceBurst = 1, 3
	gctx, gcancel := context.WithCancel(ctx)
	done, err := startGateway(gctx, gcfg, s.signer, s.log.With("component", "gateway"), prometheus.NewRegistry())
	if err != nil {
		gcancel()
		t.Fatal(err)
	}
	defer func() {
		gcancel()
		<-done
	}()
	tok, err := exec.Command(ea, "token", "create", "--kind", "env", "--data-dir", s.p.gateway).Output()
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	tokPath := filepath.Join(o.Dir, "tokens.txt")
	if err := os.WriteFile(tokPath, append([]byte("env\n"), tok...), 0o600); err != nil {
		t.Fatal(err)
	}
	// 20 readings at 10/s against 1/s with a burst of 3: refused within
	// the first half second, whatever the machine's speed.
	out, err := exec.Command(fs, "--gateway", "tcp://"+gcfg.MQTT.TCP, "--devices", "1", "--profile", "env",
		"--tokens", tokPath, "--state", filepath.Join(o.Dir, "fs"), "--stats", "100ms",
		"load", "--messages", "20", "--total-rate", "10", "--inflight", "4").CombinedOutput()
	if err == nil {
		t.Fatalf("load over the device's rate succeeded:\n%s", out)
	}
	for _, want := range []string{"refused by the gateway: rate_limited (PUBACK reason code 0x97); over the device's rate (the same may be sent again later)", "msg=load "} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "connection lost") {
		t.Errorf("the refusal is reported as a lost connection:\n%s", out)
	}
}
