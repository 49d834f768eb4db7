// Package seqstate is a device's sequence state in the record store: the
// last seq accepted and the open gaps below it (docs/protocol.md, "Late
// fills"), and its encoding as the value of the store's l/{did} key.
package seqstate

import (
	"encoding/binary"
	"fmt"
)

// Range is the device seqs From..To, both included.
type Range struct{ From, To uint64 }

// State is one device's sequence state: the last seq accepted and the
// open gaps below it, i.e. the seqs a jump skipped that have not been
// stored since. A seq inside an open gap is accepted once, as a late fill
// (a reading refused for a retryable reason, such as rate_limited, while
// later ones of the same in-flight window were stored). The gaps are
// ascending and disjoint; there are at most the store's max_open_gaps
// of them, and past that bound the lowest is closed for good.
//
// A State is a value: every change returns a new one (its Gaps slice
// is never shared with an older state), so readers may keep one while the
// writer moves on.
type State struct {
	Last uint64
	Gaps []Range
}

// InGap reports whether seq lies in an open gap.
func (st State) InGap(seq uint64) bool {
	for _, g := range st.Gaps {
		if seq < g.From {
			return false
		}
		if seq <= g.To {
			return true
		}
	}
	return false
}

// Advance returns the state after accepting seq > st.Last: a jump opens
// the gap st.Last+1..seq-1. dropped holds the gaps closed for good to stay
// within max.
func (st State) Advance(seq uint64, max int) (next State, dropped []Range) {
	if len(st.Gaps) == 0 && seq == st.Last+1 {
		return State{Last: seq}, nil // the usual case: no gap, nothing to copy
	}
	next.Last = seq
	next.Gaps = append(make([]Range, 0, len(st.Gaps)+1), st.Gaps...)
	if seq > st.Last+1 {
		next.Gaps = append(next.Gaps, Range{st.Last + 1, seq - 1})
	}
	return next.bound(max)
}

// Fill returns the state after accepting seq as a late fill (InGap(seq)
// must hold): seq leaves its gap, which may split in two.
func (st State) Fill(seq uint64, max int) (next State, dropped []Range) {
	next.Last = st.Last
	next.Gaps = make([]Range, 0, len(st.Gaps)+1)
	for _, g := range st.Gaps {
		if seq < g.From || seq > g.To {
			next.Gaps = append(next.Gaps, g)
			continue
		}
		if g.From < seq {
			next.Gaps = append(next.Gaps, Range{g.From, seq - 1})
		}
		if seq < g.To {
			next.Gaps = append(next.Gaps, Range{seq + 1, g.To})
		}
	}
	return next.bound(max)
}

// bound closes the lowest gaps until at most max are open.
func (st State) bound(max int) (State, []Range) {
	if max < 0 {
		max = 0
	}
	if len(st.Gaps) <= max {
		return st, nil
	}
	n := len(st.Gaps) - max
	dropped := append([]Range(nil), st.Gaps[:n]...)
	st.Gaps = st.Gaps[n:]
	return st, dropped
}

// Encode returns the value of l/{did}: the last seq (8 bytes
// big-endian), then each open gap as from and to (8 bytes each). A value
// of 8 bytes (every store written before late fills) has no open gap.
func (st State) Encode() []byte {
	b := make([]byte, 0, 8+16*len(st.Gaps))
	b = binary.BigEndian.AppendUint64(b, st.Last)
	for _, g := range st.Gaps {
		b = binary.BigEndian.AppendUint64(b, g.From)
		b = binary.BigEndian.AppendUint64(b, g.To)
	}
	return b
}

// Decode checks and decodes an l/{did} value.
func Decode(b []byte) (State, error) {
	if len(b) < 8 || (len(b)-8)%16 != 0 {
		return State{}, fmt.Errorf("bad last-seq value of %d bytes", len(b))
	}
	st := State{Last: binary.BigEndian.Uint64(b)}
	var prev uint64
	for i := 8; i < len(b); i += 16 {
		g := Range{binary.BigEndian.Uint64(b[i:]), binary.BigEndian.Uint64(b[i+8:])}
		if g.From == 0 || g.From > g.To || g.To >= st.Last || (len(st.Gaps) > 0 && g.From <= prev+1) {
			return State{}, fmt.Errorf("bad open gap %d..%d in last-seq value (last %d)", g.From, g.To, st.Last)
		}
		st.Gaps = append(st.Gaps, g)
		prev = g.To
	}
	return st, nil
}
