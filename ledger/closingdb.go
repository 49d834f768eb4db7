package ledger

import (
	"sync"

	dbm "github.com/cometbft/cometbft-db"
)

// closingDB is a CometBFT database whose reads after Close find nothing
// instead of failing. CometBFT v0.38's node closes its block and state
// stores in Stop while each peer's consensus goroutine
// (consensus.Reactor.queryMaj23Routine) may still be asleep inside its loop
// and, waking, load a commit from the closed block store: BlockStore
// panics on the read error ("leveldb: closed") and takes the process down.
// A read that finds nothing makes that goroutine skip the peer and see, at
// its next turn, that the node stopped.
type closingDB struct {
	dbm.DB
	mu     sync.RWMutex
	closed bool
}

func (d *closingDB) Get(key []byte) ([]byte, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, nil
	}
	return d.DB.Get(key)
}

func (d *closingDB) Has(key []byte) (bool, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return false, nil
	}
	return d.DB.Has(key)
}

// Close waits for the reads under way, then closes the database.
func (d *closingDB) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return d.DB.Close()
}
