package anchor

import (
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/edgeanchor/edgeanchor/device"
)

// Gateway receipts (docs/internals.md, "Records, receipts and leaves"). The
// gateway signs once per commit group: a ReceiptGroup statement names the
// group's gseq range and the RFC 6962 SM3 root over its receipt bodies; a
// record's receipt is its body, the statement, the body's inclusion path
// and the signature over the statement. A receipt without a statement is
// the older per-record form: the signature is over the body itself.

// ReceiptType is the "type" of a gateway receipt body.
const ReceiptType = "Receipt"

// ReceiptGroupType is the "type" of the statement the gateway signs once
// per commit group.
const ReceiptGroupType = "ReceiptGroup"

// ErrReceipt is wrapped by every receipt verification failure: the receipt
// was changed, belongs to another record or gateway, or is malformed. Ask
// the gateway for the record again; nothing can be concluded from it.
var ErrReceipt = errors.New("anchor: receipt does not verify")

// Receipt is the receipt of one record
// (docs/internals.md, "Records, receipts and leaves"):
//
//	{"type":"Receipt","v":1,"gateway":"did:ea:…","gseq":7,"did":"did:ea:…","seq":3,"recv":"…Z","env":"<hex SM3 of the envelope>"}
type Receipt struct {
	Type    string     `json:"type"`
	V       int        `json:"v"`
	Gateway device.DID `json:"gateway"`
	GSeq    uint64     `json:"gseq"`
	DID     device.DID `json:"did"`
	Seq     uint64     `json:"seq"`
	Recv    string     `json:"recv"`
	Env     Hash       `json:"env"`
}

// ParseReceipt decodes receipt body bytes strictly and checks its members.
func ParseReceipt(b []byte) (*Receipt, error) {
	var r Receipt
	if err := decodeStrict(b, &r); err != nil {
		return nil, fmt.Errorf("receipt: %w", err)
	}
	switch {
	case r.Type != ReceiptType:
		return nil, fmt.Errorf("receipt: type %q, want %q", r.Type, ReceiptType)
	case r.V != 1:
		return nil, fmt.Errorf("receipt: version %d, want 1", r.V)
	case r.GSeq == 0 || r.Seq == 0:
		return nil, errors.New("receipt: gseq and seq start at 1")
	}
	if _, err := device.ParseDID(string(r.Gateway)); err != nil {
		return nil, fmt.Errorf("receipt: gateway: %w", err)
	}
	if _, err := device.ParseDID(string(r.DID)); err != nil {
		return nil, fmt.Errorf("receipt: did: %w", err)
	}
	if _, err := ParseTime(r.Recv); err != nil {
		return nil, fmt.Errorf("receipt: recv: %w", err)
	}
	return &r, nil
}

// ReceiptGroup is the statement the gateway signs once per commit group:
//
//	{"type":"ReceiptGroup","v":1,"gateway":"did:ea:…","first":7,"count":12,"root":"<hex SM3>"}
//
// Root is the RFC 6962 SM3 root over the receipt bodies of gseq
// first..first+count-1, leaf i = the body of gseq first+i, leaf hash =
// SM3(0x00 ‖ body), no salt (ReceiptGroupTree).
type ReceiptGroup struct {
	Type    string     `json:"type"`
	V       int        `json:"v"`
	Gateway device.DID `json:"gateway"`
	First   uint64     `json:"first"`
	Count   uint64     `json:"count"`
	Root    Hash       `json:"root"`
}

// NewReceiptGroup returns the statement bytes of a commit group.
func NewReceiptGroup(gw device.DID, first, count uint64, root Hash) []byte {
	b, _ := json.Marshal(ReceiptGroup{Type: ReceiptGroupType, V: 1, Gateway: gw, First: first, Count: count, Root: root})
	return b
}

// ParseReceiptGroup decodes statement bytes strictly and checks its members.
func ParseReceiptGroup(b []byte) (*ReceiptGroup, error) {
	var g ReceiptGroup
	if err := decodeStrict(b, &g); err != nil {
		return nil, fmt.Errorf("receipt group: %w", err)
	}
	switch {
	case g.Type != ReceiptGroupType:
		return nil, fmt.Errorf("receipt group: type %q, want %q", g.Type, ReceiptGroupType)
	case g.V != 1:
		return nil, fmt.Errorf("receipt group: version %d, want 1", g.V)
	case g.First == 0:
		return nil, errors.New("receipt group: first starts at 1")
	case g.Count == 0 || g.Count > MaxTreeSize:
		return nil, fmt.Errorf("receipt group: count %d out of range 1..%d", g.Count, uint64(MaxTreeSize))
	case g.First > math.MaxUint64-g.Count+1:
		return nil, fmt.Errorf("receipt group: first %d + count %d overflows", g.First, g.Count)
	}
	if _, err := device.ParseDID(string(g.Gateway)); err != nil {
		return nil, fmt.Errorf("receipt group: gateway: %w", err)
	}
	return &g, nil
}

// ReceiptLeafHash is the leaf hash of a receipt body in its group's tree:
// SM3(0x00 ‖ body), a batch leaf without the salt.
func ReceiptLeafHash(body []byte) Hash { return LeafHash(nil, body) }

// ReceiptGroupTree returns the RFC 6962 root over the receipt bodies (leaf i
// = bodies[i]) and the inclusion path of every leaf, leaf to root, as
// transparency-dev/merkle's proof.VerifyInclusion expects them. It builds
// the tree once (2n hashes), where n calls of InclusionProof would hash n²
// times. The paths share one backing array.
func ReceiptGroupTree(bodies [][]byte) (Hash, [][]Hash) {
	n := len(bodies)
	if n == 0 {
		return Hash(SM3Hasher{}.EmptyRoot()), nil
	}
	leaves := make([]Hash, n)
	for i, b := range bodies {
		leaves[i] = ReceiptLeafHash(b)
	}
	levels := treeLevels(leaves)
	backing := make([]Hash, 0, n*(len(levels)-1))
	paths := make([][]Hash, n)
	for i := range n {
		start := len(backing)
		backing = appendPath(backing, levels, uint64(i))
		paths[i] = backing[start:len(backing):len(backing)]
	}
	return levels[len(levels)-1][0], paths
}

// VerifyReceipt checks one record's receipt under the gateway's public key
// and returns the parsed body. group nil is the older per-record form: sig
// is over body and path must be empty. Otherwise (docs/internals.md): body
// and group parse strictly; both name the gateway of gatewayPub; first ≤
// gseq < first+count; path proves the body's leaf at index gseq−first in a
// tree of count leaves under root; sig verifies over the group bytes.
// Failures wrap ErrReceipt.
func VerifyReceipt(body, group []byte, path []Hash, sig []byte, gatewayPub *ecdsa.PublicKey) (*Receipt, error) {
	return (&ReceiptChecker{Pub: gatewayPub}).Verify(body, group, path, sig)
}

// ReceiptChecker verifies the receipts of one gateway like VerifyReceipt,
// checking each distinct signature over the same document once: an audit
// of a commit group's records verifies its statement's signature once. Not
// safe for concurrent use.
type ReceiptChecker struct {
	Pub *ecdsa.PublicKey

	gw       device.DID         // DID of Pub, computed once
	verified map[[2]string]bool // (statement, sig) pairs that verified
	sigs     int                // signatures verified (not from the cache)
}

// SignaturesVerified returns how many SM2 signatures the checker verified;
// a statement seen again with the same signature is not verified again.
func (c *ReceiptChecker) SignaturesVerified() int { return c.sigs }

// maxCachedSignatures bounds the checker's memory (one entry per commit
// group seen).
const maxCachedSignatures = 1 << 16

// Verify is VerifyReceipt with the checker's key and cache.
func (c *ReceiptChecker) Verify(body, group []byte, path []Hash, sig []byte) (*Receipt, error) {
	if c.Pub == nil {
		return nil, fmt.Errorf("%w: no gateway key", ErrReceipt)
	}
	if c.gw == "" {
		c.gw = device.DIDFromPublicKey(c.Pub)
	}
	r, err := ParseReceipt(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrReceipt, err)
	}
	if r.Gateway != c.gw {
		return nil, fmt.Errorf("%w: receipt names gateway %s, the key is %s's", ErrReceipt, r.Gateway, c.gw)
	}
	signed := body
	if group == nil {
		if len(path) != 0 {
			return nil, fmt.Errorf("%w: a Merkle path without a group statement", ErrReceipt)
		}
	} else {
		g, err := ParseReceiptGroup(group)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrReceipt, err)
		}
		if g.Gateway != r.Gateway {
			return nil, fmt.Errorf("%w: group statement of gateway %s, receipt of %s", ErrReceipt, g.Gateway, r.Gateway)
		}
		if r.GSeq < g.First || r.GSeq-g.First >= g.Count {
			return nil, fmt.Errorf("%w: gseq %d outside the group %d..%d", ErrReceipt, r.GSeq, g.First, g.First+g.Count-1)
		}
		if err := VerifyInclusion(ReceiptLeafHash(body), r.GSeq-g.First, g.Count, path, g.Root); err != nil {
			return nil, fmt.Errorf("%w: receipt not in its group (gseq %d..%d): %v", ErrReceipt, g.First, g.First+g.Count-1, err)
		}
		signed = group
	}
	if !c.verifySig(signed, sig, group != nil) {
		what := "receipt"
		if group != nil {
			what = "group statement"
		}
		return nil, fmt.Errorf("%w: %s signature does not verify under the key of %s", ErrReceipt, what, c.gw)
	}
	return r, nil
}

// verifySig verifies sig over msg, remembering the pair when cache is set
// (group statements: per-record bodies are never seen twice).
func (c *ReceiptChecker) verifySig(msg, sig []byte, cache bool) bool {
	if !cache {
		c.sigs++
		return device.VerifySignature(c.Pub, msg, sig)
	}
	k := [2]string{string(msg), string(sig)}
	if c.verified[k] {
		return true
	}
	c.sigs++
	if !device.VerifySignature(c.Pub, msg, sig) {
		return false
	}
	if c.verified == nil || len(c.verified) >= maxCachedSignatures {
		c.verified = map[[2]string]bool{}
	}
	c.verified[k] = true
	return true
}
