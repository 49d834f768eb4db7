package anchor

import "github.com/edgeanchor/edgeanchor/device"

// DeviceRecord is the ledger's answer for /device/{did} and the record it
// stores. This is the one definition: the ledger uses these types.
type DeviceRecord struct {
	DID           device.DID `json:"did"`
	Pub           []byte     `json:"pub"` // SPKI DER
	Kind          string     `json:"kind"`
	Site          string     `json:"site"`
	Gateway       device.DID `json:"gateway"`
	Status        string     `json:"status"` // "active" or "revoked"
	Height        int64      `json:"height"`
	Tx            string     `json:"tx"`
	Registration  []byte     `json:"registration"`
	DeviceSig     []byte     `json:"device_sig"`
	RevokedHeight int64      `json:"revoked_height,omitempty"`
	RevokedTx     string     `json:"revoked_tx,omitempty"`
	RevokedBy     device.DID `json:"revoked_by,omitempty"`
	RevokeReason  string     `json:"revoke_reason,omitempty"`
}

// GatewayRecord is the ledger's answer for /gateway/{did} and the record it
// stores. Height and Tx are those of the latest registration (0 and "" for
// a genesis gateway); LastSeq, LastHash and LastRecord follow its batch
// chain (0, 64 zeros, 0 before the first batch).
type GatewayRecord struct {
	DID           device.DID `json:"did"`
	Pub           []byte     `json:"pub"`
	Site          string     `json:"site"`
	Name          string     `json:"name"`
	Status        string     `json:"status"` // "member" or "removed"
	Height        int64      `json:"height"`
	Tx            string     `json:"tx"`
	RemovedHeight int64      `json:"removed_height,omitempty"`
	RemovedTx     string     `json:"removed_tx,omitempty"`
	LastSeq       uint64     `json:"last_seq"`
	LastHash      Hash       `json:"last_hash"`
	LastRecord    uint64     `json:"last_record"`
	// Key rotation (docs/ledger.md): Predecessor is the gateway whose
	// chain and devices this one took over; Successor the one that took
	// over this gateway's, at SucceededHeight in tx SucceededTx.
	Predecessor     device.DID `json:"predecessor,omitempty"`
	Successor       device.DID `json:"successor,omitempty"`
	SucceededHeight int64      `json:"succeeded_height,omitempty"`
	SucceededTx     string     `json:"succeeded_tx,omitempty"`
}

// BatchRecord is the ledger's answer for /batch/…, /batch-by-root/… and
// /last-batch/… and the record the ledger stores: the exact header bytes,
// the gateway's signature over them, the header hash, and where the anchor
// tx sits.
type BatchRecord struct {
	Gateway device.DID `json:"gateway"`
	Seq     uint64     `json:"seq"`
	Header  []byte     `json:"header"` // the exact AnchorBatch body bytes
	Sig     []byte     `json:"sig"`
	Hash    Hash       `json:"hash"`
	Root    Hash       `json:"root"`
	First   uint64     `json:"first"`
	Last    uint64     `json:"last"`
	Height  int64      `json:"height"`
	Tx      string     `json:"tx"`
	Index   uint32     `json:"index"`
}
