package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	jsonrpcclient "github.com/cometbft/cometbft/rpc/jsonrpc/client"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/ledger"
)

// Node is a single-validator ledger running in the test process.
type Node struct {
	RPC       string            // http://127.0.0.1:port
	Home      string            // the node's home directory
	ChainID   string            // the chain id
	Committee *device.KeySigner // the whole committee (threshold 1): its proposals take effect alone
	Regulator *device.KeySigner // the genesis regulator (may revoke any device)

	t    testing.TB
	log  *slog.Logger
	node *ledger.Node
}

// Options tune Start.
type Options struct {
	// Gateways are consortium members from genesis.
	Gateways []*Gateway
	// Logger receives the node's logs (errors to stderr if nil).
	Logger *slog.Logger
}

// StartSingle starts a single-validator ledger node in t.TempDir() with
// its RPC on a free 127.0.0.1 port, waits for its first block and stops it
// at t.Cleanup.
func StartSingle(t testing.TB) *Node { return Start(t, Options{}) }

// Start is StartSingle with options.
func Start(t testing.TB, opts Options) *Node {
	t.Helper()
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	var gws []anchor.GenesisGateway
	for _, g := range opts.Gateways {
		gws = append(gws, g.GenesisEntry(t))
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		ports := freePorts(t, 2)
		home, err := ledger.InitHome(t.TempDir(), ledger.HomeOptions{
			ChainID: "edgeanchor-test", P2PPort: ports[0], RPCPort: ports[1], NoPrometheus: true, Gateways: gws,
		})
		if err != nil {
			t.Fatalf("ledgertest: init home: %v", err)
		}
		n := &Node{RPC: home.RPCURL, Home: home.Dir, ChainID: "edgeanchor-test", t: t, log: logger}
		if n.Committee, err = device.LoadKeySigner(home.CommitteeKey); err != nil {
			t.Fatalf("ledgertest: committee key: %v", err)
		}
		if n.Regulator, err = device.LoadKeySigner(home.RegulatorKey); err != nil {
			t.Fatalf("ledgertest: regulator key: %v", err)
		}
		if lastErr = n.start(); lastErr != nil {
			continue // most likely a port taken between our probe and the node's bind
		}
		t.Cleanup(n.Stop)
		return n
	}
	t.Fatalf("ledgertest: start node: %v", lastErr)
	return nil
}

func (n *Node) start() error {
	node, err := ledger.StartNode(context.Background(), n.Home, ledger.NodeOptions{Logger: n.log})
	if err != nil {
		return err
	}
	n.node = node
	if err := waitHeight(n.RPC, 1, 30*time.Second); err != nil {
		_ = node.Stop()
		return err
	}
	return nil
}

// Stop stops the node (safe to call twice).
func (n *Node) Stop() {
	if n.node != nil {
		if err := n.node.Stop(); err != nil {
			n.t.Errorf("ledgertest: stop node: %v", err)
		}
	}
}

// Restart stops the node and starts it again from its home.
func (n *Node) Restart() {
	n.t.Helper()
	n.Stop()
	if err := n.start(); err != nil {
		n.t.Fatalf("ledgertest: restart node: %v", err)
	}
}

// Ledger returns the running ledger node.
func (n *Node) Ledger() *ledger.Node { return n.node }

// waitHeight polls rpc until the application has committed height h or
// more (abci_info). /status's height comes from the block store, which
// saves a block before the application runs it: a query right after
// /status says h can still answer from h-1.
func waitHeight(rpc string, h int64, timeout time.Duration) error {
	hc, err := jsonrpcclient.DefaultHTTPClient(rpc)
	if err != nil {
		return err
	}
	hc.Timeout = 2 * time.Second
	defer hc.CloseIdleConnections()
	c, err := rpchttp.NewWithClient(rpc, "/websocket", hc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last int64
	for {
		info, err := c.ABCIInfo(ctx)
		if err == nil && info.Response.LastBlockHeight >= h {
			return nil
		}
		if err == nil {
			last = info.Response.LastBlockHeight
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ledgertest: %s did not reach height %d in %s (application at %d): %w", rpc, h, timeout, last, errors.Join(err, ctx.Err()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freePorts returns n distinct ports that were free on 127.0.0.1 a moment
// ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ls := make([]net.Listener, n)
	ports := make([]int, n)
	for i := range ls {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("ledgertest: free port: %v", err)
		}
		ls[i], ports[i] = l, l.Addr().(*net.TCPAddr).Port
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// SetDevicesPage sets how many devices one /gateway/{did}/devices answer of
// this node holds (0: the ledger's 10,000), so that a test reaches the
// paging with a few devices.
func (n *Node) SetDevicesPage(size int) { n.node.App().SetDevicesPage(size) }
