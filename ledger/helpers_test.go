package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cfg "github.com/cometbft/cometbft/config"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"

	"github.com/edgeanchor/edgeanchor/ledger/app"
)

// freePort asks the kernel for a free 127.0.0.1 port.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

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

// testNode is one validator on loopback with a genesis gateway gwA (site-a).
type testNode struct {
	t         *testing.T
	home      *Home
	node      *Node
	cli       *rpchttp.HTTP
	reg       *prometheus.Registry
	committee *device.KeySigner
	regul     *device.KeySigner
	gwA       *device.KeySigner
}

func newTestNode(t *testing.T) *testNode {
	t.Helper()
	gwA := newKey(t)
	gg, err := GenesisGatewayFromKey(gwA.Public(), "site-a", "Gateway A")
	if err != nil {
		t.Fatal(err)
	}
	home, err := InitHome(t.TempDir(), HomeOptions{
		ChainID: "edgeanchor-test", P2PPort: freePort(t), RPCPort: freePort(t), NoPrometheus: true,
		Gateways: []anchor.GenesisGateway{gg},
	})
	if err != nil {
		t.Fatal(err)
	}
	committee, err := device.LoadKeySigner(home.CommitteeKey)
	if err != nil {
		t.Fatal(err)
	}
	regul, err := device.LoadKeySigner(home.RegulatorKey)
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{t: t, home: home, committee: committee, regul: regul, gwA: gwA}
	tn.start()
	return tn
}

func (tn *testNode) start() {
	t := tn.t
	t.Helper()
	tn.reg = prometheus.NewRegistry()
	var n *Node
	var err error
	// Other tests on this host pick ports too: if ours was taken since it
	// was chosen, move to fresh ones.
	for attempt := 0; ; attempt++ {
		n, err = StartNode(context.Background(), tn.home.Dir, NodeOptions{Logger: testLogger(), Registerer: tn.reg})
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		conf, lerr := LoadConfig(tn.home.Dir)
		if lerr != nil {
			t.Fatal(lerr)
		}
		conf.P2P.ListenAddress = fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t))
		conf.RPC.ListenAddress = fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t))
		cfg.WriteConfigFile(filepath.Join(tn.home.Dir, "config", "config.toml"), conf)
	}
	if err != nil {
		t.Fatal(err)
	}
	tn.node = n
	t.Cleanup(func() { _ = n.Stop() })
	tn.cli = mustClient(t, n.RPCURL())
	tn.waitHeight(1)
}

func mustClient(t testing.TB, url string) *rpchttp.HTTP {
	t.Helper()
	cli, err := rpchttp.New(url, "/websocket")
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

func (tn *testNode) stop() {
	if err := tn.node.Stop(); err != nil {
		tn.t.Fatal(err)
	}
}

// waitHeight waits until the application has committed height h
// (abci_info): /status's height is the block store's, which saves a block
// before the application runs it, so a query right after it could still
// answer from the height before.
func (tn *testNode) waitHeight(h int64) {
	t := tn.t
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		info, err := tn.cli.ABCIInfo(context.Background())
		if err == nil && info.Response.LastBlockHeight >= h {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("node did not reach height %d", h)
}

// result of a submission: the CheckTx code, or the FinalizeBlock code and
// the height once committed.
type result struct {
	code   app.Code
	log    string
	height int64
	hash   string
}

// submit broadcasts tx (broadcast_tx_sync) and, if CheckTx took it, waits
// until it is committed.
func (tn *testNode) submit(tx []byte) result {
	t := tn.t
	t.Helper()
	ctx := context.Background()
	res, err := tn.cli.BroadcastTxSync(ctx, tx)
	if err != nil {
		t.Fatalf("broadcast_tx_sync: %v", err)
	}
	if res.Code != 0 {
		return result{code: app.Code(res.Code), log: res.Log}
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		r, err := tn.cli.Tx(ctx, res.Hash, false)
		if err == nil {
			return result{code: app.Code(r.TxResult.Code), log: r.TxResult.Log, height: r.Height, hash: res.Hash.String()}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("tx %s not committed", res.Hash)
	return result{}
}

func (tn *testNode) mustApply(tx []byte) result {
	tn.t.Helper()
	r := tn.submit(tx)
	if r.code != app.CodeOK {
		tn.t.Fatalf("tx refused: code %d (%s) %s", r.code, r.code.Name(), r.log)
	}
	return r
}

// query runs an ABCI query through the RPC and decodes its JSON answer.
func (tn *testNode) query(path string, v any) app.Code {
	tn.t.Helper()
	res, err := tn.cli.ABCIQuery(context.Background(), path, nil)
	if err != nil {
		tn.t.Fatalf("abci_query %s: %v", path, err)
	}
	if res.Response.Code == 0 && v != nil {
		if err := json.Unmarshal(res.Response.Value, v); err != nil {
			tn.t.Fatalf("abci_query %s: %v", path, err)
		}
	}
	return app.Code(res.Response.Code)
}

// counter is the value of the application counter name (with label =
// value, if label is not "") on the node's registry.
func (tn *testNode) counter(name, label, value string) float64 {
	tn.t.Helper()
	mfs, err := tn.reg.Gather()
	if err != nil {
		tn.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if label == "" || (l.GetName() == label && l.GetValue() == value) {
					return m.GetCounter().GetValue()
				}
			}
			if label == "" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
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
