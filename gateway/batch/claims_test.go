package batch

import (
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// TestClaimsCoverStoredBatches: the batch log's claims on the store are
// the last gseq of its newest batch (0 before the first), and its newest
// batch reads back at open.
func TestClaimsCoverStoredBatches(t *testing.T) {
	e := newBatchEnv(t)
	c := Claims()
	if got, err := c.ClaimedThrough(e.store.DB()); err != nil || got != 0 {
		t.Fatalf("ClaimedThrough before any batch = %d, %v; want 0", got, err)
	}
	b, _ := e.batcher(t, time.Hour, 4, nil)
	e.add(t, 6)
	for range 2 {
		if _, err := b.CutNow(); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := c.ClaimedThrough(e.store.DB()); err != nil || got != 6 {
		t.Fatalf("ClaimedThrough after batches 1..4 and 5..6 = %d, %v; want 6", got, err)
	}
	if what, err := c.CheckTail(e.store.DB()); err != nil {
		t.Fatalf("CheckTail of an intact log: %s: %v", what, err)
	}
}

// TestStoreKeepsBatchedRecordsAboveHole: with the batch log's claims, a
// store whose acknowledged mark was rewound (a crash right after a write)
// and which lost a record below the newest batched one deletes none of the
// batched records above the hole at open.
func TestStoreKeepsBatchedRecordsAboveHole(t *testing.T) {
	e := newBatchEnv(t)
	b, _ := e.batcher(t, time.Hour, 100, nil)
	e.add(t, 6)
	if sb, err := b.CutNow(); err != nil || sb.Last != 6 {
		t.Fatalf("CutNow: %v, %v", sb, err)
	}
	// The record store's own keys (gateway/store: r/{gseq}, s/acked).
	u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	if err := e.store.DB().Update(func(txn *badger.Txn) error {
		return txn.Delete(append([]byte("r/"), u64(4)...))
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := badger.Open(badger.DefaultOptions(e.dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("s/acked"), u64(0)) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	e.open(t)
	var got []uint64
	if err := e.store.Range(1, 100, func(r *store.Record) error {
		got = append(got, r.GSeq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []uint64{1, 2, 3, 5, 6}; !slices.Equal(got, want) {
		t.Fatalf("after reopen: records %v, want %v", got, want)
	}
}
