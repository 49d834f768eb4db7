package audit

import (
	"context"
	"crypto/ecdsa"
	"fmt"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

// After a gateway key rotation (docs/ledger.md, "Gateway key rotation") the
// audited gateway's chain starts with its predecessors' batches, and the
// receipts of records received before the switch are signed by their keys.
// The audit accepts a header or receipt of the gateway or of a predecessor
// the ledger records (following predecessor links), each under that key.

// maxLine bounds the predecessors followed.
const maxLine = 64

// lineKey is one key of the audited gateway's line.
type lineKey struct {
	pub      *ecdsa.PublicKey
	receipts *anchor.ReceiptChecker // verifies each commit group's signature once
}

// loadLine reads the audited gateway's predecessors from the ledger.
func (a *auditor) loadLine(ctx context.Context, gr *anchor.GatewayRecord) error {
	a.line = map[device.DID]*lineKey{a.o.Gateway: {pub: a.gwPub, receipts: a.receipts}}
	for gr.Predecessor != "" && len(a.line) < maxLine {
		prev, err := a.ledger.Gateway(ctx, gr.Predecessor)
		if err != nil {
			return fmt.Errorf("audit: predecessor %s on the ledger: %w", gr.Predecessor, err)
		}
		pub, err := device.ParsePublicKeyDER(prev.Pub)
		if err != nil || !prev.DID.Matches(pub) || prev.Successor != gr.DID {
			return fmt.Errorf("audit: the ledger's record of predecessor %s is inconsistent", gr.Predecessor)
		}
		a.line[prev.DID] = &lineKey{pub: pub, receipts: &anchor.ReceiptChecker{Pub: pub}}
		gr = prev
	}
	return nil
}

// receiptChecker returns the checker of the key that signed receipt body
// rb: the audited gateway's, or a predecessor's.
func (a *auditor) receiptChecker(rb []byte) *anchor.ReceiptChecker {
	if r, err := anchor.ParseReceipt(rb); err == nil {
		if k := a.line[r.Gateway]; k != nil {
			return k.receipts
		}
	}
	return a.receipts
}

// signaturesVerified sums the receipt signatures verified under every key.
func (a *auditor) signaturesVerified() int {
	n := 0
	for _, k := range a.line {
		n += k.receipts.SignaturesVerified()
	}
	return n
}
