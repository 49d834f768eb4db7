package app

import (
	"context"
	"syscall"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
)

// BenchmarkAnchorTx measures one AnchorBatch through CheckTx, ProcessProposal
// and FinalizeBlock+Commit, as a validator sees it (signature verified once).
func BenchmarkAnchorTx(b *testing.B) {
	f := newAppFixture(b)
	c := &chain{gw: f.gw}
	const perBlock = 500
	txs := make([][]byte, 0, b.N)
	for range b.N {
		h := c.next(10)
		c.advance(h)
		txs = append(txs, anchorTx(b, f.gw, h))
	}
	ctx := context.Background()
	cpu0 := cpuTime()
	b.ResetTimer()
	for start := 0; start < len(txs); start += perBlock {
		blk := txs[start:min(start+perBlock, len(txs))]
		for _, tx := range blk {
			if r, _ := f.app.CheckTx(ctx, &abci.RequestCheckTx{Tx: tx}); r.Code != 0 {
				b.Fatalf("CheckTx %d: %s", r.Code, r.Log)
			}
		}
		f.height++
		if r, _ := f.app.ProcessProposal(ctx, &abci.RequestProcessProposal{Height: f.height, Txs: blk}); r.Status != abci.ResponseProcessProposal_ACCEPT {
			b.Fatal("rejected")
		}
		if _, err := f.app.FinalizeBlock(ctx, &abci.RequestFinalizeBlock{Height: f.height, Txs: blk}); err != nil {
			b.Fatal(err)
		}
		if _, err := f.app.Commit(ctx, &abci.RequestCommit{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// CPU time, not wall time: the machine is shared.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/tx")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
