package batch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// AnchorLedger is what the anchorer needs of the ledger client
// (*ledgerclient.Client implements it).
type AnchorLedger interface {
	Submit(ctx context.Context, tx []byte) (ledgerclient.TxCommit, error)
	Batch(ctx context.Context, gateway device.DID, seq uint64) (*anchor.BatchRecord, error)
	LastBatch(ctx context.Context, gateway device.DID) (*anchor.BatchRecord, error)
}

var _ AnchorLedger = (*ledgerclient.Client)(nil)

// ErrChainDiverged means the ledger holds a batch header for this gateway
// that the gateway did not store (or a different one at the same seq): the
// store was restored from an old backup or another process signs with this
// gateway's key. Anchoring stops until an operator resolves it.
var ErrChainDiverged = errors.New("gateway: ledger batch chain diverges from the stored one")

// AnchorerConfig configures an Anchorer.
type AnchorerConfig struct {
	Gateway device.DID
	// Publish sends a message to an MQTT topic (best effort); nil turns the
	// anchored-receipt notices off.
	Publish func(topic string, payload []byte) error
	// MinBackoff and MaxBackoff bound the retry delay while the ledger is
	// unreachable (200 ms doubling to 5 s).
	MinBackoff, MaxBackoff time.Duration
	// AlarmBackoff is the retry delay after the ledger refused a header
	// (30 s): a refusal needs an operator, retrying fast only floods logs.
	AlarmBackoff time.Duration
	// Tick is how often metrics are refreshed while idle (1 s).
	Tick    time.Duration
	Log     *slog.Logger
	Metrics *Metrics
	Now     func() time.Time
	// Resign re-signs the stored batches from a seq on under this
	// gateway's key (Batcher.ResignTail); nil leaves a tail signed by a
	// previous key as it is (rotation.go).
	Resign func(from uint64) (int, error)
}

func (c *AnchorerConfig) defaults() {
	if c.MinBackoff <= 0 {
		c.MinBackoff = 200 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.AlarmBackoff <= 0 {
		c.AlarmBackoff = 30 * time.Second
	}
	if c.Tick <= 0 {
		c.Tick = time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Anchorer is the outbox: it submits stored batch headers to the ledger in
// order, one at a time, waits for each to commit and stores its receipt.
// While the ledger is unreachable it retries with backoff. After a restart
// it first asks the ledger for the gateway's last anchored batch, so that a
// header that committed before its receipt was stored is recorded, not
// submitted again. A refusal (seq or prev mismatch) raises an alarm (error
// log and edgeanchor_ledger_submit_errors_total{kind="refused"}) and is
// retried, never skipped.
type Anchorer struct {
	blog   *Log
	src    RecordSource
	ledger AnchorLedger
	cfg    AnchorerConfig
	wake   chan struct{}
}

// NewAnchorer returns an anchorer; start it with Run.
func NewAnchorer(blog *Log, src RecordSource, ledger AnchorLedger, cfg AnchorerConfig) (*Anchorer, error) {
	cfg.defaults()
	if _, err := device.ParseDID(string(cfg.Gateway)); err != nil {
		return nil, fmt.Errorf("%w: anchorer gateway: %v", ErrConfig, err)
	}
	if cfg.Log == nil || cfg.Metrics == nil {
		return nil, fmt.Errorf("%w: anchorer needs a logger and metrics", ErrConfig)
	}
	return &Anchorer{blog: blog, src: src, ledger: ledger, cfg: cfg, wake: make(chan struct{}, 1)}, nil
}

// Wake tells the anchorer a batch was stored (never blocks).
func (a *Anchorer) Wake() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Run anchors until ctx is done; it returns ctx's error.
func (a *Anchorer) Run(ctx context.Context) error {
	tick := time.NewTicker(a.cfg.Tick)
	defer tick.Stop()
	backoff := a.cfg.MinBackoff
	reconciled := false
	wait := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
				return nil
			case <-tick.C:
				a.refreshMetrics()
			}
		}
	}
	grow := func() time.Duration {
		d := backoff
		backoff = min(backoff*2, a.cfg.MaxBackoff)
		return d
	}
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.refreshMetrics()
		if !reconciled {
			err := a.reconcile(ctx)
			if err == nil {
				err = a.adoptTail(ctx)
			}
			switch {
			case err == nil:
				reconciled = true
				backoff = a.cfg.MinBackoff
			case errors.Is(err, ErrChainDiverged):
				a.cfg.Metrics.SubmitErrors.WithLabelValues("chain").Inc()
				a.cfg.Log.Error("anchoring stopped: ledger chain diverges", "error", err)
				if err := wait(a.cfg.AlarmBackoff); err != nil {
					return err
				}
				continue
			case errors.Is(err, ErrNotSuccessor):
				a.cfg.Metrics.SubmitErrors.WithLabelValues("refused").Inc()
				a.cfg.Log.Error("anchoring waits for the key rotation", "error", err)
				if err := wait(a.cfg.MaxBackoff); err != nil {
					return err
				}
				continue
			default:
				a.cfg.Metrics.SubmitErrors.WithLabelValues(errorKind(err)).Inc()
				a.cfg.Log.Warn("ledger not reachable for the anchor chain check; retrying", "error", err)
				if err := wait(grow()); err != nil {
					return err
				}
				continue
			}
		}
		anchored, err := a.blog.AnchoredSeq()
		if err != nil {
			return wrapErr(err, "anchorer")
		}
		sb, err := a.blog.Get(anchored + 1)
		if errors.Is(err, ErrNotFound) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-a.wake:
			case <-tick.C:
			}
			continue
		}
		if err != nil {
			return wrapErr(err, "anchorer")
		}
		err = a.submit(ctx, sb)
		switch {
		case err == nil:
			backoff = a.cfg.MinBackoff
		case ctx.Err() != nil:
			return ctx.Err()
		default:
			var refused *ledgerclient.RefusedError
			if errors.As(err, &refused) || errors.Is(err, ErrChainDiverged) {
				if err := wait(a.cfg.AlarmBackoff); err != nil {
					return err
				}
				reconciled = false
				continue
			}
			if err := wait(grow()); err != nil {
				return err
			}
		}
	}
}

// errorKind is the metric label of a submission error.
func errorKind(err error) string {
	var refused *ledgerclient.RefusedError
	switch {
	case errors.As(err, &refused):
		return "refused"
	case errors.Is(err, ledgerclient.ErrUnreachable):
		return "unreachable"
	case errors.Is(err, ledgerclient.ErrCommitTimeout), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "other"
	}
}

// submit sends one stored batch and records its receipt.
func (a *Anchorer) submit(ctx context.Context, sb *Batch) error {
	start := a.cfg.Now()
	r, err := a.ledger.Submit(ctx, sb.Tx)
	if err == nil {
		a.cfg.Metrics.SubmitTime.Observe(a.cfg.Now().Sub(start).Seconds())
		return a.record(sb, r)
	}
	if ctx.Err() != nil {
		return err
	}
	kind := errorKind(err)
	a.cfg.Metrics.SubmitErrors.WithLabelValues(kind).Inc()
	var refused *ledgerclient.RefusedError
	if !errors.As(err, &refused) {
		a.cfg.Log.Warn("anchor not submitted; will retry", "seq", sb.Seq, "kind", kind, "error", err)
		return err
	}
	// A refusal may be the ledger telling us it already has this header
	// (duplicate body): then record it. Anything else is an alarm.
	if rec, ok, qerr := a.ledgerHas(ctx, sb); qerr == nil && ok {
		return a.record(sb, rec)
	}
	a.cfg.Log.Error("ALARM: ledger refused batch header", "seq", sb.Seq, "code", refused.Code,
		"stage", refused.Stage, "ledger_log", refused.Log, "error", err)
	return err
}

// ledgerHas asks the ledger whether it holds batch sb.Seq of this gateway
// with sb's header hash. It returns ErrChainDiverged if it holds another.
func (a *Anchorer) ledgerHas(ctx context.Context, sb *Batch) (ledgerclient.TxCommit, bool, error) {
	br, err := a.ledger.Batch(ctx, a.cfg.Gateway, sb.Seq)
	if errors.Is(err, ledgerclient.ErrNotFound) {
		return ledgerclient.TxCommit{}, false, nil
	}
	if err != nil {
		return ledgerclient.TxCommit{}, false, err
	}
	if br.Hash != sb.Hash {
		return ledgerclient.TxCommit{}, false, fmt.Errorf("%w: batch %d on the ledger has hash %s, stored %s",
			ErrChainDiverged, sb.Seq, br.Hash, sb.Hash)
	}
	return ledgerclient.TxCommit{Height: br.Height, TxHash: br.Tx, Index: br.Index}, true, nil
}

// reconcile records the receipts of stored batches the ledger already
// committed (a crash between commit and storing the receipt).
func (a *Anchorer) reconcile(ctx context.Context) error {
	last, err := a.ledger.LastBatch(ctx, a.cfg.Gateway)
	if errors.Is(err, ledgerclient.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	lh, err := anchor.ParseHeader(last.Header)
	if err != nil {
		return fmt.Errorf("gateway: ledger's last batch: %w", err)
	}
	anchored, err := a.blog.AnchoredSeq()
	if err != nil {
		return err
	}
	for seq := anchored + 1; seq <= lh.Seq; seq++ {
		sb, err := a.blog.Get(seq)
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%w: the ledger has batch %d, the store ends before it", ErrChainDiverged, seq)
		}
		if err != nil {
			return err
		}
		r, ok, err := a.ledgerHas(ctx, sb)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: the ledger's last batch is %d but it has no batch %d", ErrChainDiverged, lh.Seq, seq)
		}
		a.cfg.Log.Info("batch found committed on the ledger; receipt recorded", "seq", seq, "height", r.Height)
		if err := a.record(sb, r); err != nil {
			return err
		}
	}
	return nil
}

// record stores the receipt of sb and tells the devices.
func (a *Anchorer) record(sb *Batch, r ledgerclient.TxCommit) error {
	if _, err := a.blog.SetAnchored(sb.Seq, r, a.cfg.Now()); err != nil {
		return fmt.Errorf("gateway: store anchor receipt of batch %d: %w", sb.Seq, err)
	}
	a.cfg.Log.Debug("batch anchored", "seq", sb.Seq, "height", r.Height, "tx", r.TxHash)
	a.refreshMetrics()
	if a.cfg.Publish == nil {
		return nil
	}
	err := a.src.Range(sb.First, sb.Last, func(rec *store.Record) error {
		m := rec.Message()
		m.Batch, m.Height, m.TX = sb.Seq, r.Height, r.TxHash
		msg, err := m.MarshalJSON()
		if err != nil {
			return err
		}
		if err := a.cfg.Publish("ea/v1/dev/"+string(rec.DID)+"/receipt", msg); err != nil {
			a.cfg.Log.Debug("anchored receipt not published", "gseq", rec.GSeq, "error", err)
		}
		return nil
	})
	if err != nil {
		a.cfg.Log.Warn("anchored receipts not published", "seq", sb.Seq, "error", err)
	}
	return nil
}

// refreshMetrics sets the outbox depth, unanchored records and lag.
func (a *Anchorer) refreshMetrics() {
	m := a.cfg.Metrics
	anchored, err := a.blog.AnchoredSeq()
	if err != nil {
		return
	}
	var lastSeq, anchoredLast uint64
	if last, err := a.blog.Last(); err == nil {
		lastSeq = last.Seq
	}
	if anchored > 0 {
		if sb, err := a.blog.Get(anchored); err == nil {
			anchoredLast = sb.Last
		}
	}
	m.OutboxDepth.Set(float64(lastSeq - min(anchored, lastSeq)))
	stored := a.src.LastGSeq()
	if stored <= anchoredLast {
		m.Unanchored.Set(0)
		m.AnchorLag.Set(0)
		return
	}
	m.Unanchored.Set(float64(stored - anchoredLast))
	_ = a.src.Range(anchoredLast+1, anchoredLast+1, func(r *store.Record) error {
		m.AnchorLag.Set(max(0, a.cfg.Now().Sub(r.Recv).Seconds()))
		return nil
	})
}
