package ledger

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"

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

// GatewayRecord is a gateway's entry on the ledger, the answer to
// /gateway/{did}. Height and Tx are those of the latest registration
// (0 and "" for a genesis gateway). LastSeq, LastHash and LastRecord follow
// its batch chain (0, 64 zeros, 0 before the first batch).
type GatewayRecord struct {
	DID           device.DID  `json:"did"`
	Pub           []byte      `json:"pub"`
	Site          string      `json:"site"`
	Name          string      `json:"name"`
	Status        string      `json:"status"`
	Height        int64       `json:"height"`
	Tx            string      `json:"tx"`
	RemovedHeight int64       `json:"removed_height,omitempty"`
	RemovedTx     string      `json:"removed_tx,omitempty"`
	LastSeq       uint64      `json:"last_seq"`
	LastHash      anchor.Hash `json:"last_hash"`
	LastRecord    uint64      `json:"last_record"`
}

// DeviceRecord is a device's entry, the answer to /device/{did}. It keeps
// the registration bytes and the device's signature so anyone can re-check
// the proof of possession.
type DeviceRecord struct {
	DID           device.DID `json:"did"`
	Pub           []byte     `json:"pub"`
	Kind          string     `json:"kind"`
	Site          string     `json:"site"`
	Gateway       device.DID `json:"gateway"`
	Status        string     `json:"status"`
	Height        int64      `json:"height"`
	Tx            string     `json:"tx"`
	Registration  []byte     `json:"registration"`
	DeviceSig     []byte     `json:"device_sig"`
	RevokedHeight int64      `json:"revoked_height,omitempty"`
	RevokedTx     string     `json:"revoked_tx,omitempty"`
	RevokedBy     device.DID `json:"revoked_by,omitempty"`
	RevokeReason  string     `json:"revoke_reason,omitempty"`
}

// BatchRecord is an anchored batch header, the answer to /batch/…,
// /batch-by-root/… and /last-batch/…: the exact header bytes, the gateway's
// signature over them, the header hash, and where the anchor tx sits.
type BatchRecord struct {
	Gateway device.DID  `json:"gateway"`
	Seq     uint64      `json:"seq"`
	Header  []byte      `json:"header"`
	Sig     []byte      `json:"sig"`
	Hash    anchor.Hash `json:"hash"`
	Root    anchor.Hash `json:"root"`
	First   uint64      `json:"first"`
	Last    uint64      `json:"last"`
	Height  int64       `json:"height"`
	Tx      string      `json:"tx"`
	Index   uint32      `json:"index"`
}

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

// reader reads committed (or staged) state.
type reader interface {
	get(key string) ([]byte, error)
}

type dbReader struct{ db dbm.DB }

func (r dbReader) get(key string) ([]byte, error) {
	v, err := r.db.Get([]byte(key))
	if err != nil {
		return nil, fmt.Errorf("ledger: read state: %w", err)
	}
	return v, nil
}

// overlay stages writes on top of a reader. FinalizeBlock stages a block in
// one, Commit writes it to the database in one synced batch; CheckTx and the
// proposal checks use throwaway overlays.
type overlay struct {
	parent reader
	writes map[string][]byte
}

func newOverlay(parent reader) *overlay {
	return &overlay{parent: parent, writes: map[string][]byte{}}
}

func (o *overlay) get(key string) ([]byte, error) {
	if v, ok := o.writes[key]; ok {
		return v, nil
	}
	return o.parent.get(key)
}

func (o *overlay) set(key string, v []byte) { o.writes[key] = v }

func (o *overlay) getJSON(key string, v any) (bool, error) {
	b, err := o.get(key)
	if err != nil || b == nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("ledger: corrupt state at %q: %w", key, err)
	}
	return true, nil
}

func (o *overlay) setJSON(key string, v any) {
	b, err := json.Marshal(v)
	if err != nil { // records hold strings, numbers and bytes only
		panic("ledger: encode state: " + err.Error())
	}
	o.set(key, b)
}

// flush writes the staged writes into a batch, in sorted key order.
func (o *overlay) flush(b dbm.Batch) error {
	keys := make([]string, 0, len(o.writes))
	for k := range o.writes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := b.Set([]byte(k), o.writes[k]); err != nil {
			return fmt.Errorf("ledger: stage write: %w", err)
		}
	}
	return nil
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
