package ledgertest

import (
	"context"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
)

// Member is a single-validator ledger (StartSingle) with a client and one
// gateway the committee admitted: the ledger a gateway's own tests run
// against, from below the gateway (package gateway/gatewaytest adds the
// gateway itself).
type Member struct {
	*Node
	Client  *ledgerclient.Client
	Gateway *Gateway        // the member, named "gw-under-test"
	Key     *sm2.PrivateKey // the member's private key (Gateway.Signer's)
}

// StartMember starts the ledger, admits a gateway of site with a fresh key
// and returns them; everything stops at t.Cleanup.
func StartMember(t testing.TB, site string) *Member {
	t.Helper()
	n := StartSingle(t)
	c, err := ledgerclient.NewClient(n.RPC, ledgerclient.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	m := &Member{Node: n, Client: c, Key: priv,
		Gateway: &Gateway{Signer: device.NewKeySigner(priv), Site: site, Name: "gw-under-test"}}
	m.Submit(t, m.Gateway.RegisterTx(t, n.Committee))
	return m
}

// Submit submits tx and waits (at most 30 s) until it is committed; a
// refusal fails the test.
func (m *Member) Submit(t testing.TB, tx []byte) ledgerclient.TxCommit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := m.Client.Submit(ctx, tx)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return r
}
