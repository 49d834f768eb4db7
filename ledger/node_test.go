package ledger

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"

	"github.com/edgeanchor/edgeanchor/ledger/app"
)

// TestOneNode drives a real single-validator CometBFT node over its RPC:
// every transaction type commits, every rule refuses with its own code, the
// queries and tx_search answer.
func TestOneNode(t *testing.T) {
	tn := newTestNode(t)
	gwA, gwB, stranger := tn.gwA, newKey(t), newKey(t)
	dev1, dev2, dev3 := newKey(t), newKey(t), newKey(t)

	body := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// Every tx type is accepted.
	gwBBody := addGatewayBody(t, gwB, "site-b", farDeadline)
	regGW := tn.mustApply(signTx(t, tn.committee, gwBBody, nil))
	regDev1 := tn.mustApply(registerDeviceTx(t, gwA, dev1, "site-a"))
	tn.mustApply(registerDeviceTx(t, gwB, dev2, "site-b"))
	tn.mustApply(registerDeviceTx(t, gwA, dev3, "site-a"))
	ca := &chain{gw: gwA}
	h1 := ca.next(250)
	anc1 := tn.mustApply(anchorTx(t, gwA, h1))
	ca.advance(h1)
	h2 := ca.next(10)
	anc2 := tn.mustApply(anchorTx(t, gwA, h2))
	ca.advance(h2)
	rev1 := tn.mustApply(revokeDeviceTx(t, gwA, dev1.DID()))  // by its gateway
	tn.mustApply(revokeDeviceTx(t, tn.regul, dev2.DID()))     // by a regulator
	tn.mustApply(removeGatewayTx(t, tn.committee, gwB.DID())) // membership ends
	if regGW.height == 0 || anc2.height < anc1.height {
		t.Fatalf("heights not recorded: %+v %+v", regGW, anc2)
	}

	// Queries.
	var d anchor.DeviceRecord
	if c := tn.query("/device/"+dev1.DID().String(), &d); c != app.CodeOK {
		t.Fatalf("/device: code %d", c)
	}
	if d.Status != app.StatusRevoked || d.Height != regDev1.height || d.Tx != strings.ToLower(regDev1.hash) ||
		d.RevokedHeight != rev1.height || d.Gateway != gwA.DID() || d.Kind != "payroll" || d.Site != "site-a" {
		t.Fatalf("/device answer %+v; registered %+v revoked %+v", d, regDev1, rev1)
	}
	if c := tn.query("/device/"+dev3.DID().String(), &d); c != app.CodeOK || d.Status != app.StatusActive {
		t.Fatalf("/device dev3: code %d %+v", c, d)
	}
	var g anchor.GatewayRecord
	if c := tn.query("/gateway/"+gwB.DID().String(), &g); c != app.CodeOK || g.Status != app.StatusRemoved || g.Site != "site-b" || g.Height != regGW.height {
		t.Fatalf("/gateway gwB: code %d %+v", c, g)
	}
	if c := tn.query("/gateway/"+gwA.DID().String(), &g); c != app.CodeOK || g.Status != app.StatusMember || g.LastSeq != 2 || g.LastHash != h2.Hash() || g.LastRecord != 260 {
		t.Fatalf("/gateway gwA: code %d %+v", c, g)
	}
	var devs []anchor.DeviceRecord
	if c := tn.query("/gateway/"+gwA.DID().String()+"/devices", &devs); c != app.CodeOK || len(devs) != 2 {
		t.Fatalf("/gateway/devices: code %d %+v", c, devs)
	}
	if devs[0].DID > devs[1].DID {
		t.Fatalf("/gateway/devices not sorted by DID: %s %s", devs[0].DID, devs[1].DID)
	}
	var b anchor.BatchRecord
	if c := tn.query(fmt.Sprintf("/batch/%s/1", gwA.DID()), &b); c != app.CodeOK || b.Hash != h1.Hash() || string(b.Header) != string(h1.Encode()) || b.Height != anc1.height || b.Tx != strings.ToLower(anc1.hash) {
		t.Fatalf("/batch: code %d %+v", c, b)
	}
	if !device.VerifySignature(gwA.Public(), b.Header, b.Sig) {
		t.Fatal("/batch signature does not verify under the gateway key")
	}
	if c := tn.query("/batch-by-root/"+h2.Root.String(), &b); c != app.CodeOK || b.Seq != 2 {
		t.Fatalf("/batch-by-root: code %d %+v", c, b)
	}
	if c := tn.query("/last-batch/"+gwA.DID().String(), &b); c != app.CodeOK || b.Seq != 2 || b.Hash != h2.Hash() {
		t.Fatalf("/last-batch: code %d %+v", c, b)
	}
	for path, want := range map[string]app.Code{
		"/device/" + stranger.DID().String():                    app.CodeNotFound,
		"/last-batch/" + gwB.DID().String():                     app.CodeNotFound,
		"/batch/" + gwA.DID().String() + "/3":                   app.CodeNotFound,
		"/batch-by-root/" + anchor.SM3([]byte("none")).String(): app.CodeNotFound,
		"/device/nonsense":                                      app.CodeBadQuery,
		"/batch/" + gwA.DID().String() + "/x":                   app.CodeBadQuery,
		"/nothing":                                              app.CodeBadQuery,
	} {
		if c := tn.query(path, nil); c != want {
			t.Errorf("query %s: code %d, want %d", path, c, want)
		}
	}

	// tx_search finds an anchor by gateway and sequence.
	ctx := context.Background()
	found, err := tn.cli.TxSearch(ctx, fmt.Sprintf("anchor.gateway='%s' AND anchor.seq=2", gwA.DID()), false, nil, nil, "asc")
	if err != nil {
		t.Fatal(err)
	}
	if found.TotalCount != 1 || found.Txs[0].Height != anc2.height {
		t.Fatalf("tx_search: %d results %+v", found.TotalCount, found.Txs)
	}
	found, err = tn.cli.TxSearch(ctx, fmt.Sprintf("device.did='%s' AND device.action='revoke'", dev1.DID()), false, nil, nil, "asc")
	if err != nil || found.TotalCount != 1 {
		t.Fatalf("tx_search device revoke: %v %+v", err, found)
	}

	// Every rule refuses with its code.
	reg, regSig := registration(t, stranger, "payroll", "site-a")
	other := newKey(t)
	forged := func(signer device.DID, b []byte) []byte {
		sig, _ := other.Sign(b)
		return (&anchor.Tx{Body: b, Signer: signer, Sig: sig}).Encode()
	}
	b64 := base64.StdEncoding.EncodeToString
	badKind := []byte(strings.Replace(string(reg), `"kind":"payroll"`, `"kind":"robot"`, 1))
	badKindSig, _ := stranger.Sign(badKind)
	cases := []struct {
		name string
		tx   []byte
		want app.Code
	}{
		{"malformed bytes", []byte("not a transaction"), app.CodeMalformed},
		{"malformed body", []byte(`{"body":"` + b64([]byte(`{"type":"AnchorBatch","v":1}`)) + `","signer":"` + gwA.DID().String() + `","sig":"AA=="}`), app.CodeMalformed},
		{"unknown type", []byte(`{"body":"` + b64([]byte(`{"type":"Mint"}`)) + `","signer":"` + gwA.DID().String() + `","sig":"AA=="}`), app.CodeUnknownType},
		{"gateway registration by non-committee", registerGatewayTx(t, gwA, stranger, "site-x"), app.CodeWrongSigner},
		{"gateway registration with forged committee signature", forged(tn.committee.DID(), addGatewayBody(t, stranger, "s", farDeadline)), app.CodeBadSignature},
		{"gateway already member", registerGatewayTx(t, tn.committee, gwA, "site-a"), app.CodeGatewayExists},
		{"remove unknown gateway", removeGatewayTx(t, tn.committee, stranger.DID()), app.CodeGatewayUnknown},
		{"remove by a gateway", removeGatewayTx(t, gwA, gwA.DID()), app.CodeWrongSigner},
		{"device by non-member", registerDeviceTx(t, stranger, newKey(t), "site-a"), app.CodeNotMember},
		{"device by removed member", registerDeviceTx(t, gwB, newKey(t), "site-b"), app.CodeNotMember},
		{"device for another gateway", signTx(t, gwA, body(anchor.NewRegisterDeviceBody(gwB.DID(), reg, regSig, nextTS())), nil), app.CodeWrongSigner},
		{"device signature missing", signTx(t, gwA, body(anchor.NewRegisterDeviceBody(gwA.DID(), reg, nil, nextTS())), nil), app.CodeDeviceSigMissing},
		{"device signature wrong", signTx(t, gwA, body(anchor.NewRegisterDeviceBody(gwA.DID(), reg, func() []byte { s, _ := other.Sign(reg); return s }(), nextTS())), nil), app.CodeDeviceSigInvalid},
		{"device registration malformed", signTx(t, gwA, body(anchor.NewRegisterDeviceBody(gwA.DID(), badKind, badKindSig, nextTS())), nil), app.CodeRegistrationInvalid},
		{"device wrong site", registerDeviceTx(t, gwA, newKey(t), "site-b"), app.CodeWrongSite},
		{"device already registered", registerDeviceTx(t, gwA, dev3, "site-a"), app.CodeDeviceExists},
		{"revoked device registered again", registerDeviceTx(t, gwA, dev1, "site-a"), app.CodeDeviceExists},
		{"revoke revoked device", revokeDeviceTx(t, gwA, dev1.DID()), app.CodeDeviceRevoked},
		{"revoke unknown device", revokeDeviceTx(t, gwA, stranger.DID()), app.CodeDeviceUnknown},
		{"revoke by another gateway", revokeDeviceTx(t, stranger, dev3.DID()), app.CodeWrongSigner},
		{"revoke with forged gateway signature", forged(gwA.DID(), body(anchor.NewRevokeDeviceBody(dev3.DID(), "x", nextTS()))), app.CodeBadSignature},
		{"anchor by non-member", anchorTx(t, stranger, (&chain{gw: stranger}).next(1)), app.CodeNotMember},
		{"anchor by removed member", anchorTx(t, gwB, (&chain{gw: gwB}).next(1)), app.CodeNotMember},
		{"anchor signed by another gateway", anchorTx(t, stranger, ca.next(1)), app.CodeWrongSigner},
		{"anchor with forged signature", forged(gwA.DID(), ca.next(1).Encode()), app.CodeBadSignature},
		{"anchor sequence gap", anchorTx(t, gwA, func() *anchor.BatchHeader { h := ca.next(1); h.Seq = 4; return h }()), app.CodeSequenceGap},
		{"anchor replays seq 2", anchorTx(t, gwA, h2), app.CodeDuplicate},
		{"anchor wrong prev", anchorTx(t, gwA, func() *anchor.BatchHeader { h := ca.next(1); h.Prev = h1.Hash(); return h }()), app.CodeWrongPrev},
		{"anchor record gap", anchorTx(t, gwA, func() *anchor.BatchHeader { h := ca.next(1); h.First, h.Last = 262, 262; return h }()), app.CodeRecordGap},
		{"gateway registration re-signed", signTx(t, tn.committee, gwBBody, nil), app.CodeDuplicate},
	}
	for _, c := range cases {
		r := tn.submit(c.tx)
		if r.code != c.want {
			t.Errorf("%s: code %d (%s) %q, want %d (%s)", c.name, r.code, r.code.Name(), r.log, c.want, c.want.Name())
		}
	}

	// Refusals changed nothing: the chain continues where it was.
	if c := tn.query("/gateway/"+gwA.DID().String(), &g); c != app.CodeOK || g.LastSeq != 2 {
		t.Fatalf("refusals moved the chain: %+v", g)
	}
	if c := tn.query("/device/"+stranger.DID().String(), nil); c != app.CodeNotFound {
		t.Fatalf("a refused registration was stored: code %d", c)
	}
	h3 := ca.next(5)
	tn.mustApply(anchorTx(t, gwA, h3))

	// Application metrics.
	if got := tn.counter("edgeanchor_ledger_anchors_total", "gateway", string(gwA.DID())); got != 3 {
		t.Errorf("anchors_total{gateway=gwA} = %v, want 3", got)
	}
	if got := tn.counter("edgeanchor_ledger_registrations_total", "", ""); got != 3 {
		t.Errorf("registrations_total = %v, want 3", got)
	}
	if got := tn.counter("edgeanchor_ledger_revocations_total", "", ""); got != 2 {
		t.Errorf("revocations_total = %v, want 2", got)
	}
	if got := tn.counter("edgeanchor_ledger_refused_total", "code", "sequence_gap"); got != 1 {
		t.Errorf("refused_total{code=sequence_gap} = %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(tn.reg, "edgeanchor_ledger_refused_total"); err != nil || n < 10 {
		t.Errorf("refused_total series on the registry: %d, %v", n, err)
	}
}

// TestRestart stops a node and starts it again on the same home: height,
// app hash and state survive, and new transactions are accepted.
func TestRestart(t *testing.T) {
	tn := newTestNode(t)
	dev := newKey(t)
	tn.mustApply(registerDeviceTx(t, tn.gwA, dev, "site-a"))
	ca := &chain{gw: tn.gwA}
	h1 := ca.next(3)
	r1 := tn.mustApply(anchorTx(t, tn.gwA, h1))
	ca.advance(h1)
	tn.waitHeight(r1.height + 1)
	before, beforeHash := tn.node.App().LastCommit()
	tn.stop()

	tn.start()
	a := tn.node.App()
	if a.Height() < before {
		t.Fatalf("height after restart %d < %d", a.Height(), before)
	}
	info, err := tn.cli.ABCIInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Response.LastBlockHeight < before {
		t.Fatalf("abci_info height %d < %d", info.Response.LastBlockHeight, before)
	}
	blk, err := tn.cli.Block(context.Background(), &before)
	if err != nil {
		t.Fatal(err)
	}
	// The header of height h+1 carries the app hash after block h.
	next := before + 1
	tn.waitHeight(next)
	nb, err := tn.cli.Block(context.Background(), &next)
	if err != nil {
		t.Fatal(err)
	}
	if string(nb.Block.AppHash) != string(beforeHash) || blk.Block.Height != before {
		t.Fatalf("app hash after restart %X, committed before stop %X", nb.Block.AppHash, beforeHash)
	}
	var d anchor.DeviceRecord
	if c := tn.query("/device/"+dev.DID().String(), &d); c != app.CodeOK || d.Status != app.StatusActive {
		t.Fatalf("device lost across restart: code %d %+v", c, d)
	}
	// The chain continues: seq 2 follows, a replayed seq 1 is a duplicate.
	if r := tn.submit(anchorTx(t, tn.gwA, h1)); r.code != app.CodeDuplicate {
		t.Fatalf("replayed anchor after restart: code %d", r.code)
	}
	h2 := ca.next(4)
	r2 := tn.mustApply(anchorTx(t, tn.gwA, h2))
	if r2.height <= r1.height {
		t.Fatalf("new anchor at height %d, first at %d", r2.height, r1.height)
	}
	var b anchor.BatchRecord
	if c := tn.query("/last-batch/"+tn.gwA.DID().String(), &b); c != app.CodeOK || b.Seq != 2 || b.Hash != h2.Hash() {
		t.Fatalf("/last-batch after restart: code %d %+v", c, b)
	}

	// Lose the application database: CometBFT's handshake replays every
	// block from genesis and the same state and app hash come back.
	tn.waitHeight(r2.height + 1)
	height, appHash := tn.node.App().LastCommit()
	tn.stop()
	if err := os.RemoveAll(filepath.Join(tn.home.Dir, "data", AppDBName+".db")); err != nil {
		t.Fatal(err)
	}
	tn.start()
	replayed, err := tn.cli.Block(context.Background(), &height)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := tn.node.App().LastCommit(); h < height {
		t.Fatalf("replayed to height %d, had %d", h, height)
	}
	if c := tn.query("/last-batch/"+tn.gwA.DID().String(), &b); c != app.CodeOK || b.Seq != 2 || b.Height != r2.height {
		t.Fatalf("/last-batch after replay: code %d %+v", c, b)
	}
	next = height + 1
	tn.waitHeight(next)
	nb, err = tn.cli.Block(context.Background(), &next)
	if err != nil {
		t.Fatal(err)
	}
	if string(nb.Block.AppHash) != string(appHash) || replayed.Block.Height != height {
		t.Fatalf("app hash after replay %X, before %X", nb.Block.AppHash, appHash)
	}
}

// TestStartNodePortTaken: a port in use fails StartNode with a clear error
// and releases everything, so the same home starts once the port is free.
func TestStartNodePortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	home, err := InitHome(t.TempDir(), HomeOptions{P2PPort: freePort(t), RPCPort: l.Addr().(*net.TCPAddr).Port, NoPrometheus: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := StartNode(context.Background(), home.Dir, NodeOptions{Logger: testLogger()}); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("StartNode with its RPC port taken: %v", err)
	}
	l.Close()
	n, err := StartNode(context.Background(), home.Dir, NodeOptions{Logger: testLogger()})
	if err != nil {
		t.Fatalf("StartNode after the port was freed: %v", err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := StartNode(context.Background(), t.TempDir(), NodeOptions{}); !errors.Is(err, ErrNoHome) {
		t.Fatalf("StartNode on an empty dir: %v", err)
	}
}

// TestStartNodeAlreadyRunning: a second start of a running home is refused
// as such, naming the process that runs it, and leaves the running node
// alone; once it stops, the home starts again.
func TestStartNodeAlreadyRunning(t *testing.T) {
	home, err := InitHome(t.TempDir(), HomeOptions{P2PPort: freePort(t), RPCPort: freePort(t), NoPrometheus: true})
	if err != nil {
		t.Fatal(err)
	}
	n, err := StartNode(context.Background(), home.Dir, NodeOptions{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = StartNode(context.Background(), home.Dir, NodeOptions{Logger: testLogger()})
	if !errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), fmt.Sprintf("(pid %d)", os.Getpid())) {
		t.Fatalf("second StartNode = %v, want ErrRunning naming pid %d", err, os.Getpid())
	}
	if !n.comet.IsRunning() {
		t.Fatal("the refused start stopped the running node")
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	n, err = StartNode(context.Background(), home.Dir, NodeOptions{Logger: testLogger()})
	if err != nil {
		t.Fatalf("start after stop: %v", err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
}
