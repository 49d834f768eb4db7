package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	dbm "github.com/cometbft/cometbft-db"
	abci "github.com/cometbft/cometbft/abci/types"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

// appFixture drives the application directly through ABCI calls, the way
// CometBFT does, over a real goleveldb database in a temp dir.
type appFixture struct {
	t         testing.TB
	dir       string
	db        dbm.DB
	app       *App
	appState  []byte
	committee *device.KeySigner
	regul     *device.KeySigner
	gw        *device.KeySigner
	height    int64
}

func newAppFixture(t testing.TB) *appFixture {
	t.Helper()
	f := &appFixture{t: t, dir: t.TempDir(), committee: newKey(t), regul: newKey(t), gw: newKey(t)}
	ader, _ := device.MarshalPublicKeyDER(f.committee.Public())
	rder, _ := device.MarshalPublicKeyDER(f.regul.Public())
	gg, err := genesisGateway(f.gw.Public(), "site-a", "A")
	if err != nil {
		t.Fatal(err)
	}
	f.appState, _ = json.Marshal(anchor.GenesisState{Committee: anchor.Committee{Members: [][]byte{ader}, Threshold: 1}, Regulators: [][]byte{rder}, Gateways: []anchor.GenesisGateway{gg}})
	f.open()
	if _, err := f.app.InitChain(context.Background(), &abci.RequestInitChain{AppStateBytes: f.appState}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *appFixture) open() {
	f.t.Helper()
	db, err := dbm.NewGoLevelDB("edgeanchor", f.dir)
	if err != nil {
		f.t.Fatal(err)
	}
	app, err := NewApp(db, testLogger(), nil)
	if err != nil {
		f.t.Fatal(err)
	}
	f.db, f.app = db, app
	f.t.Cleanup(func() { db.Close() })
}

// block runs FinalizeBlock and Commit for txs and returns the result codes.
func (f *appFixture) block(txs ...[]byte) ([]Code, []byte) {
	f.t.Helper()
	f.height++
	ctx := context.Background()
	res, err := f.app.FinalizeBlock(ctx, &abci.RequestFinalizeBlock{Height: f.height, Txs: txs})
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.app.Commit(ctx, &abci.RequestCommit{}); err != nil {
		f.t.Fatal(err)
	}
	codes := make([]Code, len(res.TxResults))
	for i, r := range res.TxResults {
		codes[i] = Code(r.Code)
	}
	return codes, res.AppHash
}

func (f *appFixture) checkTx(tx []byte, typ abci.CheckTxType) Code {
	f.t.Helper()
	res, err := f.app.CheckTx(context.Background(), &abci.RequestCheckTx{Tx: tx, Type: typ})
	if err != nil {
		f.t.Fatal(err)
	}
	return Code(res.Code)
}

func codesEqual(a, b []Code) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// TestFinalizeBlockSequential: transactions in one block see the ones
// before them; a refusal in FinalizeBlock changes nothing.
func TestFinalizeBlockSequential(t *testing.T) {
	f := newAppFixture(t)
	c := &chain{gw: f.gw}
	h1 := c.next(2)
	c.advance(h1)
	h2 := c.next(3)
	dev := newKey(t)
	codes, _ := f.block(
		anchorTx(t, f.gw, h2),                    // seq 2 before seq 1: gap
		anchorTx(t, f.gw, h1),                    // seq 1
		anchorTx(t, f.gw, h2),                    // seq 2 now follows
		registerDeviceTx(t, f.gw, dev, "site-a"), // applied
		revokeDeviceTx(t, f.regul, dev.DID()),    // sees the registration
		revokeDeviceTx(t, f.regul, dev.DID()),    // already revoked
		[]byte(`{"body":"AA==","signer":"x","sig":"AA=="}`),
	)
	want := []Code{CodeSequenceGap, CodeOK, CodeOK, CodeOK, CodeOK, CodeDeviceRevoked, CodeMalformed}
	if !codesEqual(codes, want) {
		t.Fatalf("codes %v, want %v", codes, want)
	}
	var g anchor.GatewayRecord
	if _, err := newOverlay(newCommitted(f.db)).getJSON(keyGateway(f.gw.DID()), &g); err != nil || g.LastSeq != 2 || g.LastHash != h2.Hash() {
		t.Fatalf("gateway after block: %+v %v", g, err)
	}
}

// TestCheckTxPipelining: consecutive batches may wait in the mempool
// together; recheck after a block rebuilds the view.
func TestCheckTxPipelining(t *testing.T) {
	f := newAppFixture(t)
	c := &chain{gw: f.gw}
	var txs [][]byte
	for range 3 {
		h := c.next(1)
		c.advance(h)
		txs = append(txs, anchorTx(t, f.gw, h))
	}
	for i, tx := range txs {
		if got := f.checkTx(tx, abci.CheckTxType_New); got != CodeOK {
			t.Fatalf("CheckTx seq %d: code %d", i+1, got)
		}
	}
	// A re-signed copy of seq 2 is a duplicate even before it commits.
	h2, _ := anchor.DecodeTx(txs[1])
	if got := f.checkTx(signTx(t, f.gw, h2.Body, nil), abci.CheckTxType_New); got != CodeDuplicate {
		t.Fatalf("CheckTx re-signed seq 2: code %d", got)
	}
	// Seq 1 commits; recheck of the others in mempool order keeps them valid.
	if codes, _ := f.block(txs[0]); !codesEqual(codes, []Code{CodeOK}) {
		t.Fatalf("block: %v", codes)
	}
	for i, tx := range txs[1:] {
		if got := f.checkTx(tx, abci.CheckTxType_Recheck); got != CodeOK {
			t.Fatalf("recheck seq %d: code %d", i+2, got)
		}
	}
	// The committed seq 1 is now refused as a duplicate.
	if got := f.checkTx(signTx(t, f.gw, mustDecode(t, txs[0]).Body, nil), abci.CheckTxType_New); got != CodeDuplicate {
		t.Fatalf("CheckTx committed seq 1 re-signed: code %d", got)
	}
}

func mustDecode(t *testing.T, raw []byte) *anchor.Tx {
	t.Helper()
	tx, err := anchor.DecodeTx(raw)
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

// TestProposals: PrepareProposal drops what does not apply, in order;
// ProcessProposal rejects a block holding a refused tx.
func TestProposals(t *testing.T) {
	f := newAppFixture(t)
	ctx := context.Background()
	c := &chain{gw: f.gw}
	h1 := c.next(1)
	c.advance(h1)
	h2 := c.next(1)
	good1, good2 := anchorTx(t, f.gw, h1), anchorTx(t, f.gw, h2)
	bad := anchorTx(t, newKey(t), (&chain{gw: newKey(t)}).next(1))
	prep, err := f.app.PrepareProposal(ctx, &abci.RequestPrepareProposal{Height: 1, MaxTxBytes: 1 << 20, Txs: [][]byte{good1, bad, good2, good2}})
	if err != nil {
		t.Fatal(err)
	}
	if len(prep.Txs) != 2 || !bytes.Equal(prep.Txs[0], good1) || !bytes.Equal(prep.Txs[1], good2) {
		t.Fatalf("PrepareProposal kept %d txs", len(prep.Txs))
	}
	pp, err := f.app.ProcessProposal(ctx, &abci.RequestProcessProposal{Height: 1, Txs: prep.Txs})
	if err != nil || pp.Status != abci.ResponseProcessProposal_ACCEPT {
		t.Fatalf("ProcessProposal of a prepared block: %v %v", pp.Status, err)
	}
	for name, txs := range map[string][][]byte{
		"refused tx":   {good1, bad},
		"out of order": {good2, good1},
		"malformed":    {[]byte("x")},
	} {
		pp, err := f.app.ProcessProposal(ctx, &abci.RequestProcessProposal{Height: 1, Txs: txs})
		if err != nil || pp.Status != abci.ResponseProcessProposal_REJECT {
			t.Errorf("ProcessProposal %s: %v %v", name, pp.Status, err)
		}
	}
	// Proposals never touch the state.
	if codes, _ := f.block(good1); !codesEqual(codes, []Code{CodeOK}) {
		t.Fatalf("block after proposals: %v", codes)
	}
}

// TestDeterministicAppHash: two applications fed the same blocks agree on
// every app hash, and it survives reopening the database.
func TestDeterministicAppHash(t *testing.T) {
	a, b := newAppFixture(t), newAppFixture(t)
	b.appState, b.committee, b.regul, b.gw = a.appState, a.committee, a.regul, a.gw
	b.app, _ = NewApp(b.db, testLogger(), nil)
	if _, err := b.app.InitChain(context.Background(), &abci.RequestInitChain{AppStateBytes: a.appState}); err != nil {
		t.Fatal(err)
	}
	c := &chain{gw: a.gw}
	var last []byte
	for i := range 4 {
		h := c.next(uint64(i + 1))
		c.advance(h)
		txs := [][]byte{anchorTx(t, a.gw, h), registerDeviceTx(t, a.gw, newKey(t), "site-a"), []byte("junk")}
		ca, ha := a.block(txs...)
		cb, hb := b.block(txs...)
		if !codesEqual(ca, cb) || !bytes.Equal(ha, hb) {
			t.Fatalf("block %d: %v %X vs %v %X", i+1, ca, ha, cb, hb)
		}
		if bytes.Equal(ha, last) {
			t.Fatalf("block %d applied txs but kept the app hash", i+1)
		}
		last = ha
	}
	// An empty block keeps the app hash.
	if _, h := a.block(); !bytes.Equal(h, last) {
		t.Fatalf("empty block changed the app hash")
	}
	// Reopen: Info reports the committed height and app hash.
	a.db.Close()
	a.open()
	info, err := a.app.Info(context.Background(), &abci.RequestInfo{})
	if err != nil || info.LastBlockHeight != 5 || !bytes.Equal(info.LastBlockAppHash, last) {
		t.Fatalf("Info after reopen: %+v %v", info, err)
	}
	// Genesis keys came back from the database: the committee may still act.
	if codes, _ := a.block(registerGatewayTx(t, a.committee, newKey(t), "site-z")); !codesEqual(codes, []Code{CodeOK}) {
		t.Fatalf("committee tx after reopen: %v", codes)
	}
}

// TestInitChainRefusesBadGenesis: a genesis without a committee (or with a
// threshold it cannot reach) stops the node with a clear error instead of
// running a ledger nobody can govern.
func TestInitChainRefusesBadGenesis(t *testing.T) {
	db := dbm.NewMemDB()
	app, err := NewApp(db, testLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{``, `{"admins":[]}`, `{"committee":{"members":[],"threshold":1},"regulators":[],"gateways":[]}`,
		`{"committee":{"members":["AA=="],"threshold":1},"regulators":[],"gateways":[]}`,
		`{"committee":{"members":[],"threshold":0},"regulators":[],"gateways":[],"extra":1}`} {
		if _, err := app.InitChain(context.Background(), &abci.RequestInitChain{AppStateBytes: []byte(st)}); err == nil {
			t.Errorf("InitChain(%q) accepted", st)
		}
	}
}

// TestDocsListEveryCode keeps docs/ledger.md's table in step with codes.go.
func TestDocsListEveryCode(t *testing.T) {
	doc, err := os.ReadFile("../../docs/ledger.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range Codes() {
		row := fmt.Sprintf("| %d | `%s` |", c, c.Name())
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/ledger.md lacks the row %q", row)
		}
	}
}

// FuzzCheckTx: whatever the bytes, CheckTx answers with a known code and
// never panics.
func FuzzCheckTx(f *testing.F) {
	fx := newAppFixture(f)
	c := &chain{gw: fx.gw}
	f.Add(anchorTx(f, fx.gw, c.next(1)))
	f.Add(registerDeviceTx(f, fx.gw, newKey(f), "site-a"))
	f.Add(revokeDeviceTx(f, fx.regul, fx.gw.DID()))
	f.Add(registerGatewayTx(f, fx.committee, newKey(f), "site-b"))
	f.Add([]byte(`{"body":"e30=","signer":"did:ea:00112233445566778899aabbccddeeff","sig":"AA=="}`))
	f.Fuzz(func(t *testing.T, tx []byte) {
		res, err := fx.app.CheckTx(context.Background(), &abci.RequestCheckTx{Tx: tx, Type: abci.CheckTxType_New})
		if err != nil {
			t.Fatal(err)
		}
		if Code(res.Code).Name() == "unknown" {
			t.Fatalf("CheckTx answered unknown code %d", res.Code)
		}
	})
}
