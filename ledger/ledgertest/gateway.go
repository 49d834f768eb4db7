// Package ledgertest starts real ledger nodes for tests of other packages:
// a single in-process validator (StartSingle) or a consortium of validators
// as separate OS processes (StartCluster), and makes test gateways that
// register and anchor chains of batch headers. Used only by tests and
// benchmarks.
package ledgertest

import (
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
)

// Gateway is a test gateway: its key, its site and the state of its batch
// chain. Safe for concurrent use.
type Gateway struct {
	Signer *device.KeySigner
	Site   string
	Name   string

	mu         sync.Mutex
	seq        uint64
	prev       anchor.Hash
	lastRecord uint64
}

// NewGateway makes a gateway with a fresh key.
func NewGateway(t testing.TB, site string) *Gateway {
	t.Helper()
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatalf("ledgertest: gateway key: %v", err)
	}
	s := device.NewKeySigner(priv)
	return &Gateway{Signer: s, Site: site, Name: "gw-" + string(s.DID())[len(device.DIDPrefix):][:8]}
}

// DID is the gateway's DID.
func (g *Gateway) DID() device.DID { return g.Signer.DID() }

// NoDeadline is the deadline height of the helpers' proposals: far enough
// that a test never reaches it.
const NoDeadline = 1 << 40

// RegisterTx returns an add-gateway Proposal admitting g, signed by member.
// On a chain whose committee is member alone (threshold 1: StartSingle,
// StartCluster) the proposal takes effect in its own block.
func (g *Gateway) RegisterTx(t testing.TB, member device.Signer) []byte {
	t.Helper()
	act, err := anchor.NewGatewayAction(g.Signer.Public(), g.Site, g.Name)
	if err != nil {
		t.Fatalf("ledgertest: add-gateway action: %v", err)
	}
	return ProposalTx(t, member, anchor.KindAddGateway, act, NoDeadline)
}

// ProposalTx returns a Proposal of kind with action, signed by signer.
func ProposalTx(t testing.TB, signer device.Signer, kind string, action any, deadline int64) []byte {
	t.Helper()
	body, err := anchor.NewProposalBody(kind, action, deadline, time.Now())
	if err != nil {
		t.Fatalf("ledgertest: proposal body: %v", err)
	}
	return mustTx(t, signer, body)
}

// ApprovalTx returns an Approval of proposal id signed by member.
func ApprovalTx(t testing.TB, member device.Signer, id anchor.Hash) []byte {
	t.Helper()
	body, err := anchor.NewApprovalBody(id, time.Now())
	if err != nil {
		t.Fatalf("ledgertest: approval body: %v", err)
	}
	return mustTx(t, member, body)
}

// GenesisEntry is g as an entry of the genesis app_state.
func (g *Gateway) GenesisEntry(t testing.TB) anchor.GenesisGateway {
	t.Helper()
	der, err := device.MarshalPublicKeyDER(g.Signer.Public())
	if err != nil {
		t.Fatalf("ledgertest: gateway key: %v", err)
	}
	return anchor.GenesisGateway{DID: g.DID(), Pub: der, Site: g.Site, Name: g.Name}
}

// NextAnchor returns the AnchorBatch tx of the gateway's next batch header
// (count records, a random root) and advances the chain, as if the ledger
// will accept it: submit the same bytes until it commits.
func (g *Gateway) NextAnchor(t testing.TB, count uint64) ([]byte, *anchor.BatchHeader) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	h := g.header(count)
	tx := mustTx(t, g.Signer, h.Encode())
	g.seq, g.prev, g.lastRecord = h.Seq, h.Hash(), h.Last
	return tx, h
}

// PeekAnchor is NextAnchor without advancing the chain.
func (g *Gateway) PeekAnchor(t testing.TB, count uint64) ([]byte, *anchor.BatchHeader) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	h := g.header(count)
	return mustTx(t, g.Signer, h.Encode()), h
}

// AnchorTx signs an arbitrary header as g (for refusal tests).
func (g *Gateway) AnchorTx(t testing.TB, h *anchor.BatchHeader) []byte {
	t.Helper()
	return mustTx(t, g.Signer, h.Encode())
}

func (g *Gateway) header(count uint64) *anchor.BatchHeader {
	if count == 0 {
		count = 1
	}
	var root anchor.Hash
	_, _ = rand.Read(root[:])
	now := time.Now().UTC()
	return &anchor.BatchHeader{
		Gateway: g.DID(), Seq: g.seq + 1, Prev: g.prev,
		First: g.lastRecord + 1, Last: g.lastRecord + count, Count: count,
		Root: root, From: now.Add(-time.Second), To: now,
	}
}

// NewDevice makes a device key and the RegisterDevice tx by which g
// registers it with kind at g's site.
func (g *Gateway) NewDevice(t testing.TB, kind string) (*device.KeySigner, []byte) {
	t.Helper()
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatalf("ledgertest: device key: %v", err)
	}
	dev := device.NewKeySigner(priv)
	return dev, g.RegisterDeviceTx(t, dev, kind)
}

// RegisterDeviceTx returns the RegisterDevice tx by which g registers dev.
func (g *Gateway) RegisterDeviceTx(t testing.TB, dev device.Signer, kind string) []byte {
	t.Helper()
	reg, err := credential.NewRegistration(dev.Public(), kind, g.Site, time.Now(), "")
	if err != nil {
		t.Fatalf("ledgertest: registration: %v", err)
	}
	sig, err := dev.Sign(reg)
	if err != nil {
		t.Fatalf("ledgertest: sign registration: %v", err)
	}
	body, err := anchor.NewRegisterDeviceBody(g.DID(), reg, sig, time.Now())
	if err != nil {
		t.Fatalf("ledgertest: RegisterDevice body: %v", err)
	}
	return mustTx(t, g.Signer, body)
}

// RevokeDeviceTx returns the RevokeDevice tx of did signed by signer (the
// registering gateway or a regulator).
func RevokeDeviceTx(t testing.TB, signer device.Signer, did device.DID, reason string) []byte {
	t.Helper()
	body, err := anchor.NewRevokeDeviceBody(did, reason, time.Now())
	if err != nil {
		t.Fatalf("ledgertest: RevokeDevice body: %v", err)
	}
	return mustTx(t, signer, body)
}

func mustTx(t testing.TB, s device.Signer, body []byte) []byte {
	t.Helper()
	tx, err := anchor.EncodeTx(s, body)
	if err != nil {
		t.Fatalf("ledgertest: encode tx: %v", err)
	}
	return tx
}
