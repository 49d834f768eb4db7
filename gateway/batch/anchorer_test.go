package batch

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// chainLedger is an in-memory stand-in for the ledger's batch rules (seq
// and prev must continue the chain, a body is applied once), used only for
// unit tests of the anchorer's bookkeeping; the end-to-end tests run a real
// CometBFT node.
type chainLedger struct {
	mu      sync.Mutex
	down    bool
	batches []*anchor.BatchRecord
	submits int
}

func (l *chainLedger) Submit(_ context.Context, tx []byte) (ledgerclient.TxCommit, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.submits++
	if l.down {
		return ledgerclient.TxCommit{}, fmt.Errorf("%w: connection refused", ledgerclient.ErrUnreachable)
	}
	t, err := anchor.DecodeTx(tx)
	if err != nil {
		return ledgerclient.TxCommit{}, err
	}
	h, err := anchor.ParseHeader(t.Body)
	if err != nil {
		return ledgerclient.TxCommit{}, err
	}
	for _, b := range l.batches {
		if b.Hash == h.Hash() {
			return ledgerclient.TxCommit{}, &ledgerclient.RefusedError{Stage: "check", Code: 9, Log: "duplicate body"}
		}
	}
	prev := anchor.ZeroHash
	if n := len(l.batches); n > 0 {
		prev = l.batches[n-1].Hash
	}
	if h.Seq != uint64(len(l.batches))+1 || h.Prev != prev {
		return ledgerclient.TxCommit{}, &ledgerclient.RefusedError{Stage: "check", Code: 20, Log: "seq or prev does not continue the chain"}
	}
	r := ledgerclient.TxCommit{Height: int64(len(l.batches) + 10), TxHash: hex.EncodeToString(h.Root[:]), Index: 0}
	l.batches = append(l.batches, &anchor.BatchRecord{
		Gateway: h.Gateway, Seq: h.Seq, Header: t.Body, Sig: t.Sig, Hash: h.Hash(), Root: h.Root,
		First: h.First, Last: h.Last, Height: r.Height, Tx: r.TxHash,
	})
	return r, nil
}

func (l *chainLedger) Batch(_ context.Context, _ device.DID, seq uint64) (*anchor.BatchRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return nil, ledgerclient.ErrUnreachable
	}
	if seq == 0 || seq > uint64(len(l.batches)) {
		return nil, ledgerclient.ErrNotFound
	}
	return l.batches[seq-1], nil
}

func (l *chainLedger) LastBatch(ctx context.Context, gw device.DID) (*anchor.BatchRecord, error) {
	l.mu.Lock()
	n := len(l.batches)
	l.mu.Unlock()
	return l.Batch(ctx, gw, uint64(n))
}

func (l *chainLedger) setDown(v bool) { l.mu.Lock(); l.down = v; l.mu.Unlock() }

func (l *chainLedger) count() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.batches) }

type published struct {
	mu   sync.Mutex
	msgs map[string][]store.ReceiptMessage
}

func (p *published) publish(topic string, payload []byte) error {
	var m store.ReceiptMessage
	if err := json.Unmarshal(payload, &m); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.msgs == nil {
		p.msgs = map[string][]store.ReceiptMessage{}
	}
	p.msgs[topic] = append(p.msgs[topic], m)
	return nil
}

func (e *batchEnv) anchorer(t testing.TB, l AnchorLedger, pub func(string, []byte) error) (*Anchorer, *Metrics) {
	t.Helper()
	m := NewMetrics(prometheus.NewRegistry())
	a, err := NewAnchorer(e.blog, e.store, l, AnchorerConfig{
		Gateway: e.gw.DID(), Publish: pub, Log: discardLog(), Metrics: m,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, AlarmBackoff: 50 * time.Millisecond,
		Tick: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return a, m
}

func runAnchorer(t testing.TB, a *Anchorer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("anchorer Run = %v", err)
		}
	}
}

func TestAnchorerAnchorsInOrderAndNotifiesDevices(t *testing.T) {
	e := newBatchEnv(t)
	b, _ := e.batcher(t, time.Hour, 3, nil)
	e.add(t, 7)
	for range 3 {
		if _, err := b.CutNow(); err != nil {
			t.Fatal(err)
		}
	}
	l := &chainLedger{}
	var pub published
	a, m := e.anchorer(t, l, pub.publish)
	stop := runAnchorer(t, a)
	waitFor(t, 10*time.Second, "3 anchors", func() bool { s, _ := e.blog.AnchoredSeq(); return s == 3 })
	stop()
	if l.count() != 3 {
		t.Fatalf("ledger has %d batches, want 3", l.count())
	}
	for seq := uint64(1); seq <= 3; seq++ {
		sb, _ := e.blog.Get(seq)
		if sb.Anchor == nil || sb.Anchor.Height != int64(seq+9) {
			t.Fatalf("batch %d: anchor %+v", seq, sb.Anchor)
		}
	}
	pub.mu.Lock()
	msgs := pub.msgs["ea/v1/dev/"+string(e.dev.DID())+"/receipt"]
	pub.mu.Unlock()
	if len(msgs) != 7 {
		t.Fatalf("%d anchored receipts published, want 7", len(msgs))
	}
	for i, msg := range msgs {
		r, err := store.VerifyReceipt(baJSON(t, msg), e.gw.Public())
		if err != nil || r.GSeq != uint64(i+1) || msg.Batch != uint64(i/3+1) || msg.Height == 0 || msg.TX == "" {
			t.Fatalf("notice %d: %+v %v", i, msg, err)
		}
	}
	if got := testutil.ToFloat64(m.Unanchored); got != 0 {
		t.Errorf("unanchored = %v, want 0", got)
	}
	if got := testutil.ToFloat64(m.OutboxDepth); got != 0 {
		t.Errorf("outbox depth = %v, want 0", got)
	}
	if got := testutil.CollectAndCount(m.SubmitTime); got != 1 {
		t.Errorf("submit histogram series = %d", got)
	}
}

func baJSON(t testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAnchorerRetriesWhileLedgerDown(t *testing.T) {
	e := newBatchEnv(t)
	b, _ := e.batcher(t, time.Hour, 2, nil)
	l := &chainLedger{down: true}
	a, m := e.anchorer(t, l, nil)
	stop := runAnchorer(t, a)
	defer stop()
	e.add(t, 4)
	b.CutNow()
	b.CutNow()
	a.Wake()
	waitFor(t, 10*time.Second, "submit errors", func() bool {
		return testutil.ToFloat64(m.SubmitErrors.WithLabelValues("unreachable")) >= 3
	})
	waitFor(t, 10*time.Second, "outbox depth 2", func() bool { return testutil.ToFloat64(m.OutboxDepth) == 2 })
	if got := testutil.ToFloat64(m.Unanchored); got != 4 {
		t.Errorf("unanchored = %v, want 4", got)
	}
	if l.count() != 0 {
		t.Fatal("ledger down but batches landed")
	}
	l.setDown(false)
	waitFor(t, 10*time.Second, "backlog anchored", func() bool { s, _ := e.blog.AnchoredSeq(); return s == 2 })
	if l.count() != 2 {
		t.Fatalf("ledger has %d batches, want 2", l.count())
	}
}

// A crash after the ledger committed a header but before its receipt was
// stored: on restart the anchorer finds it with LastBatch/Batch and records
// it instead of submitting it again.
func TestAnchorerRecordsCommittedHeaderAfterRestart(t *testing.T) {
	e := newBatchEnv(t)
	b, _ := e.batcher(t, time.Hour, 2, nil)
	e.add(t, 6)
	for range 3 {
		b.CutNow()
	}
	l := &chainLedger{}
	for seq := uint64(1); seq <= 2; seq++ { // committed behind the gateway's back
		sb, _ := e.blog.Get(seq)
		if _, err := l.Submit(context.Background(), sb.Tx); err != nil {
			t.Fatal(err)
		}
	}
	l.submits = 0
	a, _ := e.anchorer(t, l, nil)
	stop := runAnchorer(t, a)
	waitFor(t, 10*time.Second, "3 anchored", func() bool { s, _ := e.blog.AnchoredSeq(); return s == 3 })
	stop()
	if l.count() != 3 {
		t.Fatalf("ledger has %d batches, want 3 (no duplicate, no skip)", l.count())
	}
	if l.submits != 1 {
		t.Fatalf("%d submissions, want 1 (batch 3 only)", l.submits)
	}
	sb, _ := e.blog.Get(1)
	if sb.Anchor == nil || sb.Anchor.Height != 10 {
		t.Fatalf("batch 1 receipt %+v, want height 10 from the ledger", sb.Anchor)
	}
}

// A ledger that refuses the next header (its chain holds a different batch
// 1) is an alarm: counted, logged, retried, never skipped.
func TestAnchorerRefusalIsAlarmNotSkip(t *testing.T) {
	e := newBatchEnv(t)
	b, _ := e.batcher(t, time.Hour, 2, nil)
	e.add(t, 4)
	b.CutNow()
	b.CutNow()
	// The ledger already holds a different batch 1 of this gateway (a
	// store restored from an old backup, say).
	forged := &anchor.BatchHeader{Gateway: e.gw.DID(), Seq: 1, First: 1, Last: 1, Count: 1,
		Root: anchor.SM3([]byte("other")), From: time.Now(), To: time.Now()}
	sig, _ := e.gw.Sign(forged.Encode())
	l := &chainLedger{}
	if _, err := l.Submit(context.Background(), (&anchor.Tx{Body: forged.Encode(), Signer: e.gw.DID(), Sig: sig}).Encode()); err != nil {
		t.Fatal(err)
	}
	a, m := e.anchorer(t, l, nil)
	stop := runAnchorer(t, a)
	waitFor(t, 10*time.Second, "alarms", func() bool {
		return testutil.ToFloat64(m.SubmitErrors.WithLabelValues("chain")) >= 2
	})
	stop()
	if s, _ := e.blog.AnchoredSeq(); s != 0 {
		t.Fatalf("anchored seq %d after a diverged chain, want 0", s)
	}
	if l.count() != 1 {
		t.Fatalf("ledger has %d batches, want only the forged one", l.count())
	}
}

// refusingLedger refuses every submission the way the ledger refuses a
// header whose seq or prev does not continue the chain.
type refusingLedger struct{ chainLedger }

func (l *refusingLedger) Submit(context.Context, []byte) (ledgerclient.TxCommit, error) {
	l.mu.Lock()
	l.submits++
	l.mu.Unlock()
	return ledgerclient.TxCommit{}, &ledgerclient.RefusedError{Stage: "check", Code: 20, Log: "prev does not continue the chain"}
}

func TestAnchorerCountsRefusals(t *testing.T) {
	e := newBatchEnv(t)
	b, _ := e.batcher(t, time.Hour, 2, nil)
	e.add(t, 2)
	b.CutNow()
	l := &refusingLedger{}
	a, m := e.anchorer(t, l, nil)
	stop := runAnchorer(t, a)
	waitFor(t, 10*time.Second, "refusals", func() bool {
		return testutil.ToFloat64(m.SubmitErrors.WithLabelValues("refused")) >= 2
	})
	stop()
	if s, _ := e.blog.AnchoredSeq(); s != 0 {
		t.Fatalf("a refused batch was marked anchored (seq %d)", s)
	}
	if got := testutil.ToFloat64(m.OutboxDepth); got != 1 {
		t.Fatalf("outbox depth %v, want 1: the refused batch stays queued", got)
	}
}
