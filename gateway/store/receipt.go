package store

import (
	"crypto/ecdsa"
	"encoding/json"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/store/receiptmsg"
)

// ErrReceipt means a receipt message or body is malformed or does not
// verify (package gateway/store/receiptmsg).
var ErrReceipt = receiptmsg.ErrReceipt

// ReceiptMessage is what the gateway publishes on the receipt topic
// (package gateway/store/receiptmsg).
type ReceiptMessage = receiptmsg.Message

// encodeReceipt returns the receipt body bytes.
func encodeReceipt(gw device.DID, gseq uint64, did device.DID, seq uint64, recv time.Time, envHash anchor.Hash) ([]byte, error) {
	return json.Marshal(anchor.Receipt{
		Type: anchor.ReceiptType, V: 1, Gateway: gw, GSeq: gseq, DID: did, Seq: seq,
		Recv: recv.UTC().Format(time.RFC3339Nano), Env: envHash,
	})
}

// VerifyReceipt checks a receipt message against the gateway's public key
// (receiptmsg.Verify) and returns the parsed body.
func VerifyReceipt(msg []byte, gatewayPub *ecdsa.PublicKey) (*anchor.Receipt, error) {
	return receiptmsg.Verify(msg, gatewayPub)
}
