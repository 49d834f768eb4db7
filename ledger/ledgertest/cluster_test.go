package ledgertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
)

// TestFourValidators runs a consortium of four validators as four OS
// processes: anchors commit; with one validator killed (kill -9) they keep
// committing and the restarted validator catches up; with two down the chain
// halts (no block, a submitted anchor does not commit); with both back it
// resumes and the waiting anchor commits.
func TestFourValidators(t *testing.T) {
	c := StartCluster(t, 4)
	clients := make([]*ledgerclient.Client, 4)
	for i := range clients {
		cl, err := ledgerclient.NewClient(c.RPC(i), ledgerclient.ClientOptions{Retries: 1, Backoff: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		clients[i] = cl
	}
	submit := func(via int, tx []byte, timeout time.Duration) (ledgerclient.TxCommit, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return clients[via].Submit(ctx, tx)
	}
	var last ledgerclient.TxCommit
	mustSubmit := func(via int, tx []byte) ledgerclient.TxCommit {
		t.Helper()
		// The header before this one committed on another node: this node
		// checks the new one against its own state, so it must have
		// reached that block too (a gateway that fails over to another
		// validator does the same).
		c.WaitNodeHeight(t, via, last.Height, 30*time.Second)
		r, err := submit(via, tx, 30*time.Second)
		if err != nil {
			t.Fatalf("submit via node %d: %v\n%s", via, err, c.tails())
		}
		return r
	}
	lastSeq := func(via int, gw *Gateway) uint64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b, err := clients[via].LastBatch(ctx, gw.DID())
		if err != nil {
			t.Fatalf("last batch via node %d: %v", via, err)
		}
		return b.Seq
	}
	height := func(i int) int64 {
		t.Helper()
		h, err := c.Height(i)
		if err != nil {
			t.Fatalf("height of node %d: %v", i, err)
		}
		return h
	}

	gw := NewGateway(t, "site-a")
	last = mustSubmit(0, gw.RegisterTx(t, c.Committee))

	// All four up: anchors sent to different validators commit, and every
	// validator answers the same last batch.
	for i := range 4 {
		tx, _ := gw.NextAnchor(t, 10)
		last = mustSubmit(i, tx)
	}
	c.WaitHeight(t, last.Height, 20*time.Second)
	for i := range 4 {
		if got := lastSeq(i, gw); got != 4 {
			t.Fatalf("node %d: last seq %d, want 4", i, got)
		}
	}

	// kill -9 one validator: 3 of 4 (30 of 40 voting power > 2/3) go on.
	c.Kill(3)
	for i := range 3 {
		tx, _ := gw.NextAnchor(t, 10)
		r := mustSubmit(i, tx)
		if r.Height <= last.Height {
			t.Fatalf("anchor committed at %d, not after %d", r.Height, last.Height)
		}
		last = r
	}
	if _, err := c.Height(3); err == nil {
		t.Fatal("killed node 3 still answers")
	}

	// Restart it: it catches up with the others and has their state.
	c.Start(3)
	c.WaitNodeHeight(t, 3, last.Height, 60*time.Second)
	if got := lastSeq(3, gw); got != 7 {
		t.Fatalf("restarted node 3: last seq %d, want 7", got)
	}
	tx, _ := gw.NextAnchor(t, 10)
	last = mustSubmit(3, tx)

	// Two down: 20 of 40 voting power cannot commit. The chain halts.
	// The survivors hold anchor 8 before the kill, so the query below
	// cannot depend on votes the killed nodes may not have gossiped.
	c.WaitNodeHeight(t, 0, last.Height, 30*time.Second)
	c.WaitNodeHeight(t, 1, last.Height, 30*time.Second)
	c.Kill(2)
	c.Kill(3)
	h0, h1 := height(0), height(1)
	if h0 != h1 && h0 != h1+1 && h1 != h0+1 {
		t.Fatalf("survivors at heights %d and %d", h0, h1)
	}
	haltedTx, _ := gw.NextAnchor(t, 10)
	_, err := submit(0, haltedTx, 5*time.Second)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("submit while halted: err = %v, want a deadline (no commit)", err)
	}
	// Every quorum (3 of 4) holds a survivor, so with both survivors at
	// most at max(h0, h1) when the others died, only the block in flight
	// then (max+1) can still land: the votes for it may have been cast
	// before the kill. A live chain makes a block a second.
	top := max(h0, h1) + 1
	if a, b := height(0), height(1); a > top || b > top {
		t.Fatalf("halted chain advanced: node0 %d -> %d, node1 %d -> %d (at most %d)", h0, a, h1, b, top)
	}
	if got := lastSeq(0, gw); got != 8 {
		t.Fatalf("while halted: last seq %d, want 8", got)
	}

	// Restore both: the chain resumes and the waiting anchor commits (a
	// resubmission of the same bytes returns its receipt).
	c.Start(2)
	c.Start(3)
	r, err := submit(0, haltedTx, 90*time.Second)
	if err != nil {
		t.Fatalf("anchor after restore: %v\n%s", err, c.tails())
	}
	if r.Height <= h0 {
		t.Fatalf("anchor after restore at height %d, halted at %d", r.Height, h0)
	}
	last = r
	tx, _ = gw.NextAnchor(t, 10)
	last = mustSubmit(2, tx)
	c.WaitHeight(t, last.Height, 60*time.Second)
	for i := range 4 {
		if got := lastSeq(i, gw); got != 10 {
			t.Fatalf("node %d after restore: last seq %d, want 10", i, got)
		}
	}
}
