package batch

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// TestAnchorerResumesOnRealLedger: a gateway that stopped after the ledger
// committed its header but before it stored the receipt finds the header on
// the ledger at restart (LastBatch/Batch), records it without submitting it
// again, and anchors the rest of its outbox, on a real CometBFT node.
func TestAnchorerResumesOnRealLedger(t *testing.T) {
	lgw := ledgertest.NewGateway(t, "site-a")
	node := ledgertest.Start(t, ledgertest.Options{Gateways: []*ledgertest.Gateway{lgw}, Logger: discardLog()})
	client, err := ledgerclient.NewClient(node.RPC, ledgerclient.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	e := &batchEnv{dir: t.TempDir(), gw: lgw.Signer, dev: testKey(t)}
	e.open(t)
	b, _ := e.batcher(t, time.Hour, 3, nil)
	e.add(t, 8)
	for range 3 {
		if _, err := b.CutNow(); err != nil {
			t.Fatal(err)
		}
	}
	// The "crash": batch 1 committed, its receipt never stored.
	sb1, _ := e.blog.Get(1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r1, err := client.Submit(ctx, sb1.Tx)
	if err != nil {
		t.Fatal(err)
	}
	e.reopen(t) // the gateway restarts
	counting := &countingLedger{Client: client}
	a, m := e.anchorer(t, counting, nil)
	stop := runAnchorer(t, a)
	waitFor(t, 30*time.Second, "3 anchored", func() bool { s, _ := e.blog.AnchoredSeq(); return s == 3 })
	stop()
	got, _ := e.blog.Get(1)
	if got.Anchor == nil || got.Anchor.Height != r1.Height || got.Anchor.TxHash != r1.TxHash {
		t.Fatalf("batch 1 receipt %+v, want the ledger's %+v", got.Anchor, r1)
	}
	if n := testutil.CollectAndCount(m.SubmitTime); n != 1 {
		t.Fatalf("submit histogram series %d", n)
	}
	if errs := testutil.ToFloat64(m.SubmitErrors.WithLabelValues("refused")); errs != 0 {
		t.Fatalf("%v refusals", errs)
	}
	if got := counting.submitted(); len(got) != 2 || got[0] != 2 || got[1] != 3 {
		t.Fatalf("submitted batches %v, want [2 3]: batch 1 must be found, not resubmitted", got)
	}
	last, err := client.LastBatch(ctx, lgw.DID())
	if err != nil || last.Seq != 3 {
		t.Fatalf("ledger's last batch %v %v, want 3", last, err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		sb, _ := e.blog.Get(seq)
		br, err := client.Batch(ctx, lgw.DID(), seq)
		if err != nil || br.Hash != sb.Hash || br.Height != sb.Anchor.Height {
			t.Fatalf("batch %d: ledger %+v %v, stored %s %+v", seq, br, err, sb.Hash, sb.Anchor)
		}
	}
}

// countingLedger is the real client, noting which batch seqs were submitted.
type countingLedger struct {
	*ledgerclient.Client
	mu   sync.Mutex
	seqs []uint64
}

func (c *countingLedger) Submit(ctx context.Context, tx []byte) (ledgerclient.TxCommit, error) {
	if t, err := anchor.DecodeTx(tx); err == nil {
		if h, err := anchor.ParseHeader(t.Body); err == nil {
			c.mu.Lock()
			c.seqs = append(c.seqs, h.Seq)
			c.mu.Unlock()
		}
	}
	return c.Client.Submit(ctx, tx)
}

func (c *countingLedger) submitted() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]uint64(nil), c.seqs...)
}
