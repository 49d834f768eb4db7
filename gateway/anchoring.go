package gateway

import "github.com/edgeanchor/edgeanchor/anchor/ledgerclient"

// batchKeyPrefix is the Badger prefix of the batch log in the record
// store's DB (reserved for the batcher and anchorer in store.go).
const batchKeyPrefix = "b/"

// Anchoring is the batcher, the anchorer and the proof API of one gateway.
type Anchoring struct {
	Batches  *BatchLog
	Batcher  *Batcher
	Anchorer *Anchorer
	Proofs   *ProofAPI
	Metrics  *AnchorMetrics
}

// enableAnchoring wires batching, anchoring and the proof API into g before
// Run: the batcher cuts batches of g's store every Config.BatchInterval or
// Config.BatchSize records, the anchorer submits them through ledger and
// publishes the anchored receipts on each device's receipt topic, and the
// proof routes are mounted on g.Mux(). Both loops run as g's services.
func enableAnchoring(g *Gateway, ledger *ledgerclient.Client) (*Anchoring, error) {
	cfg := g.Config()
	log := g.Logger()
	m := NewAnchorMetrics(g.Registerer())
	blog := NewBatchLog(g.Store().DB(), batchKeyPrefix)
	publish := func(topic string, payload []byte) error {
		return g.Broker().Server().Publish(topic, payload, false, 1)
	}
	a, err := NewAnchorer(blog, g.Store(), ledger, AnchorerConfig{
		Gateway: g.Signer().DID(), Publish: publish, Log: log.With("component", "anchorer"), Metrics: m,
	})
	if err != nil {
		return nil, err
	}
	b, err := NewBatcher(g.Store(), blog, BatcherConfig{
		Interval: cfg.BatchInterval, MaxRecords: cfg.BatchSize, Signer: g.Signer(),
		OnBatch: func(*StoredBatch) { a.Wake() }, Log: log.With("component", "batcher"), Metrics: m,
	})
	if err != nil {
		return nil, err // NewBatcher's errors name the batcher
	}
	a.cfg.Resign = b.ResignTail // key rotation: the old key's unanchored tail (rotation.go)
	p, err := NewProofAPI(g.Store(), blog, ledger, g.Signer(), log.With("component", "proofs"))
	if err != nil {
		return nil, err
	}
	p.Routes(g.Mux())
	g.Go("batcher", b.Run)
	g.Go("anchorer", a.Run)
	return &Anchoring{Batches: blog, Batcher: b, Anchorer: a, Proofs: p, Metrics: m}, nil
}
