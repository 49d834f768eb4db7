package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// auditEnv is a real ledger node and an in-process gateway with anchoring
// whose store can be stopped, tampered with and served again.
type auditEnv struct {
	t      *testing.T
	lgw    *ledgertest.Gateway
	node   *ledgertest.Node
	cfg    gateway.Config
	reg    *broker.StaticRegistry
	devs   []*device.KeySigner
	seqs   []uint64
	g      *gateway.Gateway
	an     *gateway.Anchoring
	client *ledgerclient.Client
	cancel context.CancelFunc
	done   chan error
}

func newAuditEnv(t *testing.T) *auditEnv {
	t.Helper()
	lgw := ledgertest.NewGateway(t, "site-a")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	node := ledgertest.Start(t, ledgertest.Options{Gateways: []*ledgertest.Gateway{lgw}, Logger: quiet})
	client, err := ledgerclient.NewClient(node.RPC, ledgerclient.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	e := &auditEnv{t: t, lgw: lgw, node: node, client: client, reg: broker.NewStaticRegistry()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 2 {
		key, tx := lgw.NewDevice(t, "env")
		if _, err := client.Submit(ctx, tx); err != nil {
			t.Fatal(err)
		}
		e.reg.Put(broker.DeviceInfo{DID: key.DID(), Pub: key.Public(), Kind: "env", Site: "site-a"})
		e.devs = append(e.devs, key)
		e.seqs = append(e.seqs, 0)
	}
	e.cfg = gateway.DefaultConfig()
	e.cfg.DataDir = t.TempDir()
	e.cfg.KeyPath = "unused"
	e.cfg.MQTT = gateway.MQTTConfig{TCP: "127.0.0.1:0"}
	e.cfg.HTTP.Addr = "127.0.0.1:0"
	e.cfg.LedgerRPC = node.RPC
	e.cfg.BatchInterval = time.Hour // batches are cut by the test
	e.start()
	t.Cleanup(e.stop)
	return e
}

func (e *auditEnv) start() {
	e.t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	prom := prometheus.NewRegistry()
	g, err := gateway.New(e.cfg, gateway.Deps{Logger: quiet, Registerer: prom, Gatherer: prom, Signer: e.lgw.Signer, Registry: e.reg, Ledger: e.client})
	if err != nil {
		e.t.Fatal(err)
	}
	e.an = g.Anchoring()
	e.g = g
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- g.Run(ctx) }()
}

func (e *auditEnv) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	if err := <-e.done; err != nil {
		e.t.Errorf("gateway Run: %v", err)
	}
}

// add stores the next reading of device i (skip jumps its sequence) and
// returns its gseq.
func (e *auditEnv) add(i int, skip uint64) uint64 {
	e.t.Helper()
	e.seqs[i] += 1 + skip
	d := e.devs[i]
	body, err := device.NewBody(d.DID(), e.seqs[i], time.Now(), "env.dust", map[string]any{"pm25_ugm3": 10.5, "pm10_ugm3": 30.0, "noise_dba": 55.0})
	if err != nil {
		e.t.Fatal(err)
	}
	env, err := device.Seal(d, body)
	if err != nil {
		e.t.Fatal(err)
	}
	rec, err := e.g.Store().Append(context.Background(), gateway.Pending{
		DID: d.DID(), Seq: e.seqs[i], Kind: "env.dust", Envelope: env, EnvHash: anchor.SM3(env)})
	if err != nil {
		e.t.Fatal(err)
	}
	return rec.GSeq
}

// addBurst queues n readings of each device one after the other without
// waiting for each to be stored (the store may sign them in one commit
// group), then waits for them all.
func (e *auditEnv) addBurst(n int) {
	e.t.Helper()
	var waits []func() (*gateway.Record, bool, error)
	for range n {
		for i, d := range e.devs {
			e.seqs[i]++
			body, err := device.NewBody(d.DID(), e.seqs[i], time.Now(), "env.dust", map[string]any{"pm25_ugm3": 10.5, "pm10_ugm3": 30.0, "noise_dba": 55.0})
			if err != nil {
				e.t.Fatal(err)
			}
			env, err := device.Seal(d, body)
			if err != nil {
				e.t.Fatal(err)
			}
			w, err := e.g.Store().Enqueue(context.Background(), gateway.Pending{
				DID: d.DID(), Seq: e.seqs[i], Kind: "env.dust", Envelope: env, EnvHash: anchor.SM3(env)})
			if err != nil {
				e.t.Fatal(err)
			}
			waits = append(waits, w)
		}
	}
	for _, w := range waits {
		if _, _, err := w(); err != nil {
			e.t.Fatal(err)
		}
	}
}

// batch cuts a batch of what waits and waits until it is anchored.
func (e *auditEnv) batch() *gateway.StoredBatch {
	e.t.Helper()
	e.an.Batcher.Notify()
	sb, err := e.an.Batcher.CutNow()
	if err != nil {
		e.t.Fatal(err)
	}
	e.an.Anchorer.Wake()
	var got *gateway.StoredBatch
	testutil.WaitFor(e.t, 30*time.Second, fmt.Sprintf("batch %d anchored", sb.Seq), func() (err error) {
		if got, err = e.an.Batches.Get(sb.Seq); err == nil && got.Anchor == nil {
			err = errors.New("no anchor yet")
		}
		return err
	})
	return got
}

func (e *auditEnv) audit(args ...string) (string, int, []auditFinding) {
	e.t.Helper()
	var out bytes.Buffer
	findings, err := runAudit(context.Background(), auditOptions{
		Gateway: e.lgw.DID(), Ledger: e.node.RPC, API: "http://" + e.g.HTTPAddr(), Out: &out, Progress: io.Discard,
	})
	if err != nil {
		e.t.Fatalf("audit: %v\n%s", err, out.String())
	}
	// The command itself, for its flags and exit code.
	cliOut, code := runCLI(e.t, append([]string{"audit", "--gateway", string(e.lgw.DID()), "--ledger", e.node.RPC,
		"--api", "http://" + e.g.HTTPAddr()}, args...)...)
	return out.String() + cliOut, code, findings
}

func kinds(fs []auditFinding) map[string]int {
	m := map[string]int{}
	for _, f := range fs {
		m[f.Kind]++
	}
	return m
}

func TestAuditFindsDeletedBatchChangedRecordAndGap(t *testing.T) {
	e := newAuditEnv(t)
	// Batch 1: both devices 1..3. Batch 2: both devices 4..5.
	for range 3 {
		e.add(0, 0)
		e.add(1, 0)
	}
	b1 := e.batch()
	e.addBurst(2)
	b2 := e.batch()

	out, code, fs := e.audit()
	if code != 0 || len(fs) != 0 || !strings.Contains(out, "checked 2 batches, 10 records, 2 devices") {
		t.Fatalf("clean history: exit %d, findings %v\n%s", code, fs, out)
	}
	// Each commit group's statement signature is verified once.
	groups := map[string]bool{}
	if err := e.g.Store().Range(1, 10, func(r *gateway.Record) error {
		groups[string(r.Group)] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("(%d receipt signatures)", len(groups)); !strings.Contains(out, want) {
		t.Fatalf("audit of %d commit groups does not say %q:\n%s", len(groups), want, out)
	}
	e.verifyLive()

	// Device 1 skips seq 6 (publishes 7): accepted by the gateway, found
	// by the audit once anchored.
	e.add(1, 1)
	e.add(0, 0)
	e.batch()
	out, code, fs = e.audit()
	if code != 1 || len(fs) != 1 || fs[0].Kind != "sequence_gap" || !strings.Contains(fs[0].Detail, string(e.devs[1].DID())+": seq jumps from 5 to 7") {
		t.Fatalf("gap: exit %d, findings %v\n%s", code, fs, out)
	}

	// Delete batch 1's records from the gateway's store and change one
	// record of batch 2, behind the running gateway's back (at its next
	// start the store would take a hole for a failed write and repair it).
	s := e.g.Store()
	err := s.DB().Update(func(txn *badger.Txn) error {
		key := func(g uint64) []byte { return binary.BigEndian.AppendUint64([]byte("r/"), g) }
		for g := b1.First; g <= b1.Last; g++ {
			if err := txn.Delete(key(g)); err != nil {
				return err
			}
		}
		// Change one byte of the record's salt in place (whatever the
		// store's encoding, the 16 random salt bytes occur once).
		g := b2.First + 1
		rec, err := s.Get(g)
		if err != nil {
			return err
		}
		item, err := txn.Get(key(g))
		if err != nil {
			return err
		}
		raw, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		i := bytes.Index(raw, rec.Salt)
		if i < 0 {
			return errors.New("salt not found in the stored value")
		}
		raw[i] ^= 1
		if err := txn.Set(key(g), raw); err != nil {
			return err
		}
		// Change one hex digit of the root in another record's copy of
		// its commit group statement.
		g = b2.First
		if rec, err = s.Get(g); err != nil {
			return err
		}
		if item, err = txn.Get(key(g)); err != nil {
			return err
		}
		if raw, err = item.ValueCopy(nil); err != nil {
			return err
		}
		i = bytes.Index(raw, rec.Group)
		j := bytes.Index(rec.Group, []byte(`"root":"`))
		if i < 0 || j < 0 {
			return errors.New("statement root not found in the stored value")
		}
		at := i + j + len(`"root":"`)
		if raw[at] == '0' {
			raw[at] = '1'
		} else {
			raw[at] = '0'
		}
		return txn.Set(key(g), raw)
	})
	if err != nil {
		t.Fatal(err)
	}

	out, code, fs = e.audit()
	k := kinds(fs)
	if code != 1 || k["missing_records"] == 0 || k["root"] != 1 || k["sequence_gap"] == 0 || k["record"] != 1 {
		t.Fatalf("tampered store: exit %d, findings %v\n%s", code, fs, out)
	}
	if want := fmt.Sprintf("batch 2 gseq %d: ", b2.First); !strings.Contains(out, want) || !strings.Contains(out, "not in its group") {
		t.Fatalf("the changed statement is not reported as %q … not in its group:\n%s", want, out)
	}
	if !strings.Contains(out, "batch 1: the gateway serves 0 of its 6 records") ||
		!strings.Contains(out, "batch 2: records hash to root") {
		t.Fatalf("findings do not name the batches:\n%s", out)
	}

	// --from after batch 2's window: only batch 3 is checked, which holds
	// the gap but nothing deleted or changed; no sequence baseline, so no
	// finding.
	h3, _ := e.an.Batches.Get(3)
	hdr, _ := h3.ParsedHeader()
	out, code, _ = e.audit("--from", hdr.From.Format(time.RFC3339Nano))
	if code != 0 { // code is the CLI run's, the one with --from
		t.Fatalf("exit %d\n%s", code, out)
	}
	if !strings.Contains(out, "checked 1 batches, 2 records") {
		t.Fatalf("--from did not limit the audit:\n%s", out)
	}
	if _, code := runCLI(t, "audit", "--gateway", "nope", "--ledger", e.node.RPC, "--api", "x"); code != 2 {
		t.Errorf("bad --gateway: exit %d, want 2", code)
	}
}

// verifyLive checks `verify --ledger` on a record of device 0: live checks
// pass, and a revocation after the anchor is reported but does not fail.
func (e *auditEnv) verifyLive() {
	t := e.t
	resp, err := http.Get("http://" + e.g.HTTPAddr() + "/v1/records/1/proof")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("proof: %s %s", resp.Status, raw)
	}
	dir := t.TempDir()
	bundle, trustPath := filepath.Join(dir, "b.json"), filepath.Join(dir, "trust.json")
	trust, err := evidence.ExportTrustFromHome(e.node.Home)
	if err != nil {
		t.Fatal(err)
	}
	if err := evidence.WriteTrustFile(trustPath, trust); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bundle, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runCLI(t, "verify", bundle, "--trust", trustPath, "--ledger", e.node.RPC)
	if code != 0 || !strings.Contains(out, "✓ live: device status: active") || !strings.Contains(out, "✓ live: batch on the ledger") {
		t.Fatalf("verify --ledger: exit %d\n%s", code, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.client.Submit(ctx, ledgertest.RevokeDeviceTx(t, e.lgw.Signer, e.devs[0].DID(), "stolen")); err != nil {
		t.Fatal(err)
	}
	out, code = runCLI(t, "verify", bundle, "--trust", trustPath, "--ledger", e.node.RPC)
	if code != 0 || !strings.Contains(out, "! live: device status: revoked at height") {
		t.Fatalf("verify --ledger after a later revocation: exit %d\n%s", code, out)
	}
	// The device is revoked: it may not publish any more; the test's
	// records of device 0 are added straight to the store, as before.
}

// TestAuditLateFill: a device seq stored as a late fill (after later seqs,
// with a later gseq) closes the gap the audit reported before it; the
// fill's proof bundle verifies offline.
func TestAuditLateFill(t *testing.T) {
	e := newAuditEnv(t)
	e.add(0, 0)
	e.add(1, 0)
	e.add(1, 1) // device 1: seq 3, seq 2 missing (refused for the rate, say)
	e.batch()
	out, code, fs := e.audit()
	if code != 1 || len(fs) != 1 || fs[0].Kind != "sequence_gap" || !strings.Contains(fs[0].Detail, string(e.devs[1].DID())+": seq jumps from 1 to 3") {
		t.Fatalf("open gap: exit %d, findings %v\n%s", code, fs, out)
	}

	// Device 1 sends seq 2 again: stored as a late fill, after seq 3.
	d := e.devs[1]
	body, err := device.NewBody(d.DID(), 2, time.Now(), "env.dust", map[string]any{"pm25_ugm3": 10.5, "pm10_ugm3": 30.0, "noise_dba": 55.0})
	if err != nil {
		t.Fatal(err)
	}
	env, err := device.Seal(d, body)
	if err != nil {
		t.Fatal(err)
	}
	fill, err := e.g.Store().Append(context.Background(), gateway.Pending{
		DID: d.DID(), Seq: 2, Kind: "env.dust", Envelope: env, EnvHash: anchor.SM3(env)})
	if err != nil {
		t.Fatalf("late fill: %v", err)
	}
	e.add(0, 0)
	e.batch()
	out, code, fs = e.audit()
	if code != 0 || len(fs) != 0 || !strings.Contains(out, "checked 2 batches, 5 records, 2 devices") {
		t.Fatalf("after the late fill (gseq %d): exit %d, findings %v\n%s", fill.GSeq, code, fs, out)
	}

	// Its proof bundle, fetched by device and seq, verifies offline.
	resp, err := http.Get(fmt.Sprintf("http://%s/v1/devices/%s/records/2/proof", e.g.HTTPAddr(), d.DID()))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("proof: %s %s", resp.Status, raw)
	}
	dir := t.TempDir()
	bundle, trustPath := filepath.Join(dir, "b.json"), filepath.Join(dir, "trust.json")
	trust, err := evidence.ExportTrustFromHome(e.node.Home)
	if err != nil {
		t.Fatal(err)
	}
	if err := evidence.WriteTrustFile(trustPath, trust); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bundle, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = runCLI(t, "verify", bundle, "--trust", trustPath)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("gseq %d", fill.GSeq)) {
		t.Fatalf("verify the late fill's bundle: exit %d\n%s", code, out)
	}
}
