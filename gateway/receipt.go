package gateway

import (
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

// ErrReceipt means a receipt message or body is malformed or its gateway
// signature does not verify.
var ErrReceipt = errors.New("gateway: bad receipt")

// Receipt is the gateway-signed body that acknowledges one stored record
// (docs/internals.md "Records, receipts and leaves"); its one definition is
// anchor.ReceiptBody, which the proof bundle verifies.
type Receipt = anchor.ReceiptBody

// ReceiptMessage is what the gateway publishes on the receipt topic. Once
// the record's batch is anchored a second message adds Batch, Height, TX.
type ReceiptMessage struct {
	Receipt []byte `json:"receipt"` // receipt body bytes (base64 in JSON)
	Sig     []byte `json:"sig"`     // gateway SM2 signature over Receipt
	Batch   uint64 `json:"batch,omitempty"`
	Height  int64  `json:"height,omitempty"`
	TX      string `json:"tx,omitempty"`
}

// encodeReceipt returns the receipt body bytes.
func encodeReceipt(gw device.DID, gseq uint64, did device.DID, seq uint64, recv time.Time, envHash anchor.Hash) ([]byte, error) {
	return json.Marshal(Receipt{
		Type: anchor.ReceiptType, V: 1, Gateway: gw, GSeq: gseq, DID: did, Seq: seq,
		Recv: recv.UTC().Format(time.RFC3339Nano), Env: envHash,
	})
}

// VerifyReceipt checks a receipt message against the gateway's public key
// and returns the parsed body.
func VerifyReceipt(msg []byte, gatewayPub *ecdsa.PublicKey) (*Receipt, error) {
	var m ReceiptMessage
	if err := json.Unmarshal(msg, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrReceipt, err)
	}
	r, err := anchor.ParseReceipt(m.Receipt)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrReceipt, err)
	}
	if !r.Gateway.Matches(gatewayPub) {
		return nil, fmt.Errorf("%w: signed for gateway %s", ErrReceipt, r.Gateway)
	}
	if !device.VerifySignature(gatewayPub, m.Receipt, m.Sig) {
		return nil, fmt.Errorf("%w: signature does not verify", ErrReceipt)
	}
	return r, nil
}
