// Package receiptmsg is the receipt message the gateway publishes to a
// device (docs/internals.md, "Records, receipts and leaves"): its JSON form,
// written by hand on the ingest path, and its verification.
package receiptmsg

import (
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/edgeanchor/edgeanchor/anchor"
)

// ErrReceipt means a receipt message or body is malformed or does not
// verify (the error also wraps anchor.ErrReceipt when the receipt parsed).
var ErrReceipt = errors.New("gateway: bad receipt")

// Message is what the gateway publishes on the receipt topic
// (docs/internals.md, "Records, receipts and leaves"):
//
//	{"receipt":"<b64 body>","group":"<b64 statement>","path":["<hex>",…],"sig":"<b64>"}
//
// Sig is over Group, the statement of the record's commit group, and Path
// proves Receipt's leaf in the group's tree. A message without Group is the
// older per-record form: Sig is over Receipt. Once the record's batch is
// anchored a second message adds Batch, Height, TX.
type Message struct {
	Receipt []byte        `json:"receipt"` // receipt body bytes (base64 in JSON)
	Group   []byte        `json:"group,omitempty"`
	Path    []anchor.Hash `json:"path,omitempty"`
	Sig     []byte        `json:"sig"` // gateway SM2 signature over Group (or Receipt)
	Batch   uint64        `json:"batch,omitempty"`
	Height  int64         `json:"height,omitempty"`
	TX      string        `json:"tx,omitempty"`
}

// MarshalJSON encodes the message in the member order above, with "path"
// (possibly []) whenever there is a group. It is written by hand: every
// stored record's message is encoded on the ingest path.
func (m Message) MarshalJSON() ([]byte, error) {
	b64 := base64.StdEncoding
	n := 64 + b64.EncodedLen(len(m.Receipt)) + b64.EncodedLen(len(m.Group)) + 67*len(m.Path) +
		b64.EncodedLen(len(m.Sig)) + len(m.TX)
	b := make([]byte, 0, n)
	b = append(b, `{"receipt":"`...)
	b = b64.AppendEncode(b, m.Receipt)
	if m.Group != nil {
		b = append(b, `","group":"`...)
		b = b64.AppendEncode(b, m.Group)
		b = append(b, `","path":[`...)
		for i, h := range m.Path {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '"')
			b = hex.AppendEncode(b, h[:])
			b = append(b, '"')
		}
		b = append(b, `],"sig":"`...)
	} else {
		b = append(b, `","sig":"`...)
	}
	b = b64.AppendEncode(b, m.Sig)
	b = append(b, '"')
	if m.Batch != 0 {
		b = strconv.AppendUint(append(b, `,"batch":`...), m.Batch, 10)
	}
	if m.Height != 0 {
		b = strconv.AppendInt(append(b, `,"height":`...), m.Height, 10)
	}
	if m.TX != "" {
		tx, err := json.Marshal(m.TX)
		if err != nil {
			return nil, err
		}
		b = append(append(b, `,"tx":`...), tx...)
	}
	return append(b, '}'), nil
}

// Verify checks a receipt message against the gateway's public key
// with anchor.VerifyReceipt (either form) and returns the parsed body.
func Verify(msg []byte, gatewayPub *ecdsa.PublicKey) (*anchor.Receipt, error) {
	var m Message
	if err := json.Unmarshal(msg, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrReceipt, err)
	}
	r, err := anchor.VerifyReceipt(m.Receipt, m.Group, m.Path, m.Sig, gatewayPub)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrReceipt, err)
	}
	return r, nil
}
