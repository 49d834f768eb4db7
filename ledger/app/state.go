package app

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"

	dbm "github.com/cometbft/cometbft-db"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

// Status values of devices and gateways.
const (
	StatusActive  = "active"
	StatusRevoked = "revoked"
	StatusMember  = "member"
	StatusRemoved = "removed"
)

// The records the ledger stores and its queries answer are the query
// contract's types, defined once in anchor: anchor.GatewayRecord,
// anchor.DeviceRecord and anchor.BatchRecord (stored as their JSON).

// meta is what Info reports after a restart.
type meta struct {
	Height  int64  `json:"height"`
	AppHash []byte `json:"app_hash"`
}

// Keys of the application database. Every key is ASCII; numbers are
// zero-padded so that prefix iteration returns them in order.
const (
	keyMeta    = "m"
	keyGenesis = "genesis"
)

func keyGateway(did device.DID) string { return "g/" + string(did) }
func keyDevice(did device.DID) string  { return "d/" + string(did) }
func keyGatewayDevice(gw, did device.DID) string {
	return "gd/" + string(gw) + "/" + string(did)
}
func keyBatch(gw device.DID, seq uint64) string { return fmt.Sprintf("b/%s/%020d", gw, seq) }
func keyRoot(root anchor.Hash, gw device.DID, seq uint64) string {
	return fmt.Sprintf("r/%s/%s/%020d", root, gw, seq)
}
func keyBody(h anchor.Hash) string { return "h/" + h.String() }

// reader reads committed (or staged) state: raw values, or records decoded
// into a pointer (found reports whether the key exists).
type reader interface {
	get(key string) ([]byte, error)
	getJSON(key string, v any) (found bool, err error)
}

// committed reads the database. It keeps decoded gateway records, which
// every anchor reads several times (CheckTx, proposal checks, FinalizeBlock);
// Commit drops the entries of the keys it writes.
//
// It also remembers body-hash keys ("h/") it found absent: every tx's
// duplicate check misses the database in CheckTx, each recheck, the
// proposal checks and FinalizeBlock, and a goleveldb miss costs more than
// the rest of the check. Only Commit writes the database, and it forgets
// the keys it writes, so a remembered absence is always true.
type committed struct {
	db     dbm.DB
	cache  map[string]any      // key → decoded record (pointer), "g/" keys only
	absent map[string]struct{} // "h/" keys not in the database
}

const (
	maxDecodedCache = 4096
	maxAbsentCache  = 32768
)

func newCommitted(db dbm.DB) *committed {
	return &committed{db: db, cache: map[string]any{}, absent: map[string]struct{}{}}
}

func (c *committed) get(key string) ([]byte, error) {
	if _, ok := c.absent[key]; ok {
		return nil, nil
	}
	v, err := c.db.Get([]byte(key))
	if err != nil {
		return nil, fmt.Errorf("ledger: read state: %w", err)
	}
	if v == nil && strings.HasPrefix(key, "h/") {
		if len(c.absent) >= maxAbsentCache {
			clear(c.absent)
		}
		c.absent[key] = struct{}{}
	}
	return v, nil
}

func (c *committed) getJSON(key string, v any) (bool, error) {
	if obj, ok := c.cache[key]; ok && copyRecord(v, obj) {
		return true, nil
	}
	b, err := c.get(key)
	if err != nil || b == nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("ledger: corrupt state at %q: %w", key, err)
	}
	if strings.HasPrefix(key, "g/") {
		if len(c.cache) >= maxDecodedCache {
			clear(c.cache)
		}
		c.cache[key] = cloneRecord(v)
	}
	return true, nil
}

// forget drops decoded entries of keys that were just written.
func (c *committed) forget(keys map[string]*entry) {
	for k := range keys {
		delete(c.cache, k)
		delete(c.absent, k)
	}
}

// entry is a staged write: raw bytes, or a record encoded only when the
// overlay is flushed (CheckTx and proposal overlays are never flushed, so
// they never pay for encoding).
type entry struct {
	raw     []byte
	obj     any
	deleted bool // a staged delete
}

// overlay stages writes on top of a reader. FinalizeBlock stages a block in
// one, Commit writes it to the database in one synced batch; CheckTx and the
// proposal checks use throwaway overlays.
type overlay struct {
	parent reader
	writes map[string]*entry
	// final marks FinalizeBlock's overlay: only it stages what no check
	// reads (batch records, the root index) and builds events. Validation
	// is the same in every overlay.
	final bool
}

func newOverlay(parent reader) *overlay {
	return &overlay{parent: parent, writes: map[string]*entry{}}
}

func (o *overlay) get(key string) ([]byte, error) {
	if e, ok := o.writes[key]; ok {
		return e.bytes(), nil
	}
	return o.parent.get(key)
}

func (o *overlay) set(key string, v []byte) { o.writes[key] = &entry{raw: v} }

// del stages the deletion of key.
func (o *overlay) del(key string) { o.writes[key] = &entry{deleted: true} }

// allWrites returns the staged values of keys with prefix in o and the
// overlays under it (nil for a staged delete).
func (o *overlay) allWrites(prefix string) map[string][]byte {
	out := map[string][]byte{}
	if p, ok := o.parent.(*overlay); ok {
		out = p.allWrites(prefix)
	}
	for k, e := range o.writes {
		if strings.HasPrefix(k, prefix) {
			out[k] = e.bytes()
		}
	}
	return out
}

func (o *overlay) getJSON(key string, v any) (bool, error) {
	e, ok := o.writes[key]
	if !ok {
		return o.parent.getJSON(key, v)
	}
	if e.deleted {
		return false, nil
	}
	if e.obj != nil && copyRecord(v, e.obj) {
		return true, nil
	}
	if err := json.Unmarshal(e.bytes(), v); err != nil {
		return false, fmt.Errorf("ledger: corrupt state at %q: %w", key, err)
	}
	return true, nil
}

// setJSON stages a record (a pointer to a struct); later changes to *v do
// not reach the overlay.
func (o *overlay) setJSON(key string, v any) { o.writes[key] = &entry{obj: cloneRecord(v)} }

func (e *entry) bytes() []byte {
	if e.deleted {
		return nil
	}
	if e.raw == nil && e.obj != nil {
		b, err := json.Marshal(e.obj)
		if err != nil { // records hold strings, numbers and bytes only
			panic("ledger: encode state: " + err.Error())
		}
		e.raw = b
	}
	return e.raw
}

// flush writes the staged writes into a batch, in sorted key order.
func (o *overlay) flush(b dbm.Batch) error {
	keys := make([]string, 0, len(o.writes))
	for k := range o.writes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if o.writes[k].deleted {
			if err := b.Delete([]byte(k)); err != nil {
				return fmt.Errorf("ledger: stage delete: %w", err)
			}
			continue
		}
		if err := b.Set([]byte(k), o.writes[k].bytes()); err != nil {
			return fmt.Errorf("ledger: stage write: %w", err)
		}
	}
	return nil
}

// cloneRecord returns a shallow copy of the struct v points to. Records'
// byte slices are never modified in place, so sharing them is safe.
func cloneRecord(v any) any {
	if g, ok := v.(*anchor.GatewayRecord); ok {
		c := *g
		return &c
	}
	rv := reflect.ValueOf(v)
	c := reflect.New(rv.Type().Elem())
	c.Elem().Set(rv.Elem())
	return c.Interface()
}

// copyRecord sets *dst = *src if both point to the same type.
func copyRecord(dst, src any) bool {
	if d, ok := dst.(*anchor.GatewayRecord); ok { // every anchor reads one
		s, ok := src.(*anchor.GatewayRecord)
		if ok {
			*d = *s
		}
		return ok
	}
	dv, sv := reflect.ValueOf(dst), reflect.ValueOf(src)
	if dv.Type() != sv.Type() {
		return false
	}
	dv.Elem().Set(sv.Elem())
	return true
}

// appHashStep folds one block into the app hash chain (docs/ledger.md):
// SM3("edgeanchor-apphash-v1" ‖ prev ‖ be64(height) ‖ for each applied tx
// in block order: be32(index) ‖ SM3(tx bytes)). A block that applies
// nothing leaves the app hash as it was: the state did not change, and
// CometBFT then need not make an immediate "proof block", so an idle chain
// makes one empty block per create_empty_blocks_interval.
func appHashStep(prev []byte, height int64, applied []appliedTx) []byte {
	if len(applied) == 0 {
		return append([]byte(nil), prev...)
	}
	buf := make([]byte, 0, 64+len(applied)*36)
	buf = append(buf, "edgeanchor-apphash-v1"...)
	buf = append(buf, prev...)
	buf = binary.BigEndian.AppendUint64(buf, uint64(height))
	for _, a := range applied {
		buf = binary.BigEndian.AppendUint32(buf, a.index)
		h := anchor.SM3(a.tx)
		buf = append(buf, h[:]...)
	}
	h := anchor.SM3(buf)
	return h[:]
}

// genesisAppHash is the app hash before the first block; appState is the
// canonical encoding of anchor.GenesisState (json.Marshal of the parsed
// value), whatever whitespace genesis.json used.
func genesisAppHash(appState []byte) []byte {
	h := anchor.SM3(append([]byte("edgeanchor-genesis-v1"), appState...))
	return h[:]
}

type appliedTx struct {
	index uint32
	tx    []byte
}
