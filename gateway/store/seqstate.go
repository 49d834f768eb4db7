package store

import (
	"encoding/binary"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/store/seqstate"
)

// DefaultMaxOpenGaps is store.max_open_gaps's default: the open gaps kept
// per device (docs/protocol.md, "Late fills").
const DefaultMaxOpenGaps = 32

// rebuildSeqState recomputes l/{did} from the device's stored seqs (the
// d/{did}/ index) after records were deleted: the last seq is the highest
// stored, the open gaps are the holes below it (the highest max of them).
// It may reopen a gap that the bound had closed; a hole can still be
// filled only once.
func rebuildSeqState(txn *badger.Txn, did device.DID, max int) error {
	prefix := []byte(prefixDevSeq + string(did) + "/")
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	var st seqstate.State
	for it.Rewind(); it.Valid(); it.Next() {
		seq := binary.BigEndian.Uint64(it.Item().Key()[len(prefix):])
		if seq > st.Last {
			st, _ = st.Advance(seq, max)
		}
	}
	if st.Last == 0 {
		return txn.Delete(lastSeqKey(did))
	}
	return txn.Set(lastSeqKey(did), st.Encode())
}
