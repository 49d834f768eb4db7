package ledger

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/types"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"

	"github.com/edgeanchor/edgeanchor/ledger/app"
)

// freeBase finds P such that P+10k+{0,1,2} are free for k < n.
func freeBase(t *testing.T, n int) int {
	t.Helper()
	for range 50 {
		base := 20000 + rand.IntN(30000)
		ok := true
		var ls []net.Listener
		for k := 0; k < n && ok; k++ {
			for d := range 3 {
				l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+10*k+d))
				if err != nil {
					ok = false
					break
				}
				ls = append(ls, l)
			}
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

func TestTestnetHomes(t *testing.T) {
	out := t.TempDir()
	homes, err := Testnet(out, 4, 40000, HomeOptions{ChainID: "edgeanchor-tn"})
	if err != nil {
		t.Fatal(err)
	}
	if len(homes) != 4 {
		t.Fatalf("%d homes", len(homes))
	}
	var genesis []byte
	seen := map[string]bool{}
	for k, h := range homes {
		conf, err := LoadConfig(h.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, addr := range []string{conf.P2P.ListenAddress, conf.RPC.ListenAddress, conf.Instrumentation.PrometheusListenAddr} {
			if seen[addr] {
				t.Errorf("address %s used twice", addr)
			}
			seen[addr] = true
		}
		if want := fmt.Sprintf("tcp://127.0.0.1:%d", 40000+10*k); conf.P2P.ListenAddress != want {
			t.Errorf("node%d p2p %s, want %s", k, conf.P2P.ListenAddress, want)
		}
		if want := fmt.Sprintf("tcp://127.0.0.1:%d", 40000+10*k+1); conf.RPC.ListenAddress != want {
			t.Errorf("node%d rpc %s, want %s", k, conf.RPC.ListenAddress, want)
		}
		if want := fmt.Sprintf("127.0.0.1:%d", 40000+10*k+2); conf.Instrumentation.PrometheusListenAddr != want || !conf.Instrumentation.Prometheus {
			t.Errorf("node%d prometheus %s", k, conf.Instrumentation.PrometheusListenAddr)
		}
		peers := strings.Split(conf.P2P.PersistentPeers, ",")
		if len(peers) != 3 || strings.Contains(conf.P2P.PersistentPeers, h.NodeID) {
			t.Errorf("node%d persistent peers %q", k, conf.P2P.PersistentPeers)
		}
		// The consortium defaults survive the round trip through config.toml.
		if conf.Consensus.TimeoutCommit != 300*time.Millisecond || conf.Consensus.TimeoutPropose != time.Second ||
			conf.P2P.FlushThrottleTimeout != 10*time.Millisecond || conf.TxIndex.Indexer != "kv" ||
			!conf.Consensus.CreateEmptyBlocks || conf.Consensus.CreateEmptyBlocksInterval != time.Second ||
			conf.P2P.AddrBookStrict || !conf.P2P.AllowDuplicateIP || conf.Consensus.PeerGossipSleepDuration != 10*time.Millisecond {
			t.Errorf("node%d consortium defaults lost: %+v %+v", k, conf.Consensus, conf.P2P)
		}
		g, err := os.ReadFile(conf.GenesisFile())
		if err != nil {
			t.Fatal(err)
		}
		if genesis == nil {
			genesis = g
		} else if string(g) != string(genesis) {
			t.Errorf("node%d has another genesis", k)
		}
	}
	doc, err := types.GenesisDocFromJSON(genesis)
	if err != nil || len(doc.Validators) != 4 || doc.ChainID != "edgeanchor-tn" {
		t.Fatalf("genesis: %v %+v", err, doc)
	}
	for _, f := range []string{CommitteeKeyFile, RegulatorKeyFile} {
		fi, err := os.Stat(filepath.Join(out, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v mode %v", f, err, fi.Mode())
		}
		if _, err := device.LoadKeySigner(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	// Never overwritten.
	if _, err := Testnet(out, 4, 40000, HomeOptions{}); !errors.Is(err, ErrHomeExists) {
		t.Fatalf("second testnet in the same dir: %v", err)
	}
	if _, err := InitHome(homes[0].Dir, HomeOptions{}); !errors.Is(err, ErrHomeExists) {
		t.Fatalf("init over a testnet home: %v", err)
	}
	for _, bad := range []struct{ n, base int }{{0, 30000}, {65, 30000}, {4, 80}, {4, 65530}} {
		if _, err := Testnet(t.TempDir(), bad.n, bad.base, HomeOptions{}); err == nil {
			t.Errorf("Testnet(%d, %d) accepted", bad.n, bad.base)
		}
	}
}

// TestTwoValidators starts a two-validator testnet in-process: both must
// sign every block, so a committed anchor shows the homes are wired.
func TestTwoValidators(t *testing.T) {
	homes, err := Testnet(t.TempDir(), 2, freeBase(t, 2), HomeOptions{NoPrometheus: true})
	if err != nil {
		t.Fatal(err)
	}
	committee, err := device.LoadKeySigner(homes[0].CommitteeKey)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*testNode
	for _, h := range homes {
		// CometBFT v0.38's consensus reactor can wake from a sleep inside
		// queryMaj23Routine after Stop has closed the block store, load a
		// commit and panic ("leveldb: closed"), taking this test binary down
		// (seen under load). Two nodes in one process are the only peers
		// in this package's tests; their maj23 query pause outlasts the
		// binary, so none wakes after Stop. Nodes in their own processes
		// (ledgertest clusters, production) exit after Stop.
		conf, err := LoadConfig(h.Dir)
		if err != nil {
			t.Fatal(err)
		}
		conf.Consensus.PeerQueryMaj23SleepDuration = time.Hour
		cfg.WriteConfigFile(filepath.Join(h.Dir, "config", "config.toml"), conf)
		n, err := StartNode(context.Background(), h.Dir, NodeOptions{Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Stop() })
		tn := &testNode{t: t, home: h, node: n, committee: committee}
		tn.cli = mustClient(t, n.RPCURL())
		nodes = append(nodes, tn)
	}
	gw := newKey(t)
	r := nodes[0].mustApply(registerGatewayTx(t, committee, gw, "site-a"))
	c := &chain{gw: gw}
	r2 := nodes[1].mustApply(anchorTx(t, gw, c.next(1)))
	nodes[0].waitHeight(r2.height)
	var g anchor.GatewayRecord
	if code := nodes[0].query("/gateway/"+gw.DID().String(), &g); code != app.CodeOK || g.LastSeq != 1 || g.Height != r.height {
		t.Fatalf("node0 view: code %d %+v", code, g)
	}
	blk, err := nodes[0].cli.Commit(context.Background(), &r2.height)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(blk.Commit.Signatures); n != 2 {
		t.Fatalf("commit at %d has %d signatures, want 2", r2.height, n)
	}
}
