package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// ledgerEnv is a real single-validator ledger with one member gateway.
type ledgerEnv struct {
	node   *ledgertest.Node
	client *ledgerclient.Client
	gw     *ledgertest.Gateway
	gwKey  *sm2.PrivateKey
}

func newLedgerEnv(t *testing.T, site string) *ledgerEnv {
	t.Helper()
	n := ledgertest.StartSingle(t)
	c, err := ledgerclient.NewClient(n.RPC, ledgerclient.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e := &ledgerEnv{node: n, client: c, gwKey: priv,
		gw: &ledgertest.Gateway{Signer: device.NewKeySigner(priv), Site: site, Name: "gw-under-test"}}
	e.submit(t, e.gw.RegisterTx(t, n.Committee))
	return e
}

func (e *ledgerEnv) submit(t *testing.T, tx []byte) ledgerclient.TxCommit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := e.client.Submit(ctx, tx)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return r
}
