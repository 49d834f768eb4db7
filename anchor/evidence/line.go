package evidence

import (
	"bytes"
	"crypto/ecdsa"
	"fmt"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

// Gateway key rotation in proof bundles (docs/proof-bundle.md, "Key
// rotation"). After a rotation a record's batch header is signed by the
// gateway's new key while its device was registered, and possibly its
// receipt signed, by an older key of the same gateway. The bundle's Line
// proves that the older key is a predecessor of the header's key: for each
// rotation, newest first, the predecessor's last batch header and the
// successor's first one, whose AnchorBatch tx committed with code 0 with
// prev = anchor.SM3 of that header. The ledger accepts a header with seq > 1 only
// if it continues the signer's own chain, and a gateway's chain starts
// where another's ends only when the committee admitted it as that
// gateway's successor (add-gateway with succeeds): the link is the ledger's
// word that the keys are one gateway's.

// MaxLine bounds the links of one bundle (one per key rotation).
const MaxLine = 16

// BundleLink proves one key rotation of the bundle's gateway.
type BundleLink struct {
	// Gateway is the predecessor: its DID and key (SPKI DER).
	Gateway BundleGateway `json:"gateway"`
	// Last is the predecessor's last batch header (its exact bytes).
	Last anchor.Base64 `json:"last"`
	// Next is the successor's first batch header and its signature.
	Next BundleSigned `json:"next"`
	// Anchor proves Next's AnchorBatch tx committed with code 0.
	Anchor *AnchorProof `json:"anchor"`
}

// keyLine checks the bundle's Line against trust and returns the keys of the
// bundle's gateway and of every proven predecessor, by DID.
func (v *verifier) keyLine() (map[device.DID]*ecdsa.PublicKey, error) {
	if v.line != nil {
		return v.line, nil
	}
	line := map[device.DID]*ecdsa.PublicKey{v.b.Gateway.DID: v.gatewayPub}
	if len(v.b.Line) > MaxLine {
		return nil, fmt.Errorf("key line of %d links, at most %d", len(v.b.Line), MaxLine)
	}
	cur, curPub := v.b.Gateway.DID, v.gatewayPub
	for i, l := range v.b.Line {
		fail := func(format string, args ...any) error {
			return fmt.Errorf("key line link %d (%s → %s): %s", i+1, l.Gateway.DID, cur, fmt.Sprintf(format, args...))
		}
		pub, err := device.ParsePublicKeyDER(l.Gateway.Pub)
		if err != nil {
			return nil, fail("predecessor key: %v", err)
		}
		if !l.Gateway.DID.Matches(pub) {
			return nil, fail("predecessor key is %s", device.DIDFromPublicKey(pub))
		}
		last, err := anchor.ParseHeader(l.Last)
		if err != nil {
			return nil, fail("predecessor's last header: %v", err)
		}
		next, err := anchor.ParseHeader(l.Next.Body)
		if err != nil {
			return nil, fail("successor's first header: %v", err)
		}
		switch {
		case last.Gateway != l.Gateway.DID:
			return nil, fail("the predecessor's last header names %s", last.Gateway)
		case next.Gateway != cur:
			return nil, fail("the successor's first header names %s", next.Gateway)
		case next.Prev != anchor.SM3(l.Last) || next.Seq != last.Seq+1 || next.First != last.Last+1:
			return nil, fail("header %d does not continue header %d of %s", next.Seq, last.Seq, last.Gateway)
		case !device.VerifySignature(curPub, l.Next.Body, l.Next.Sig):
			return nil, fail("the successor's first header is not signed by %s", cur)
		case l.Anchor == nil:
			return nil, fail("no anchor proof")
		}
		tx, err := anchor.DecodeTx(l.Anchor.Tx)
		if err != nil {
			return nil, fail("anchor tx: %v", err)
		}
		if tx.Signer != cur || !bytes.Equal(tx.Body, l.Next.Body) || !bytes.Equal(tx.Sig, l.Next.Sig) {
			return nil, fail("the anchor tx is not the successor's first header")
		}
		if err := l.Anchor.Verify(v.trust); err != nil {
			return nil, fail("anchor: %v", err)
		}
		if _, dup := line[l.Gateway.DID]; dup {
			return nil, fail("%s appears twice", l.Gateway.DID)
		}
		line[l.Gateway.DID] = pub
		cur, curPub = l.Gateway.DID, pub
	}
	v.line = line
	return line, nil
}

// lineKey is the key of gw if the bundle proves it is its gateway or one of
// its predecessors.
func (v *verifier) lineKey(gw device.DID, what string) (*ecdsa.PublicKey, error) {
	if gw == v.b.Gateway.DID {
		return v.gatewayPub, nil
	}
	if len(v.b.Line) == 0 {
		return nil, fmt.Errorf("%s by %s, not by the bundle's gateway %s", what, gw, v.b.Gateway.DID)
	}
	line, err := v.keyLine()
	if err != nil {
		return nil, err
	}
	if pub := line[gw]; pub != nil {
		return pub, nil
	}
	return nil, fmt.Errorf("%s by %s, which the bundle's key line does not prove a predecessor of %s", what, gw, v.b.Gateway.DID)
}
