package ledgertest

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	"github.com/cometbft/cometbft/types"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/ledger"
)

// TestValidatorChanges runs four validators as OS processes and changes the
// set by committee proposals while the chain runs: a fifth validator (a
// member home made apart, given the chain's genesis) is added, block-syncs
// and then signs commits; validator 1 is removed and stops counting; with
// one of the four remaining validators killed, the chain keeps committing.
func TestValidatorChanges(t *testing.T) {
	c := StartCluster(t, 4)
	cl, err := ledgerclient.NewClient(c.RPC(0), ledgerclient.ClientOptions{Retries: 1, Backoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	submit := func(tx []byte) ledgerclient.TxCommit {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, err := cl.Submit(ctx, tx)
		if err != nil {
			t.Fatalf("submit: %v\n%s", err, c.tails())
		}
		return r
	}

	// The fifth organisation's home, made apart, with the chain's genesis
	// and the four nodes as peers.
	p5 := FreeBase(t, 1)
	home5 := filepath.Join(t.TempDir(), "org5")
	h5, m5, err := ledger.InitMember(home5, ledger.MemberOptions{Org: "org5", P2PPort: p5, RPCPort: p5 + 1, PrometheusPort: p5 + 2})
	if err != nil {
		t.Fatal(err)
	}
	var peers []string
	for i := range 4 {
		conf, err := ledger.LoadConfig(c.Homes[i])
		if err != nil {
			t.Fatal(err)
		}
		nk, err := p2p.LoadNodeKey(conf.NodeKeyFile())
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, fmt.Sprintf("%s@%s", nk.ID(), strings.TrimPrefix(conf.P2P.ListenAddress, "tcp://")))
	}
	if _, err := ledger.InstallGenesis(home5, filepath.Join(c.Homes[0], "config", "genesis.json"), strings.Join(peers, ",")); err != nil {
		t.Fatal(err)
	}

	// Let the chain grow a little, so that the new node has blocks to sync.
	c.WaitHeight(t, 5, 60*time.Second)
	add := ProposalTx(t, c.Committee, anchor.KindAddValidator,
		&anchor.ValidatorAction{Pub: m5.Validator.PubKey, Power: 10, Name: m5.Org}, NoDeadline)
	r := submit(add)
	t.Logf("add-validator committed at height %d", r.Height)
	i5 := c.AddHome(home5, h5.RPCURL)

	addr5 := types.Address(privval.LoadFilePV(filepath.Join(home5, "config", "priv_validator_key.json"), filepath.Join(home5, "data", "priv_validator_state.json")).Key.Address)
	rpc0 := mustRPC(t, c.RPC(0))
	// The change applies at height r+2; the fifth node must then sign.
	signed := waitSigned(t, c, rpc0, addr5, r.Height+2, 90*time.Second)
	t.Logf("validator 5 (%s) signed the commit of height %d", addr5, signed)
	if h, err := c.Height(i5); err != nil || h < signed {
		t.Fatalf("node 5 at height %d (%v), it signed %d", h, err, signed)
	}

	// Remove validator 1.
	pv1 := privval.LoadFilePV(filepath.Join(c.Homes[1], "config", "priv_validator_key.json"), filepath.Join(c.Homes[1], "data", "priv_validator_state.json"))
	r = submit(ProposalTx(t, c.Committee, anchor.KindRemoveValidator, &anchor.ValidatorRefAction{Pub: pv1.Key.PubKey.Bytes()}, NoDeadline))
	after := r.Height + 2
	c.WaitNodeHeight(t, 0, after+1, 60*time.Second)
	vals := validatorsAt(t, rpc0, after)
	if len(vals) != 4 || containsAddr(vals, pv1.Key.Address) || !containsAddr(vals, addr5) {
		t.Fatalf("validators at %d: %v", after, vals)
	}
	// Node 1 still runs (a full node now) and follows; its key no longer counts.
	c.Kill(1)
	// With one of the four validators down (node 2), the other three keep committing.
	c.Kill(2)
	h0, _ := c.Height(0)
	c.WaitNodeHeight(t, 0, h0+3, 60*time.Second)
	gw := NewGateway(t, "site-v")
	submit(gw.RegisterTx(t, c.Committee))
	tx, _ := gw.NextAnchor(t, 1)
	ar := submit(tx)
	t.Logf("anchor committed at height %d with validators 0, 3, 5 of {0, 2, 3, 5}", ar.Height)
}

func mustRPC(t *testing.T, url string) *rpchttp.HTTP {
	t.Helper()
	cli, err := rpchttp.New(url, "/websocket")
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// waitSigned waits for a commit at or above from that addr signed, and
// returns its height.
func waitSigned(t *testing.T, c *Cluster, cli *rpchttp.HTTP, addr types.Address, from int64, timeout time.Duration) int64 {
	t.Helper()
	var found int64
	err := testutil.Poll(timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		st, err := cli.Status(ctx)
		if err != nil {
			return err
		}
		for h := from; h <= st.SyncInfo.LatestBlockHeight; h++ {
			hh := h
			res, err := cli.Commit(ctx, &hh)
			if err != nil {
				return err
			}
			for _, s := range res.Commit.Signatures {
				if s.BlockIDFlag == types.BlockIDFlagCommit && s.ValidatorAddress.String() == addr.String() {
					found = h
					return nil
				}
			}
			from = h + 1
		}
		return fmt.Errorf("no commit from height %d signed by %s yet (at %d)", from, addr, st.SyncInfo.LatestBlockHeight)
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, c.tails())
	}
	return found
}

func validatorsAt(t *testing.T, cli *rpchttp.HTTP, h int64) []*types.Validator {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hh := h
	res, err := cli.Validators(ctx, &hh, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.Validators
}

func containsAddr(vals []*types.Validator, addr types.Address) bool {
	for _, v := range vals {
		if v.Address.String() == addr.String() {
			return true
		}
	}
	return false
}
