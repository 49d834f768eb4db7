package store

import (
	"encoding/binary"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/device"
)

// DefaultMaxOpenGaps is store.max_open_gaps's default: the open gaps kept
// per device (docs/protocol.md, "Late fills").
const DefaultMaxOpenGaps = 32

// seqRange is the device seqs from..to, both included.
type seqRange struct{ from, to uint64 }

// seqState is one device's sequence state: the last seq accepted and the
// open gaps below it, i.e. the seqs a jump skipped that have not been
// stored since. A seq inside an open gap is accepted once, as a late fill
// (a reading refused for a retryable reason, such as rate_limited, while
// later ones of the same in-flight window were stored). The gaps are
// ascending and disjoint; there are at most Config.MaxOpenGaps of
// them, and past that bound the lowest is closed for good.
//
// A seqState is a value: every change returns a new one (its gaps slice
// is never shared with an older state), so readers may keep one while the
// writer moves on.
type seqState struct {
	last uint64
	gaps []seqRange
}

// inGap reports whether seq lies in an open gap.
func (st seqState) inGap(seq uint64) bool {
	for _, g := range st.gaps {
		if seq < g.from {
			return false
		}
		if seq <= g.to {
			return true
		}
	}
	return false
}

// advance returns the state after accepting seq > st.last: a jump opens
// the gap st.last+1..seq-1. dropped holds the gaps closed for good to stay
// within max.
func (st seqState) advance(seq uint64, max int) (next seqState, dropped []seqRange) {
	if len(st.gaps) == 0 && seq == st.last+1 {
		return seqState{last: seq}, nil // the usual case: no gap, nothing to copy
	}
	next.last = seq
	next.gaps = append(make([]seqRange, 0, len(st.gaps)+1), st.gaps...)
	if seq > st.last+1 {
		next.gaps = append(next.gaps, seqRange{st.last + 1, seq - 1})
	}
	return next.bound(max)
}

// fill returns the state after accepting seq as a late fill (inGap(seq)
// must hold): seq leaves its gap, which may split in two.
func (st seqState) fill(seq uint64, max int) (next seqState, dropped []seqRange) {
	next.last = st.last
	next.gaps = make([]seqRange, 0, len(st.gaps)+1)
	for _, g := range st.gaps {
		if seq < g.from || seq > g.to {
			next.gaps = append(next.gaps, g)
			continue
		}
		if g.from < seq {
			next.gaps = append(next.gaps, seqRange{g.from, seq - 1})
		}
		if seq < g.to {
			next.gaps = append(next.gaps, seqRange{seq + 1, g.to})
		}
	}
	return next.bound(max)
}

// bound closes the lowest gaps until at most max are open.
func (st seqState) bound(max int) (seqState, []seqRange) {
	if max < 0 {
		max = 0
	}
	if len(st.gaps) <= max {
		return st, nil
	}
	n := len(st.gaps) - max
	dropped := append([]seqRange(nil), st.gaps[:n]...)
	st.gaps = st.gaps[n:]
	return st, dropped
}

// encodeSeqState is the value of l/{did}: the last seq (8 bytes
// big-endian), then each open gap as from and to (8 bytes each). A value
// of 8 bytes (every store written before late fills) has no open gap.
func encodeSeqState(st seqState) []byte {
	b := make([]byte, 0, 8+16*len(st.gaps))
	b = binary.BigEndian.AppendUint64(b, st.last)
	for _, g := range st.gaps {
		b = binary.BigEndian.AppendUint64(b, g.from)
		b = binary.BigEndian.AppendUint64(b, g.to)
	}
	return b
}

// decodeSeqState checks and decodes an l/{did} value.
func decodeSeqState(b []byte) (seqState, error) {
	if len(b) < 8 || (len(b)-8)%16 != 0 {
		return seqState{}, fmt.Errorf("bad last-seq value of %d bytes", len(b))
	}
	st := seqState{last: binary.BigEndian.Uint64(b)}
	var prev uint64
	for i := 8; i < len(b); i += 16 {
		g := seqRange{binary.BigEndian.Uint64(b[i:]), binary.BigEndian.Uint64(b[i+8:])}
		if g.from == 0 || g.from > g.to || g.to >= st.last || (len(st.gaps) > 0 && g.from <= prev+1) {
			return seqState{}, fmt.Errorf("bad open gap %d..%d in last-seq value (last %d)", g.from, g.to, st.last)
		}
		st.gaps = append(st.gaps, g)
		prev = g.to
	}
	return st, nil
}

// rebuildSeqState recomputes l/{did} from the device's stored seqs (the
// d/{did}/ index) after records were deleted: the last seq is the highest
// stored, the open gaps are the holes below it (the highest max of them).
// It may reopen a gap that the bound had closed; a hole can still be
// filled only once.
func rebuildSeqState(txn *badger.Txn, did device.DID, max int) error {
	prefix := []byte(prefixDevSeq + string(did) + "/")
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	var st seqState
	for it.Rewind(); it.Valid(); it.Next() {
		seq := binary.BigEndian.Uint64(it.Item().Key()[len(prefix):])
		if seq > st.last {
			st, _ = st.advance(seq, max)
		}
	}
	if st.last == 0 {
		return txn.Delete(lastSeqKey(did))
	}
	return txn.Set(lastSeqKey(did), encodeSeqState(st))
}
