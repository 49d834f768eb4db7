package batch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testKey makes a fresh SM2 signer.
func testKey(t testing.TB) *device.KeySigner {
	t.Helper()
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return device.NewKeySigner(priv)
}

// batchEnv is a real Store in a temp dir plus the gateway's key.
type batchEnv struct {
	dir   string
	gw    *device.KeySigner
	store *store.Store
	blog  *Log
	dev   *device.KeySigner
	seq   uint64
}

func newBatchEnv(t testing.TB) *batchEnv {
	t.Helper()
	e := &batchEnv{dir: t.TempDir(), gw: testKey(t), dev: testKey(t)}
	e.open(t)
	return e
}

func (e *batchEnv) open(t testing.TB) {
	t.Helper()
	s, err := store.Open(e.dir, store.Options{Signer: e.gw, Logger: discardLog(), Claims: Claims()})
	if err != nil {
		t.Fatal(err)
	}
	e.store = s
	e.blog = NewLog(s.DB(), "b/")
	t.Cleanup(func() { _ = s.Close() })
}

func (e *batchEnv) reopen(t testing.TB) {
	t.Helper()
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	e.open(t)
}

// add stores n signed envelopes of the env device.
func (e *batchEnv) add(t testing.TB, n int) {
	t.Helper()
	for range n {
		e.seq++
		body, err := device.NewBody(e.dev.DID(), e.seq, time.Now(), "env.dust", map[string]any{"pm10": 12.5, "pm25": 3.0})
		if err != nil {
			t.Fatal(err)
		}
		env, err := device.Seal(e.dev, body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Append(context.Background(), store.Pending{
			DID: e.dev.DID(), Seq: e.seq, Kind: "env.dust", Envelope: env, EnvHash: anchor.SM3(env),
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *batchEnv) batcher(t testing.TB, interval time.Duration, size int, onBatch func(*Batch)) (*Batcher, *Metrics) {
	t.Helper()
	m := NewMetrics(prometheus.NewRegistry())
	b, err := NewBatcher(e.store, e.blog, BatcherConfig{
		Interval: interval, MaxRecords: size, Signer: e.gw, OnBatch: onBatch, Log: discardLog(), Metrics: m,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b, m
}

// checkChain verifies every stored batch: contiguous gseq from 1, chained
// prev hashes, signature, root recomputed from the records.
func checkChain(t testing.TB, e *batchEnv) []*Batch {
	t.Helper()
	var out []*Batch
	prev, next := anchor.ZeroHash, uint64(1)
	for seq := uint64(1); ; seq++ {
		sb, err := e.blog.Get(seq)
		if errors.Is(err, ErrNotFound) {
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
		if !device.VerifySignature(e.gw.Public(), sb.Header, sb.Sig) {
			t.Fatalf("batch %d: header signature does not verify", seq)
		}
		tx, err := anchor.DecodeTx(sb.Tx)
		if err != nil || string(tx.Body) != string(sb.Header) || string(tx.Sig) != string(sb.Sig) || tx.Signer != e.gw.DID() {
			t.Fatalf("batch %d: tx is not the signed header (%v)", seq, err)
		}
		var leaves []anchor.Hash
		if err := e.store.Range(h.First, h.Last, func(r *store.Record) error {
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

func TestBatcherCutsBySizeAndNeverEmpty(t *testing.T) {
	e := newBatchEnv(t)
	b, m := e.batcher(t, time.Hour, 10, nil)
	if _, err := b.CutNow(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty store: CutNow = %v, want ErrNotFound", err)
	}
	e.add(t, 25)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	// Interval is an hour: only the size trigger can cut, so 2 full batches
	// of 10 and the 5 left wait. Five more make a third full batch, which
	// must be exactly 21..30: had the 5 left been cut on their own (at any
	// moment), it would start elsewhere. No sleep can make that vacuous.
	waitFor(t, 10*time.Second, "two batches", func() bool { return testutil.ToFloat64(m.Batches) >= 2 })
	e.add(t, 5)
	waitFor(t, 10*time.Second, "a third batch", func() bool { return testutil.ToFloat64(m.Batches) >= 3 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	chain := checkChain(t, e)
	if len(chain) != 3 || chain[1].Last != 20 || chain[2].First != 21 || chain[2].Last != 30 {
		t.Fatalf("got batches %v, want 1..10, 11..20, 21..30", chain)
	}
	if _, err := b.CutNow(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("nothing waiting: CutNow = %v, want ErrNotFound", err)
	}
	e.add(t, 5)
	sb, err := b.CutNow()
	if err != nil || sb.First != 31 || sb.Last != 35 {
		t.Fatalf("CutNow = %+v, %v; want 31..35", sb, err)
	}
	if _, err := b.CutNow(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("nothing waiting: CutNow = %v, want ErrNotFound", err)
	}
	if got := testutil.ToFloat64(m.Batches); got != 4 {
		t.Errorf("edgeanchor_batches_total = %v, want 4", got)
	}
	checkChain(t, e)
}

// countingSource counts the batcher's looks at the store (LastGSeq, once
// per loop turn): what shows that it ran, where a test would otherwise
// sleep and hope.
type countingSource struct {
	RecordSource
	calls atomic.Int64
}

func (c *countingSource) LastGSeq() uint64 { c.calls.Add(1); return c.RecordSource.LastGSeq() }

func TestBatcherCutsByTime(t *testing.T) {
	e := newBatchEnv(t)
	var mu sync.Mutex
	var got []*Batch
	src := &countingSource{RecordSource: e.store}
	b, err := NewBatcher(src, e.blog, BatcherConfig{
		Interval: 100 * time.Millisecond, MaxRecords: 10_000, Signer: e.gw, Log: discardLog(),
		Metrics: NewMetrics(prometheus.NewRegistry()),
		OnBatch: func(sb *Batch) {
			mu.Lock()
			got = append(got, sb)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.add(t, 3) // waiting before Run: the first tick takes all three
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	waitFor(t, 10*time.Second, "first timed batch", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 1 })
	// Idle ticks must not cut empty batches: wait until the batcher has
	// looked at the store (every tick and poll does) often enough for
	// several ticks to have passed through it, however slow the machine.
	seen := src.calls.Load()
	waitFor(t, 10*time.Second, "idle ticks", func() bool { return src.calls.Load() >= seen+12 })
	mu.Lock()
	n := len(got)
	mu.Unlock()
	if n != 1 {
		t.Fatalf("%d batches after idle ticks, want 1", n)
	}
	e.add(t, 2)
	waitFor(t, 10*time.Second, "records 4..5 batched", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got[len(got)-1].Last == 5
	})
	cancel()
	<-done
	chain := checkChain(t, e) // contiguous, none empty
	if chain[0].First != 1 || chain[0].Last != 3 || len(chain) < 2 || len(chain) > 3 {
		t.Fatalf("batches %v, want 1..3 then 4..5 (in one or two timed batches)", chain)
	}
}

func TestBatcherResumesAfterRestart(t *testing.T) {
	e := newBatchEnv(t)
	b, _ := e.batcher(t, time.Hour, 100, nil)
	e.add(t, 7)
	if _, err := b.CutNow(); err != nil {
		t.Fatal(err)
	}
	e.add(t, 4) // stored but not batched when the gateway stops
	e.reopen(t)
	b2, _ := e.batcher(t, time.Hour, 100, nil)
	sb, err := b2.CutNow()
	if err != nil {
		t.Fatal(err)
	}
	if sb.Seq != 2 || sb.First != 8 || sb.Last != 11 {
		t.Fatalf("after restart: batch %d covers %d..%d, want 2 covering 8..11", sb.Seq, sb.First, sb.Last)
	}
	chain := checkChain(t, e)
	if len(chain) != 2 {
		t.Fatalf("%d batches, want 2", len(chain))
	}
	got, err := e.blog.ByGSeq(9)
	if err != nil || got.Seq != 2 {
		t.Fatalf("ByGSeq(9) = %v, %v; want batch 2", got, err)
	}
	if _, err := e.blog.ByGSeq(12); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ByGSeq(12) = %v, want ErrNotFound", err)
	}
}

func TestBatchLogRefusesBrokenChain(t *testing.T) {
	e := newBatchEnv(t)
	e.add(t, 4)
	b, _ := e.batcher(t, time.Hour, 2, nil)
	first, err := b.CutNow()
	if err != nil {
		t.Fatal(err)
	}
	h, _ := first.ParsedHeader()
	mk := func(mut func(h *anchor.BatchHeader)) *Batch {
		nh := *h
		nh.Seq, nh.Prev, nh.First, nh.Last, nh.Count = 2, first.Hash, 3, 4, 2
		mut(&nh)
		hb := nh.Encode()
		sig, _ := e.gw.Sign(hb)
		return &Batch{Seq: nh.Seq, First: nh.First, Last: nh.Last, Header: hb, Sig: sig, Hash: anchor.SM3(hb)}
	}
	for name, mut := range map[string]func(h *anchor.BatchHeader){
		"seq skips":  func(h *anchor.BatchHeader) { h.Seq = 3 },
		"wrong prev": func(h *anchor.BatchHeader) { h.Prev = anchor.SM3([]byte("x")) },
		"gseq gap":   func(h *anchor.BatchHeader) { h.First, h.Count = 4, 1 },
	} {
		if err := e.blog.Append(mk(mut), nil); !errors.Is(err, ErrChain) {
			t.Errorf("%s: Append = %v, want ErrChain", name, err)
		}
	}
	if last, _ := e.blog.Last(); last.Seq != 1 {
		t.Fatalf("a refused batch was stored: last is %d", last.Seq)
	}
	if err := e.blog.Append(mk(func(*anchor.BatchHeader) {}), nil); err != nil {
		t.Fatalf("the right next batch: %v", err)
	}
}

func waitFor(t testing.TB, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
