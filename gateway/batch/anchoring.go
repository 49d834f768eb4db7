package batch

import (
	"log/slog"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// keyPrefix is the Badger prefix of the batch log in the record store's
// DB (reserved for the batcher and anchorer in package gateway/store).
const keyPrefix = "b/"

// StoreLog returns the gateway's batch log in the record store's database
// db (the one NewAnchoring keeps), for the tools that read a stopped
// gateway's store (package gateway/archive).
func StoreLog(db *badger.DB) *Log { return NewLog(db, keyPrefix) }

// Anchoring is the batcher, the anchorer and the proofs of one gateway.
type Anchoring struct {
	Batches  *Log
	Batcher  *Batcher
	Anchorer *Anchorer
	Proofs   *Proofs
	Metrics  *Metrics
}

// AnchoringConfig configures NewAnchoring.
type AnchoringConfig struct {
	Interval   time.Duration // cut a batch at least this often (Config.BatchInterval)
	MaxRecords int           // or once this many records wait (Config.BatchSize)
	Signer     device.Signer // the gateway's key
	// Publish sends an anchored receipt on a device's receipt topic.
	Publish    func(topic string, payload []byte) error
	Log        *slog.Logger
	Registerer prometheus.Registerer
}

// NewAnchoring builds batching, anchoring and proofs over st: the batcher
// cuts batches of st every cfg.Interval or cfg.MaxRecords records, the
// anchorer submits them through ledger and publishes the anchored
// receipts, and Proofs assembles bundles. Run the Batcher's and the
// Anchorer's Run loops; serve Proofs with package gateway/httpapi.
func NewAnchoring(st *store.Store, ledger *ledgerclient.Client, cfg AnchoringConfig) (*Anchoring, error) {
	m := NewMetrics(cfg.Registerer)
	blog := NewLog(st.DB(), keyPrefix)
	a, err := NewAnchorer(blog, st, ledger, AnchorerConfig{
		Gateway: cfg.Signer.DID(), Publish: cfg.Publish, Log: cfg.Log.With("component", "anchorer"), Metrics: m,
	})
	if err != nil {
		return nil, err
	}
	b, err := NewBatcher(st, blog, BatcherConfig{
		Interval: cfg.Interval, MaxRecords: cfg.MaxRecords, Signer: cfg.Signer,
		OnBatch: func(*Batch) { a.Wake() }, Log: cfg.Log.With("component", "batcher"), Metrics: m,
	})
	if err != nil {
		return nil, err // NewBatcher's errors name the batcher
	}
	a.cfg.Resign = b.ResignTail // key rotation: the old key's unanchored tail (rotation.go)
	p, err := NewProofs(st, blog, ledger, cfg.Signer, cfg.Log.With("component", "proofs"))
	if err != nil {
		return nil, err
	}
	return &Anchoring{Batches: blog, Batcher: b, Anchorer: a, Proofs: p, Metrics: m}, nil
}
