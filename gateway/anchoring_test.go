package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cometbft/cometbft/privval"
	cmttypes "github.com/cometbft/cometbft/types"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
	"github.com/edgeanchor/edgeanchor/gateway/batch"
	"github.com/edgeanchor/edgeanchor/gateway/httpapi"
	"github.com/edgeanchor/edgeanchor/gateway/store"
	"github.com/edgeanchor/edgeanchor/ledger"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// anEnv is a real single-validator ledger, a real gateway (mochi broker,
// Badger store, batcher, anchorer, HTTP API) whose key is a genesis member,
// and devices registered on the ledger.
type anEnv struct {
	t    *testing.T
	home string // the (first) validator's home
	rpc  string
	// cluster is set when the ledger runs as an OS process (outage tests).
	cluster *ledgertest.Cluster
	lgw     *ledgertest.Gateway
	client  *ledgerclient.Client
	g       *Gateway
	an      *batch.Anchoring
	devs    []*anDevice
	cancel  context.CancelFunc
	done    chan error
}

type anDevice struct {
	key *device.KeySigner
	c   paho.Client
	seq uint64

	mu       sync.Mutex
	receipts []store.ReceiptMessage
}

// anStart starts the ledger (in process, or with validators > 0 as that
// many OS processes that can be killed), the gateway (speaking to validator
// 0) and ndev registered devices.
func anStart(t *testing.T, ndev int, interval time.Duration, validators int) *anEnv {
	t.Helper()
	lgw := ledgertest.NewGateway(t, "site-a")
	e := &anEnv{t: t, lgw: lgw}
	process := validators > 0
	if process {
		e.cluster = ledgertest.StartCluster(t, validators)
		e.home, e.rpc = e.cluster.Homes[0], e.cluster.RPC(0)
	} else {
		node := ledgertest.Start(t, ledgertest.Options{Gateways: []*ledgertest.Gateway{lgw}, Logger: slog.New(slog.DiscardHandler)})
		e.home, e.rpc = node.Home, node.RPC
	}
	client, err := ledgerclient.NewClient(e.rpc, ledgerclient.ClientOptions{Retries: 2, Backoff: 50 * time.Millisecond, RequestTimeout: 2 * time.Second, CommitTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	e.client = client
	reg := broker.NewStaticRegistry()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if process {
		if _, err := client.Submit(ctx, lgw.RegisterTx(t, e.cluster.Committee)); err != nil {
			t.Fatalf("register gateway: %v", err)
		}
	}
	for range ndev {
		key, tx := lgw.NewDevice(t, "env")
		if _, err := client.Submit(ctx, tx); err != nil {
			t.Fatalf("register device: %v", err)
		}
		reg.Put(broker.DeviceInfo{DID: key.DID(), Pub: key.Public(), Kind: "env", Site: "site-a"})
		e.devs = append(e.devs, &anDevice{key: key})
	}
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.KeyPath = "unused-signer-given"
	cfg.MQTT = MQTTConfig{TCP: "127.0.0.1:0"}
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Limits.DeviceRate = 0
	cfg.LedgerRPC = e.rpc
	cfg.BatchInterval = interval
	cfg.BatchSize = 10_000
	prom := prometheus.NewRegistry()
	g, err := New(cfg, Deps{Logger: itLogger(), Registerer: prom, Gatherer: prom, Signer: lgw.Signer, Registry: reg, Ledger: client})
	if err != nil {
		t.Fatal(err)
	}
	e.an = g.Anchoring()
	e.g = g
	runCtx, runCancel := context.WithCancel(context.Background())
	e.cancel, e.done = runCancel, make(chan error, 1)
	go func() { e.done <- g.Run(runCtx) }()
	waitFor(t, 10*time.Second, "broker up", g.Broker().Up)
	t.Cleanup(e.stop)
	for _, d := range e.devs {
		e.connect(d)
	}
	return e
}

func (e *anEnv) stop() {
	if e.cancel == nil {
		return
	}
	for _, d := range e.devs {
		if d.c != nil {
			d.c.Disconnect(0)
		}
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("gateway Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		e.t.Errorf("gateway did not stop within 20 s; goroutines:\n%s", goroutines())
	}
}

func (e *anEnv) connect(d *anDevice) {
	e.t.Helper()
	pw, err := credential.MakeConnect(d.key, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	o := paho.NewClientOptions().AddBroker("tcp://" + e.g.Broker().Addr("tcp")).SetClientID(string(d.key.DID())).
		SetUsername(string(d.key.DID())).SetPassword(pw).SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		e.t.Fatalf("connect %s: %v", d.key.DID(), tok.Error())
	}
	tok := c.Subscribe(broker.ReceiptTopic(d.key.DID()), 1, func(_ paho.Client, m paho.Message) {
		var rm store.ReceiptMessage
		if json.Unmarshal(m.Payload(), &rm) == nil {
			d.mu.Lock()
			d.receipts = append(d.receipts, rm)
			d.mu.Unlock()
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		e.t.Fatalf("subscribe: %v", tok.Error())
	}
	d.c = c
}

// publish sends the device's next reading with QoS 1 and waits for the
// PUBACK (the record is on disk).
func (e *anEnv) publish(d *anDevice) error {
	d.seq++
	body, err := device.NewBody(d.key.DID(), d.seq, time.Now(), "env.dust", map[string]any{"pm25_ugm3": 8.25, "pm10_ugm3": 20.5, "noise_dba": 61.5})
	if err != nil {
		return err
	}
	env, err := device.Seal(d.key, body)
	if err != nil {
		return err
	}
	tok := d.c.Publish(broker.UpTopic(d.key.DID()), 1, false, env)
	if !tok.WaitTimeout(10 * time.Second) {
		return errors.New("publish: no PUBACK in 10s")
	}
	return tok.Error()
}

// burst makes every device publish n readings with QoS 1 without waiting
// for each PUBACK, then waits for them all.
func (e *anEnv) burst(n int) {
	e.t.Helper()
	var toks []paho.Token
	for i := 0; i < n; i++ {
		for _, d := range e.devs {
			d.seq++
			body, err := device.NewBody(d.key.DID(), d.seq, time.Now(), "env.dust", map[string]any{"pm25_ugm3": 8.25, "pm10_ugm3": 20.5, "noise_dba": 61.5})
			if err != nil {
				e.t.Fatal(err)
			}
			env, err := device.Seal(d.key, body)
			if err != nil {
				e.t.Fatal(err)
			}
			toks = append(toks, d.c.Publish(broker.UpTopic(d.key.DID()), 1, false, env))
		}
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			e.t.Fatalf("burst publish: %v", tok.Error())
		}
	}
}

// waitAnchored waits until every stored record's batch is committed.
func (e *anEnv) waitAnchored(d time.Duration) {
	e.t.Helper()
	waitFor(e.t, d, "all records anchored", func() bool {
		last := e.g.Store().LastGSeq()
		if last == 0 {
			return false
		}
		sb, err := e.an.Batches.ByGSeq(last)
		return err == nil && sb.Anchor != nil
	})
}

func (e *anEnv) trust() *evidence.Trust {
	e.t.Helper()
	tr, err := evidence.ExportTrustFromHome(e.home)
	if err != nil {
		e.t.Fatal(err)
	}
	return tr
}

func (e *anEnv) get(path string) (int, []byte) {
	e.t.Helper()
	resp, err := http.Get("http://" + e.g.HTTPAddr() + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, b
}

// checkLedgerChain compares every stored batch with the ledger's copy and
// returns the number of batches.
func (e *anEnv) checkLedgerChain() int {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := 0
	for seq := uint64(1); ; seq++ {
		sb, err := e.an.Batches.Get(seq)
		if errors.Is(err, batch.ErrNotFound) {
			break
		}
		if err != nil {
			e.t.Fatal(err)
		}
		br, err := e.client.Batch(ctx, e.lgw.DID(), seq)
		if err != nil {
			e.t.Fatalf("batch %d on the ledger: %v", seq, err)
		}
		if br.Hash != sb.Hash || sb.Anchor == nil || br.Height != sb.Anchor.Height {
			e.t.Fatalf("batch %d: ledger hash %s height %d, stored %s %+v", seq, br.Hash, br.Height, sb.Hash, sb.Anchor)
		}
		n++
	}
	last, err := e.client.LastBatch(ctx, e.lgw.DID())
	if err != nil || last.Seq != uint64(n) {
		e.t.Fatalf("ledger's last batch %v (%v), want %d", last, err, n)
	}
	return n
}

func TestEndToEndBundleVerifiesOffline(t *testing.T) {
	e := anStart(t, 2, 200*time.Millisecond, 0)
	// gseq 1..10: one record at a time (commit groups of one).
	for range 5 {
		for _, d := range e.devs {
			if err := e.publish(d); err != nil {
				t.Fatal(err)
			}
		}
	}
	// gseq 11..30: both devices publish 10 each without waiting for the
	// PUBACKs, so that commit groups of several records form.
	e.burst(10)
	const total = 30
	e.waitAnchored(30 * time.Second)
	if e.g.Store().LastGSeq() != total {
		t.Fatalf("stored %d records, want %d", e.g.Store().LastGSeq(), total)
	}
	nb := e.checkLedgerChain()
	checkChain(t, e.g.Store(), e.an.Batches, e.lgw.Signer)

	// Every device gets the receipt of each of its records, then the
	// anchored notice; every message verifies under the gateway's key.
	for _, d := range e.devs {
		waitFor(t, 10*time.Second, "anchored receipts", func() bool {
			d.mu.Lock()
			defer d.mu.Unlock()
			n := 0
			for _, r := range d.receipts {
				if r.Batch > 0 && r.Height > 0 && r.TX != "" {
					n++
				}
			}
			return n == total/2
		})
		d.mu.Lock()
		receipts := slices.Clone(d.receipts)
		d.mu.Unlock()
		seqs := map[uint64]int{}
		for _, m := range receipts {
			msg, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			r, err := store.VerifyReceipt(msg, e.lgw.Signer.Public())
			if err != nil || r.DID != d.key.DID() || m.Group == nil {
				t.Fatalf("receipt message %s: %+v, %v", msg, r, err)
			}
			seqs[r.Seq]++
		}
		if len(seqs) != total/2 {
			t.Fatalf("receipts for %d seqs, want %d", len(seqs), total/2)
		}
	}

	trust := e.trust()
	var grouped uint64 // a record in a commit group of 3+ with a path of 2+
	for gseq := uint64(1); gseq <= total; gseq++ {
		code, body := e.get(fmt.Sprintf("/v1/records/%d/proof", gseq))
		if code != http.StatusOK {
			t.Fatalf("proof of %d: %d %s", gseq, code, body)
		}
		b, err := evidence.ParseBundle(body)
		if err != nil {
			t.Fatal(err)
		}
		var steps []string
		v, err := b.Verify(trust, func(step, _ string, err error) {
			if err == nil {
				steps = append(steps, step)
			}
		})
		if err != nil {
			t.Fatalf("bundle %d: %v", gseq, err)
		}
		if len(steps) != len(evidence.Steps)+1 || steps[0] != evidence.StepTrustFile {
			t.Fatalf("bundle %d: steps passed %v, want the trust file and %d steps", gseq, steps, len(evidence.Steps))
		}
		if v.Record.GSeq != gseq || v.AnchorHeight == 0 || v.Header.Seq == 0 || v.Header.Seq > uint64(nb) {
			t.Fatalf("bundle %d: verified %+v", gseq, v)
		}
		g, err := anchor.ParseReceiptGroup(b.Receipt.Group)
		if err != nil {
			t.Fatalf("bundle %d: %v", gseq, err)
		}
		if gseq <= 10 && (g.First != gseq || g.Count != 1 || len(b.Receipt.Path) != 0) {
			t.Fatalf("bundle %d: group %+v path %v, want a group of one", gseq, g, b.Receipt.Path)
		}
		if grouped == 0 && g.Count >= 3 && len(b.Receipt.Path) >= 2 {
			grouped = gseq
		}
	}
	t.Logf("first record in a commit group of 3+: gseq %d", grouped)
	// EDGEANCHOR_UPDATE_GOLDEN=1 refreshes testdata/bundles: bundle.json is
	// a record of a commit group of 3+ records, bundle-other-device.json
	// gseq 1 (a group of one), trust.json the chain's trust. Package anchor/evidence
	// (tampering, fuzzing) and the verify command's test use a copy of them
	// in anchor/evidence/testdata, which TestGoldenBundleCopies keeps identical.
	if os.Getenv("EDGEANCHOR_UPDATE_GOLDEN") != "" {
		if grouped == 0 {
			t.Fatal("no commit group of 3+ records formed: run again")
		}
		for file, gseq := range map[string]uint64{"bundle.json": grouped, "bundle-other-device.json": 1} {
			_, body := e.get(fmt.Sprintf("/v1/records/%d/proof", gseq))
			if err := os.WriteFile(filepath.Join(goldenBundles, file), body, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := evidence.WriteTrustFile(filepath.Join(goldenBundles, "trust.json"), trust); err != nil {
			t.Fatal(err)
		}
	}
	// By device and seq: the same record.
	d := e.devs[1]
	code, body := e.get(fmt.Sprintf("/v1/devices/%s/records/3/proof", d.key.DID()))
	if code != http.StatusOK {
		t.Fatalf("proof by device: %d %s", code, body)
	}
	b, err := evidence.ParseBundle(body)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := b.Verify(trust, nil); err != nil || v.Record.DID != d.key.DID() || v.Record.Seq != 3 {
		t.Fatalf("by device: %+v %v", v, err)
	}
	for path, want := range map[string]int{
		"/v1/records/99/proof":                                     http.StatusNotFound,
		"/v1/records/0/proof":                                      http.StatusBadRequest,
		"/v1/devices/did:ea:00/records/1/proof":                    http.StatusBadRequest,
		"/v1/records?from_gseq=5&to_gseq=2":                        http.StatusBadRequest,
		"/v1/records?from_gseq=1&to_gseq=20000":                    http.StatusBadRequest,
		"/v1/devices/" + string(d.key.DID()) + "/records/77/proof": http.StatusNotFound,
	} {
		if code, body := e.get(path); code != want {
			t.Errorf("GET %s = %d %s, want %d", path, code, body, want)
		}
	}
	code, body = e.get(fmt.Sprintf("/v1/records?from_gseq=1&to_gseq=%d", total))
	var ra httpapi.RangeAnswer
	if code != http.StatusOK || json.Unmarshal(body, &ra) != nil || len(ra.Records) != total || ra.LastGSeq != total {
		t.Fatalf("range: %d %s", code, body)
	}
	checker := &anchor.ReceiptChecker{Pub: e.lgw.Signer.Public()}
	groups := map[string]bool{}
	for i, r := range ra.Records {
		if r.GSeq != uint64(i+1) || len(r.Salt) != anchor.SaltSize {
			t.Fatalf("range record %d: %+v", i, r)
		}
		if _, err := checker.Verify(r.Receipt, r.Group, r.Path, r.ReceiptSig); err != nil {
			t.Fatalf("range record %d: %v", i, err)
		}
		groups[string(r.Group)] = true
	}
	if checker.SignaturesVerified() != len(groups) {
		t.Fatalf("%d signatures verified for %d commit groups", checker.SignaturesVerified(), len(groups))
	}
}

// TestLedgerOutageUnderLoad stops the ledger for 20 s while devices keep
// publishing: ingest goes on, batches pile up in the outbox, and once the
// ledger is back the backlog is anchored in order with nothing lost or
// duplicated.
func TestLedgerOutageUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("20 s ledger outage")
	}
	e := anStart(t, 2, 500*time.Millisecond, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	acked := make([]uint64, len(e.devs))
	loadErr := make(chan error, len(e.devs))
	for i, d := range e.devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(50 * time.Millisecond) // 20 readings/s per device
			defer tick.Stop()
			for n := 0; n < 1500; n++ { // bounded: at most 75 s of load
				select {
				case <-loadCtx.Done():
					return
				case <-tick.C:
				}
				if err := e.publish(d); err != nil {
					loadErr <- fmt.Errorf("device %d seq %d: %w", i, d.seq, err)
					return
				}
				acked[i] = d.seq
			}
		}()
	}
	waitFor(t, 20*time.Second, "first anchor", func() bool { s, _ := e.an.Batches.AnchoredSeq(); return s > 0 })

	e.cluster.Kill(0) // kill -9
	stoppedAt := e.g.Store().LastGSeq()
	anchoredAtStop, _ := e.an.Batches.AnchoredSeq()
	// The outage lasts until its effects show (at least 15 s of anchor
	// lag), however slow the machine, rather than for a fixed time.
	waitFor(t, 60*time.Second, "15 s of outage with ingest going on", func() bool {
		return e.g.Store().LastGSeq()-stoppedAt >= 200 && prometheusValue(t, e.an.Metrics.AnchorLag) >= 15 &&
			prometheusValue(t, e.an.Metrics.OutboxDepth) >= 10
	})
	storedDuring := e.g.Store().LastGSeq() - stoppedAt
	anchoredDuring, _ := e.an.Batches.AnchoredSeq()
	// The gauges are set at each anchorer tick, so the one read now may
	// predate the last records stored: wait for a refresh that counts them.
	waitFor(t, 30*time.Second, "unanchored gauge counting the records stored during the outage", func() bool {
		return prometheusValue(t, e.an.Metrics.Unanchored) >= float64(storedDuring)
	})
	outbox := prometheusValue(t, e.an.Metrics.OutboxDepth)
	unanchored := prometheusValue(t, e.an.Metrics.Unanchored)
	lag := prometheusValue(t, e.an.Metrics.AnchorLag)
	if storedDuring < 200 {
		t.Errorf("only %d records stored during the outage: ingest must go on", storedDuring)
	}
	if anchoredDuring != anchoredAtStop {
		t.Errorf("anchored seq moved from %d to %d with the ledger down", anchoredAtStop, anchoredDuring)
	}
	if outbox < 10 || unanchored < float64(storedDuring) || lag < 15 {
		t.Errorf("during the outage: outbox %v, unanchored %v (stored %d), lag %vs", outbox, unanchored, storedDuring, lag)
	}
	if errs := prometheusValue(t, e.an.Metrics.SubmitErrors.WithLabelValues("unreachable")); errs < 1 {
		t.Errorf("no unreachable submit errors counted")
	}

	e.cluster.Start(0)
	// The load goes on until the restarted ledger anchors again.
	waitFor(t, 60*time.Second, "anchoring resumed", func() bool { s, _ := e.an.Batches.AnchoredSeq(); return s > anchoredDuring })
	stopLoad()
	wg.Wait()
	close(loadErr)
	for err := range loadErr {
		t.Fatal(err)
	}
	e.waitAnchored(60 * time.Second)

	// Count and sequence check: every acknowledged reading is stored once,
	// device sequences have no gap and no duplicate, gseq is contiguous,
	// and the ledger holds exactly the stored chain.
	var total uint64
	for i, d := range e.devs {
		recs, err := e.g.Store().DeviceRecords(d.key.DID(), 1, ^uint64(0), 100_000)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(recs)) != acked[i] {
			t.Fatalf("device %d: %d records stored, %d acknowledged", i, len(recs), acked[i])
		}
		for j, r := range recs {
			if r.Seq != uint64(j+1) {
				t.Fatalf("device %d: record %d has seq %d", i, j, r.Seq)
			}
		}
		total += acked[i]
	}
	if got := e.g.Store().LastGSeq(); got != total {
		t.Fatalf("last gseq %d, %d readings acknowledged", got, total)
	}
	chain := checkChain(t, e.g.Store(), e.an.Batches, e.lgw.Signer)
	if n := e.checkLedgerChain(); n != len(chain) {
		t.Fatalf("ledger has %d batches, store %d", n, len(chain))
	}
	if chain[len(chain)-1].Last != total {
		t.Fatalf("batches cover up to %d of %d records", chain[len(chain)-1].Last, total)
	}
	t.Logf("outage: %d records stored while the ledger was down; %d batches, %d records anchored in total", storedDuring, len(chain), total)
}

func prometheusValue(t testing.TB, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

// TestAnchoringSurvivesLostValidator: with four validators, losing one
// (kill -9) leaves 3/4 of the voting power; anchoring goes on, and every
// bundle still verifies against the consortium's trusted set.
func TestAnchoringSurvivesLostValidator(t *testing.T) {
	if testing.Short() {
		t.Skip("four validator processes")
	}
	e := anStart(t, 1, 300*time.Millisecond, 4)
	d := e.devs[0]
	for range 3 {
		if err := e.publish(d); err != nil {
			t.Fatal(err)
		}
	}
	e.waitAnchored(30 * time.Second)
	e.cluster.Kill(3)
	before, _ := e.an.Batches.AnchoredSeq()
	for range 3 {
		if err := e.publish(d); err != nil {
			t.Fatal(err)
		}
		// One batch each: the next reading waits until this one is batched.
		last := e.g.Store().LastGSeq()
		waitFor(t, 10*time.Second, "reading batched", func() bool { _, err := e.an.Batches.ByGSeq(last); return err == nil })
	}
	e.waitAnchored(60 * time.Second)
	after, _ := e.an.Batches.AnchoredSeq()
	if after <= before {
		t.Fatalf("no batch anchored after losing a validator (%d → %d)", before, after)
	}
	e.checkLedgerChain()
	trust := e.trust()
	code, body := e.get("/v1/records/6/proof")
	if code != http.StatusOK {
		t.Fatalf("proof: %d %s", code, body)
	}
	b, err := evidence.ParseBundle(body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Verify(trust, nil); err != nil {
		t.Fatalf("bundle anchored with a validator down: %v", err)
	}
	// The killed validator's vote is absent from the commit (a slow one's
	// may be too; Verify proved +2/3 signed).
	conf, err := ledger.LoadConfig(e.cluster.Homes[3])
	if err != nil {
		t.Fatal(err)
	}
	killed := privval.LoadFilePVEmptyState(conf.PrivValidatorKeyFile(), "").GetAddress()
	sigs := b.Anchor.Header.Commit.Signatures
	found := false
	for _, s := range sigs {
		if bytes.Equal(s.ValidatorAddress, killed) {
			t.Fatalf("the killed validator signed the anchor's block")
		}
	}
	for i, v := range b.Anchor.Validators.Validators {
		if bytes.Equal(v.Address, killed) {
			found = sigs[i].BlockIDFlag == cmttypes.BlockIDFlagAbsent
		}
	}
	if len(sigs) != 4 || !found {
		t.Fatalf("commit has %d signature slots; the killed validator's must be absent", len(sigs))
	}
}

// goldenBundles holds the bundles and trust file that
// TestEndToEndBundleVerifiesOffline writes with EDGEANCHOR_UPDATE_GOLDEN=1.
const goldenBundles = "testdata/bundles"

// TestGoldenBundleCopies: package anchor/evidence checks a copy of the gateway's
// golden bundles offline (it cannot run a gateway); the copy must be these
// bytes. After EDGEANCHOR_UPDATE_GOLDEN=1, `make golden` copies them over.
func TestGoldenBundleCopies(t *testing.T) {
	for _, file := range []string{"bundle.json", "bundle-other-device.json", "trust.json"} {
		ours, err := os.ReadFile(filepath.Join(goldenBundles, file))
		if err != nil {
			t.Fatal(err)
		}
		copied, err := os.ReadFile(filepath.Join("..", "anchor", "evidence", "testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ours, copied) {
			t.Errorf("anchor/evidence/testdata/%s differs from gateway/%s/%s: run make golden (or copy it over)", file, goldenBundles, file)
		}
	}
}

// checkChain checks the batch log of a gateway's store: each batch
// continues the previous one, its header is signed by gw and is its
// transaction's body, and its root is that of its records; it returns the
// batches.
func checkChain(t testing.TB, st *store.Store, blog *batch.Log, gw device.Signer) []*batch.Batch {
	t.Helper()
	var out []*batch.Batch
	prev, next := anchor.ZeroHash, uint64(1)
	for seq := uint64(1); ; seq++ {
		sb, err := blog.Get(seq)
		if errors.Is(err, batch.ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		h, err := sb.ParsedHeader()
		if err != nil {
			t.Fatalf("batch %d: %v", seq, err)
		}
		if h.Seq != seq || h.Prev != prev || h.First != next || h.Count == 0 {
			t.Fatalf("batch %d: seq %d prev %s first %d count %d; want prev %s first %d", seq, h.Seq, h.Prev, h.First, h.Count, prev, next)
		}
		if !device.VerifySignature(gw.Public(), sb.Header, sb.Sig) {
			t.Fatalf("batch %d: header signature does not verify", seq)
		}
		tx, err := anchor.DecodeTx(sb.Tx)
		if err != nil || string(tx.Body) != string(sb.Header) || string(tx.Sig) != string(sb.Sig) || tx.Signer != gw.DID() {
			t.Fatalf("batch %d: tx is not the signed header (%v)", seq, err)
		}
		var leaves []anchor.Hash
		if err := st.Range(h.First, h.Last, func(r *store.Record) error {
			leaves = append(leaves, anchor.LeafHash(r.Salt, r.Receipt))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if uint64(len(leaves)) != h.Count || anchor.MerkleRoot(leaves) != h.Root {
			t.Fatalf("batch %d: root does not match its %d records", seq, len(leaves))
		}
		prev, next = h.Hash(), h.Last+1
		out = append(out, sb)
	}
	return out
}
