package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/gatewaytest"
	"github.com/edgeanchor/edgeanchor/gateway/store"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// auditEnv is a real site (gatewaytest: ledger node, two env devices, an
// in-process gateway with anchoring) whose store can be stopped, tampered
// with and served again.
type auditEnv struct {
	*gatewaytest.Site
	t *testing.T
}

func newAuditEnv(t *testing.T) *auditEnv {
	t.Helper()
	return &auditEnv{Site: gatewaytest.Start(t, gatewaytest.Options{Devices: []string{"env", "env"}}), t: t}
}

// add stores the next reading of device i (skip jumps its sequence) and
// returns its gseq.
func (e *auditEnv) add(i int, skip uint64) uint64 {
	e.t.Helper()
	return e.Append(e.Next(i, skip, time.Now(), "env.dust", dustValues())).GSeq
}

// dustValues are the values of every env.dust reading the tests store.
func dustValues() map[string]any {
	return map[string]any{"pm25_ugm3": 10.5, "pm10_ugm3": 30.0, "noise_dba": 55.0}
}

// addBurst queues n readings of each device one after the other without
// waiting for each to be stored (the store may sign them in one commit
// group), then waits for them all.
func (e *auditEnv) addBurst(n int) {
	e.t.Helper()
	var waits []func() (*store.Record, bool, error)
	for range n {
		for i := range e.Devices {
			w, err := e.G.Store().Enqueue(context.Background(), e.Next(i, 0, time.Now(), "env.dust", dustValues()))
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

func (e *auditEnv) audit(args ...string) (string, int, []auditFinding) {
	e.t.Helper()
	var out bytes.Buffer
	findings, err := runAudit(context.Background(), auditOptions{
		Gateway: e.LGW.DID(), Ledger: e.Node.RPC, API: "http://" + e.G.HTTPAddr(), Out: &out, Progress: io.Discard,
	})
	if err != nil {
		e.t.Fatalf("audit: %v\n%s", err, out.String())
	}
	// The command itself, for its flags and exit code.
	cliOut, code := runCLI(e.t, append([]string{"audit", "--gateway", string(e.LGW.DID()), "--ledger", e.Node.RPC,
		"--api", "http://" + e.G.HTTPAddr()}, args...)...)
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
	b1 := e.Cut()
	e.addBurst(2)
	b2 := e.Cut()

	out, code, fs := e.audit()
	if code != 0 || len(fs) != 0 || !strings.Contains(out, "checked 2 batches, 10 records, 2 devices") {
		t.Fatalf("clean history: exit %d, findings %v\n%s", code, fs, out)
	}
	// Each commit group's statement signature is verified once.
	groups := map[string]bool{}
	if err := e.G.Store().Range(1, 10, func(r *store.Record) error {
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
	e.Cut()
	out, code, fs = e.audit()
	if code != 1 || len(fs) != 1 || fs[0].Kind != "sequence_gap" || !strings.Contains(fs[0].Detail, string(e.Devices[1].DID())+": seq jumps from 5 to 7") {
		t.Fatalf("gap: exit %d, findings %v\n%s", code, fs, out)
	}

	// Delete batch 1's records from the gateway's store and change one
	// record of batch 2, behind the running gateway's back (at its next
	// start the store would take a hole for a failed write and repair it).
	s := e.G.Store()
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
	h3, _ := e.An.Batches.Get(3)
	hdr, _ := h3.ParsedHeader()
	out, code, _ = e.audit("--from", hdr.From.Format(time.RFC3339Nano))
	if code != 0 { // code is the CLI run's, the one with --from
		t.Fatalf("exit %d\n%s", code, out)
	}
	if !strings.Contains(out, "checked 1 batches, 2 records") {
		t.Fatalf("--from did not limit the audit:\n%s", out)
	}
	if _, code := runCLI(t, "audit", "--gateway", "nope", "--ledger", e.Node.RPC, "--api", "x"); code != 2 {
		t.Errorf("bad --gateway: exit %d, want 2", code)
	}
}

// verifyLive checks `verify --ledger` on a record of device 0: live checks
// pass, and a revocation after the anchor is reported but does not fail.
func (e *auditEnv) verifyLive() {
	t := e.t
	resp, err := http.Get("http://" + e.G.HTTPAddr() + "/v1/records/1/proof")
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
	trust, err := evidence.ExportTrustFromHome(e.Node.Home)
	if err != nil {
		t.Fatal(err)
	}
	if err := evidence.WriteTrustFile(trustPath, trust); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bundle, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runCLI(t, "verify", bundle, "--trust", trustPath, "--ledger", e.Node.RPC)
	if code != 0 || !strings.Contains(out, "✓ live: device status: active") || !strings.Contains(out, "✓ live: batch on the ledger") {
		t.Fatalf("verify --ledger: exit %d\n%s", code, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.Client.Submit(ctx, ledgertest.RevokeDeviceTx(t, e.LGW.Signer, e.Devices[0].DID(), "stolen")); err != nil {
		t.Fatal(err)
	}
	out, code = runCLI(t, "verify", bundle, "--trust", trustPath, "--ledger", e.Node.RPC)
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
	e.Cut()
	out, code, fs := e.audit()
	if code != 1 || len(fs) != 1 || fs[0].Kind != "sequence_gap" || !strings.Contains(fs[0].Detail, string(e.Devices[1].DID())+": seq jumps from 1 to 3") {
		t.Fatalf("open gap: exit %d, findings %v\n%s", code, fs, out)
	}

	// Device 1 sends seq 2 again: stored as a late fill, after seq 3.
	d := e.Devices[1]
	body, err := device.NewBody(d.DID(), 2, time.Now(), "env.dust", map[string]any{"pm25_ugm3": 10.5, "pm10_ugm3": 30.0, "noise_dba": 55.0})
	if err != nil {
		t.Fatal(err)
	}
	env, err := device.Seal(d, body)
	if err != nil {
		t.Fatal(err)
	}
	fill, err := e.G.Store().Append(context.Background(), store.Pending{
		DID: d.DID(), Seq: 2, Kind: "env.dust", Envelope: env, EnvHash: anchor.SM3(env)})
	if err != nil {
		t.Fatalf("late fill: %v", err)
	}
	e.add(0, 0)
	e.Cut()
	out, code, fs = e.audit()
	if code != 0 || len(fs) != 0 || !strings.Contains(out, "checked 2 batches, 5 records, 2 devices") {
		t.Fatalf("after the late fill (gseq %d): exit %d, findings %v\n%s", fill.GSeq, code, fs, out)
	}

	// Its proof bundle, fetched by device and seq, verifies offline.
	resp, err := http.Get(fmt.Sprintf("http://%s/v1/devices/%s/records/2/proof", e.G.HTTPAddr(), d.DID()))
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
	trust, err := evidence.ExportTrustFromHome(e.Node.Home)
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
