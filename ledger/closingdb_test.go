package ledger

import (
	"testing"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/store"
)

// TestBlockStoreReadAfterClose: what a peer's consensus goroutine does
// when it wakes after the node's Stop closed the block store: load a seen
// commit. On the node's wrapped database it finds none; on the bare one
// CometBFT panics ("leveldb: closed"), which took a test binary down.
func TestBlockStoreReadAfterClose(t *testing.T) {
	raw, err := dbm.NewGoLevelDB("blockstore", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	db := &closingDB{DB: raw}
	bs := store.NewBlockStore(db)
	if err := bs.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil { // a second Close, as Stop may do
		t.Errorf("second close: %v", err)
	}
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("read after close panicked: %v", r)
		}
	}()
	if c := bs.LoadSeenCommit(3); c != nil {
		t.Fatalf("seen commit %v from a closed store", c)
	}
	if ok, err := db.Has([]byte("k")); ok || err != nil {
		t.Fatalf("Has after close: %v %v", ok, err)
	}
}
