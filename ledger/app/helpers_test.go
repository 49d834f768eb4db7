package app

import (
	"crypto/ecdsa"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
)

func newKey(t testing.TB) *device.KeySigner {
	t.Helper()
	k, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return device.NewKeySigner(k)
}

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// Builders of signed transactions, failing the test on error.

func signTx(t testing.TB, s device.Signer, body []byte, err error) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	tx, err := anchor.EncodeTx(s, body)
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

var tsN = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// nextTS returns distinct timestamps so that re-made bodies differ.
func nextTS() time.Time {
	tsN = tsN.Add(time.Millisecond)
	return tsN
}

// farDeadline is a proposal deadline no test reaches.
const farDeadline = 1 << 40

// addGatewayBody is the body of an add-gateway proposal for gw.
func addGatewayBody(t testing.TB, gw device.Signer, site string, deadline int64) []byte {
	t.Helper()
	act, err := anchor.NewGatewayAction(gw.Public(), site, "gw "+site)
	if err != nil {
		t.Fatal(err)
	}
	b, err := anchor.NewProposalBody(anchor.KindAddGateway, act, deadline, nextTS())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// registerGatewayTx is an add-gateway proposal signed by a committee member
// (with threshold 1 it admits gw in its own block).
func registerGatewayTx(t testing.TB, committee device.Signer, gw device.Signer, site string) []byte {
	return signTx(t, committee, addGatewayBody(t, gw, site, farDeadline), nil)
}

func removeGatewayTx(t testing.TB, committee device.Signer, gw device.DID) []byte {
	b, err := anchor.NewProposalBody(anchor.KindRemoveGateway, &anchor.GatewayRefAction{DID: gw}, farDeadline, nextTS())
	return signTx(t, committee, b, err)
}

func approvalTx(t testing.TB, member device.Signer, id anchor.Hash) []byte {
	b, err := anchor.NewApprovalBody(id, nextTS())
	return signTx(t, member, b, err)
}

func registration(t testing.TB, dev device.Signer, kind, site string) (reg, sig []byte) {
	t.Helper()
	reg, err := credential.NewRegistration(dev.Public(), kind, site, nextTS(), "")
	if err != nil {
		t.Fatal(err)
	}
	sig, err = dev.Sign(reg)
	if err != nil {
		t.Fatal(err)
	}
	return reg, sig
}

func registerDeviceTx(t testing.TB, gw, dev device.Signer, site string) []byte {
	reg, sig := registration(t, dev, "payroll", site)
	b, err := anchor.NewRegisterDeviceBody(gw.DID(), reg, sig, nextTS())
	return signTx(t, gw, b, err)
}

func revokeDeviceTx(t testing.TB, signer device.Signer, dev device.DID) []byte {
	b, err := anchor.NewRevokeDeviceBody(dev, "lost", nextTS())
	return signTx(t, signer, b, err)
}

// chain follows one gateway's batch chain.
type chain struct {
	gw   device.Signer
	seq  uint64
	prev anchor.Hash
	last uint64
}

func (c *chain) next(n uint64) *anchor.BatchHeader {
	ts := nextTS()
	return &anchor.BatchHeader{
		Gateway: c.gw.DID(), Seq: c.seq + 1, Prev: c.prev, First: c.last + 1, Last: c.last + n, Count: n,
		Root: anchor.SM3([]byte(ts.String())), From: ts, To: ts,
	}
}

func (c *chain) advance(h *anchor.BatchHeader) { c.seq, c.prev, c.last = h.Seq, h.Hash(), h.Last }

func anchorTx(t testing.TB, signer device.Signer, h *anchor.BatchHeader) []byte {
	return signTx(t, signer, h.Encode(), nil)
}

// genesisGateway is the genesis entry of a gateway with key pub (as
// ledger.GenesisGatewayFromKey, which this package cannot import).
func genesisGateway(pub *ecdsa.PublicKey, site, name string) (anchor.GenesisGateway, error) {
	der, err := device.MarshalPublicKeyDER(pub)
	if err != nil {
		return anchor.GenesisGateway{}, err
	}
	return anchor.GenesisGateway{DID: device.DIDFromPublicKey(pub), Pub: der, Site: site, Name: name}, nil
}
