package batch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// RecordSource is what the batcher, the anchorer and the proof API read of
// the record store (*store.Store implements it). LastGSeq counts only records
// that are durable with no gap below them.
type RecordSource interface {
	// LastGSeq returns the highest gseq stored (0 when empty).
	LastGSeq() uint64
	// Changed returns a channel closed at the next commit of new records.
	Changed() <-chan struct{}
	// Range calls fn for each record with from <= gseq <= to, in gseq
	// order, stopping at the first error fn returns.
	Range(from, to uint64, fn func(*store.Record) error) error
}

var _ RecordSource = (*store.Store)(nil)

// Metrics are the batcher's and anchorer's metrics
// (docs/internals.md, "Metric names").
type Metrics struct {
	Batches      prometheus.Counter
	BatchRecords prometheus.Histogram
	Unanchored   prometheus.Gauge
	AnchorLag    prometheus.Gauge
	OutboxDepth  prometheus.Gauge
	SubmitTime   prometheus.Histogram
	SubmitErrors *prometheus.CounterVec // kind: unreachable, timeout, refused, chain, other
}

// submitErrorKinds are the kind labels of
// edgeanchor_ledger_submit_errors_total (errorKind, and "chain").
var submitErrorKinds = []string{"refused", "unreachable", "timeout", "other", "chain"}

// NewMetrics registers the metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeanchor_batches_total", Help: "Batches cut and stored by the batcher.",
		}),
		BatchRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edgeanchor_batch_records", Help: "Records per batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		Unanchored: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgeanchor_unanchored_records", Help: "Stored records whose batch is not yet committed on the ledger.",
		}),
		AnchorLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgeanchor_anchor_lag_seconds", Help: "Age of the oldest record not yet anchored (0 when all are).",
		}),
		OutboxDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgeanchor_outbox_depth", Help: "Batch headers stored but not yet committed on the ledger.",
		}),
		SubmitTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edgeanchor_ledger_submit_seconds", Help: "Time from submitting an anchor tx to its commit.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}),
		SubmitErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeanchor_ledger_submit_errors_total", Help: "Failed anchor submissions by kind.",
		}, []string{"kind"}),
	}
	reg.MustRegister(m.Batches, m.BatchRecords, m.Unanchored, m.AnchorLag, m.OutboxDepth, m.SubmitTime, m.SubmitErrors)
	for _, k := range submitErrorKinds {
		m.SubmitErrors.WithLabelValues(k) // at 0 until the first error
	}
	return m
}

// Batcher defaults (issue 6).
const (
	DefaultInterval   = time.Second
	DefaultMaxRecords = 10_000
)

// BatcherConfig configures a Batcher.
type BatcherConfig struct {
	// Interval: a batch is cut at least this often when records wait.
	Interval time.Duration
	// MaxRecords: a batch is cut as soon as this many records wait, and
	// never holds more.
	MaxRecords int
	// Signer is the gateway's key.
	Signer device.Signer
	// OnBatch is called (from the batcher's goroutine) after each batch is
	// stored; the gateway wakes the anchorer with it.
	OnBatch func(*Batch)
	Log     *slog.Logger
	Metrics *Metrics
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// Validate names the field that is out of bounds.
func (c *BatcherConfig) Validate() error {
	switch {
	case c.Interval < time.Millisecond:
		return fmt.Errorf("%w: batch interval (%s) must be at least 1ms", ErrConfig, c.Interval)
	case c.MaxRecords < 1 || c.MaxRecords > anchor.MaxTreeSize:
		return fmt.Errorf("%w: batch size (%d) must be within [1, %d]", ErrConfig, c.MaxRecords, anchor.MaxTreeSize)
	case c.Signer == nil:
		return fmt.Errorf("%w: batcher needs the gateway signer", ErrConfig)
	case c.Log == nil || c.Metrics == nil:
		return fmt.Errorf("%w: batcher needs a logger and metrics", ErrConfig)
	}
	return nil
}

// Batcher cuts the stored records into batches: every Interval, or as soon
// as MaxRecords wait, whichever comes first, and never an empty one. Each
// batch's header is chained to the previous one, signed and stored with its
// AnchorBatch tx before anyone sends it. After a restart it continues from
// the last stored header: records after its last gseq go in the next batch.
type Batcher struct {
	src  RecordSource
	log  *Log
	cfg  BatcherConfig
	wake chan struct{}

	// mu guards the chain state: Run and CutNow may both cut.
	mu        sync.Mutex
	seq       uint64
	prev      anchor.Hash
	nextFirst uint64
}

// NewBatcher resumes the chain stored in blog.
func NewBatcher(src RecordSource, blog *Log, cfg BatcherConfig) (*Batcher, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Batcher{src: src, log: blog, cfg: cfg, wake: make(chan struct{}, 1), nextFirst: 1}
	last, err := blog.Last()
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return nil, wrapErr(err, "batcher")
	default:
		b.seq, b.prev, b.nextFirst = last.Seq, last.Hash, last.Last+1
	}
	return b, nil
}

// Notify tells the batcher that records were stored (it never blocks). The
// batcher also polls, so a missed notification only delays a full batch.
func (b *Batcher) Notify() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// pollInterval bounds how long a full batch waits without a Notify.
const pollInterval = 50 * time.Millisecond

// Run cuts batches until ctx is done. A failure to store a batch is logged
// and retried at the next tick; it returns only when ctx is done.
func (b *Batcher) Run(ctx context.Context) error {
	tick := time.NewTicker(b.cfg.Interval)
	defer tick.Stop()
	poll := time.NewTicker(min(pollInterval, b.cfg.Interval))
	defer poll.Stop()
	for {
		timed := false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			timed = true
		case <-poll.C:
		case <-b.wake:
		case <-b.src.Changed():
		}
		for b.cutWaiting(timed) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// Full batches drain at once; a partial one only on a tick.
			timed = false
		}
	}
}

// cutWaiting cuts one batch if MaxRecords wait, or if any wait and timed.
// It reports whether it cut one.
func (b *Batcher) cutWaiting(timed bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	avail := b.src.LastGSeq()
	if avail < b.nextFirst {
		return false
	}
	if avail-b.nextFirst+1 < uint64(b.cfg.MaxRecords) && !timed {
		return false
	}
	if _, err := b.cut(min(avail, b.nextFirst+uint64(b.cfg.MaxRecords)-1)); err != nil {
		b.cfg.Log.Error("batch not stored; retrying", "first", b.nextFirst, "error", err)
		return false
	}
	return true
}

// CutNow cuts one batch of everything waiting (up to MaxRecords) and
// returns it, or ErrNotFound if no record waits. It is safe to call while Run
// runs (a flush on demand).
func (b *Batcher) CutNow() (*Batch, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	avail := b.src.LastGSeq()
	if avail < b.nextFirst {
		return nil, ErrNotFound
	}
	return b.cut(min(avail, b.nextFirst+uint64(b.cfg.MaxRecords)-1))
}

// cut builds, signs and stores the batch of records nextFirst..last;
// b.mu is held.
func (b *Batcher) cut(last uint64) (*Batch, error) {
	first := b.nextFirst
	leaves := make([]anchor.Hash, 0, last-first+1)
	var from, to time.Time
	want := first
	err := b.src.Range(first, last, func(r *store.Record) error {
		if r.GSeq != want {
			return fmt.Errorf("record store skipped gseq %d (got %d)", want, r.GSeq)
		}
		if len(r.Salt) != anchor.SaltSize {
			return fmt.Errorf("record %d has a salt of %d bytes", r.GSeq, len(r.Salt))
		}
		if want == first {
			from = r.Recv
		}
		to = r.Recv
		want++
		leaves = append(leaves, anchor.LeafHash(r.Salt, r.Receipt))
		return nil
	})
	if err != nil {
		return nil, wrapErr(err, "batch %d..%d", first, last)
	}
	if want != last+1 {
		return nil, fmt.Errorf("gateway: batch %d..%d: record store returned up to %d", first, last, want-1)
	}
	if to.Before(from) { // receive clocks may step back; the header wants from <= to
		to = from
	}
	h := &anchor.BatchHeader{
		Gateway: b.cfg.Signer.DID(), Seq: b.seq + 1, Prev: b.prev,
		First: first, Last: last, Count: last - first + 1,
		Root: anchor.MerkleRoot(leaves), From: from, To: to,
	}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	hb := h.Encode()
	sig, err := b.cfg.Signer.Sign(hb)
	if err != nil {
		return nil, err
	}
	sb := &Batch{
		Seq: h.Seq, First: first, Last: last, Header: hb, Sig: sig, Hash: anchor.SM3(hb),
		Tx:     (&anchor.Tx{Body: hb, Signer: h.Gateway, Sig: sig}).Encode(),
		Stored: b.cfg.Now().UTC(),
	}
	if err := b.log.Append(sb, leaves); err != nil {
		return nil, err
	}
	b.seq, b.prev, b.nextFirst = sb.Seq, sb.Hash, last+1
	b.cfg.Metrics.Batches.Inc()
	b.cfg.Metrics.BatchRecords.Observe(float64(h.Count))
	b.cfg.Log.Debug("batch stored", "seq", sb.Seq, "first", first, "last", last, "root", h.Root.String())
	if b.cfg.OnBatch != nil {
		b.cfg.OnBatch(sb)
	}
	return sb, nil
}
