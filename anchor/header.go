package anchor

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/emmansun/gmsm/sm3"

	"github.com/edgeanchor/edgeanchor/device"
)

// HeaderVersion is the only batch header version this code speaks.
const HeaderVersion = 1

// ErrMalformedHeader means bytes are not a well-formed batch header in its
// canonical encoding (docs/internals.md, "Batch header"). The gateway that made
// them must fix its encoder; nothing was stored.
var ErrMalformedHeader = errors.New("anchor: malformed batch header")

// Hash is an SM3 digest. It travels in JSON as 64 lowercase hex digits.
type Hash [sm3.Size]byte

// ZeroHash is the "prev" of a gateway's first batch header.
var ZeroHash Hash

// SM3 returns the SM3 digest of data.
func SM3(data []byte) Hash { return Hash(sm3.Sum(data)) }

// ParseHash reads 64 lowercase hex digits.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*len(h) {
		return h, fmt.Errorf("hash %q: want %d lowercase hex digits", s, 2*len(h))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return h, fmt.Errorf("hash %q: want lowercase hex digits", s)
		}
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("hash %q: %w", s, err)
	}
	return h, nil
}

// String returns the hash as lowercase hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether h is all zeros.
func (h Hash) IsZero() bool { return h == ZeroHash }

// MarshalText encodes h as lowercase hex.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText decodes exactly 64 lowercase hex digits.
func (h *Hash) UnmarshalText(b []byte) error {
	v, err := ParseHash(string(b))
	if err != nil {
		return err
	}
	*h = v
	return nil
}

// BatchHeader is a gateway's batch header, which is also the body of its
// AnchorBatch ledger transaction:
//
//	{"type":"AnchorBatch","v":1,"gateway":"did:ea:…","seq":1,"prev":"<64 hex>","first":1,"last":250,"count":250,"root":"<64 hex>","from":"…Z","to":"…Z"}
//
// Seq counts from 1 per gateway; Prev is the Hash of header Seq-1 (ZeroHash
// for Seq 1); First/Last are gateway record sequence numbers, contiguous
// across batches; Count = Last-First+1; From/To are the receive times of the
// first and last record.
type BatchHeader struct {
	Gateway device.DID
	Seq     uint64
	Prev    Hash
	First   uint64
	Last    uint64
	Count   uint64
	Root    Hash
	From    time.Time
	To      time.Time
}

// headerWire is the JSON shape; member order is the documented one.
type headerWire struct {
	Type    string     `json:"type"`
	V       int        `json:"v"`
	Gateway device.DID `json:"gateway"`
	Seq     uint64     `json:"seq"`
	Prev    Hash       `json:"prev"`
	First   uint64     `json:"first"`
	Last    uint64     `json:"last"`
	Count   uint64     `json:"count"`
	Root    Hash       `json:"root"`
	From    string     `json:"from"`
	To      string     `json:"to"`
}

// FormatTime is the one text form of a time in signed documents: RFC 3339 in
// UTC with a "Z", nanoseconds when present (trailing zeros trimmed).
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// ParseTime reads a time written by FormatTime and refuses any other form
// (offsets other than Z, a year outside 2000–9999).
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: %w", s, err)
	}
	if FormatTime(t) != s {
		return time.Time{}, fmt.Errorf("time %q: not canonical RFC 3339 UTC (want %q)", s, FormatTime(t))
	}
	if t.Year() < 2000 || t.Year() > 9999 {
		return time.Time{}, fmt.Errorf("time %q: year out of range", s)
	}
	return t, nil
}

// Encode returns the header's canonical bytes: compact JSON in the documented
// member order. These are the bytes the gateway signs and the ledger hashes.
func (h *BatchHeader) Encode() []byte {
	b, err := json.Marshal(headerWire{
		Type: TypeAnchorBatch, V: HeaderVersion, Gateway: h.Gateway, Seq: h.Seq,
		Prev: h.Prev, First: h.First, Last: h.Last, Count: h.Count, Root: h.Root,
		From: FormatTime(h.From), To: FormatTime(h.To),
	})
	if err != nil { // cannot happen: every member has a fixed encoding
		panic("anchor: encode header: " + err.Error())
	}
	return b
}

// Hash returns SM3 over the header's canonical bytes: the "prev" of the next
// header and the key of the batch on the ledger.
func (h *BatchHeader) Hash() Hash { return SM3(h.Encode()) }

// Validate checks the header's own consistency (not its place in the chain,
// which only the ledger knows).
func (h *BatchHeader) Validate() error {
	if _, err := device.ParseDID(string(h.Gateway)); err != nil {
		return fmt.Errorf("%w: gateway: %v", ErrMalformedHeader, err)
	}
	switch {
	case h.Seq == 0:
		return fmt.Errorf("%w: seq must start at 1", ErrMalformedHeader)
	case h.Seq == 1 && !h.Prev.IsZero():
		return fmt.Errorf("%w: prev of seq 1 must be 64 zeros", ErrMalformedHeader)
	case h.Seq > 1 && h.Prev.IsZero():
		return fmt.Errorf("%w: prev of seq %d must not be zero", ErrMalformedHeader, h.Seq)
	case h.First == 0:
		return fmt.Errorf("%w: first must be at least 1", ErrMalformedHeader)
	case h.Last < h.First:
		return fmt.Errorf("%w: last %d < first %d", ErrMalformedHeader, h.Last, h.First)
	case h.Count != h.Last-h.First+1:
		return fmt.Errorf("%w: count %d, want last-first+1 = %d", ErrMalformedHeader, h.Count, h.Last-h.First+1)
	case h.Root.IsZero():
		return fmt.Errorf("%w: root is zero", ErrMalformedHeader)
	case h.From.IsZero() || h.To.IsZero():
		return fmt.Errorf("%w: from and to are required", ErrMalformedHeader)
	case h.To.Before(h.From):
		return fmt.Errorf("%w: to %s before from %s", ErrMalformedHeader, FormatTime(h.To), FormatTime(h.From))
	}
	return nil
}

// ParseHeader decodes header bytes strictly: no unknown or duplicate members,
// type AnchorBatch, v 1, valid fields (Validate), and the bytes must be the
// canonical encoding, so that one header has exactly one hash.
func ParseHeader(b []byte) (*BatchHeader, error) {
	if len(b) > MaxTxBytes {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformedHeader, len(b))
	}
	var w headerWire
	// The canonical check below refuses duplicate members too.
	if err := decodeNoUnknown(b, &w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedHeader, err)
	}
	if w.Type != TypeAnchorBatch {
		return nil, fmt.Errorf("%w: type %q, want %q", ErrMalformedHeader, w.Type, TypeAnchorBatch)
	}
	if w.V != HeaderVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformedHeader, w.V, HeaderVersion)
	}
	from, err := ParseTime(w.From)
	if err != nil {
		return nil, fmt.Errorf("%w: from: %v", ErrMalformedHeader, err)
	}
	to, err := ParseTime(w.To)
	if err != nil {
		return nil, fmt.Errorf("%w: to: %v", ErrMalformedHeader, err)
	}
	h := &BatchHeader{
		Gateway: w.Gateway, Seq: w.Seq, Prev: w.Prev, First: w.First, Last: w.Last,
		Count: w.Count, Root: w.Root, From: from, To: to,
	}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	if !bytes.Equal(h.Encode(), b) {
		return nil, fmt.Errorf("%w: not in canonical form (compact JSON, documented member order)", ErrMalformedHeader)
	}
	return h, nil
}
