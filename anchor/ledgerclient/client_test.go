package ledgerclient_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	rpchttp "github.com/cometbft/cometbft/rpc/client/http"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
	ledgerapp "github.com/edgeanchor/edgeanchor/ledger/app"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

func newClient(t *testing.T, rpc string, opts ledgerclient.ClientOptions) *ledgerclient.Client {
	t.Helper()
	c, err := ledgerclient.NewClient(rpc, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startWithGateway starts a single-validator ledger, a client with opts
// and a gateway of site-a admitted on it.
func startWithGateway(t *testing.T, opts ledgerclient.ClientOptions) (*ledgertest.Node, *ledgerclient.Client, *ledgertest.Gateway) {
	t.Helper()
	n := ledgertest.StartSingle(t)
	c := newClient(t, n.RPC, opts)
	gw := ledgertest.NewGateway(t, "site-a")
	submit(t, c, gw.RegisterTx(t, n.Committee))
	return n, c, gw
}

func submit(t *testing.T, c *ledgerclient.Client, tx []byte) ledgerclient.TxCommit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := c.Submit(ctx, tx)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return r
}

func TestClientSubmitQueryAndResubmit(t *testing.T) {
	n := ledgertest.StartSingle(t)
	c := newClient(t, n.RPC, ledgerclient.ClientOptions{})
	ctx := context.Background()

	gw := ledgertest.NewGateway(t, "site-a")
	r := submit(t, c, gw.RegisterTx(t, n.Committee))
	if r.Height <= 0 || r.Code != 0 || len(r.TxHash) != 64 {
		t.Fatalf("RegisterGateway receipt = %+v", r)
	}
	rec, err := c.Gateway(ctx, gw.DID())
	if err != nil {
		t.Fatal(err)
	}
	if rec.DID != gw.DID() || rec.Site != "site-a" || rec.Height != r.Height || rec.Tx != r.TxHash {
		t.Fatalf("gateway record = %+v, receipt %+v", rec, r)
	}

	tx1, h1 := gw.NextAnchor(t, 10)
	r1 := submit(t, c, tx1)
	tx2, h2 := gw.NextAnchor(t, 5)
	r2 := submit(t, c, tx2)
	if r2.Height <= r1.Height {
		t.Fatalf("second anchor at height %d, first at %d", r2.Height, r1.Height)
	}

	// Submitting committed bytes again returns the same receipt.
	again := submit(t, c, tx1)
	if again != r1 {
		t.Fatalf("resubmit receipt = %+v, want %+v", again, r1)
	}

	// The same bytes broadcast twice before they commit (the second finds
	// them in the mempool cache) give one receipt to both waiters.
	tx3, _ := gw.NextAnchor(t, 1)
	p1, err := c.Broadcast(ctx, tx3)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := c.Broadcast(ctx, tx3)
	if err != nil {
		t.Fatalf("second broadcast of pending bytes: %v", err)
	}
	w1, err1 := p1.Wait(ctx)
	w2, err2 := p2.Wait(ctx)
	if err1 != nil || err2 != nil || w1 != w2 || w1.Height <= r2.Height {
		t.Fatalf("duplicate in flight: %+v %v / %+v %v", w1, err1, w2, err2)
	}

	b, err := c.Batch(ctx, gw.DID(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if b.Hash != h1.Hash() || b.Height != r1.Height || b.Tx != r1.TxHash || b.Index != r1.Index {
		t.Fatalf("batch 1 = %+v, receipt %+v", b, r1)
	}
	last, err := c.LastBatch(ctx, gw.DID())
	if err != nil {
		t.Fatal(err)
	}
	lh, err := anchor.ParseHeader(last.Header)
	if err != nil {
		t.Fatal(err)
	}
	if last.Seq != 3 || lh.Prev != h2.Hash() || last.Tx != w1.TxHash {
		t.Fatalf("last batch = seq %d prev %s tx %s, want 3 after %s in %s", last.Seq, lh.Prev, last.Tx, h2.Hash(), w1.TxHash)
	}
	byRoot, err := c.BatchByRoot(ctx, h2.Root)
	if err != nil {
		t.Fatal(err)
	}
	if byRoot.Seq != 2 || byRoot.Gateway != gw.DID() {
		t.Fatalf("batch by root = %+v", byRoot)
	}
	if _, err := c.Batch(ctx, gw.DID(), 4); !errors.Is(err, ledgerclient.ErrNotFound) {
		t.Fatalf("batch 4: err = %v, want ErrNotFound", err)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Height < r2.Height || st.ChainID == "" {
		t.Fatalf("status = %+v", st)
	}
}

func TestClientRefusals(t *testing.T) {
	_, c, gw := startWithGateway(t, ledgerclient.ClientOptions{})

	_, h := gw.PeekAnchor(t, 1)
	h.Seq, h.Prev = 2, anchor.SM3([]byte("not the last header"))
	other := ledgertest.NewGateway(t, "site-b") // never registered

	for _, tc := range []struct {
		name string
		tx   []byte
		code ledgerapp.Code
	}{
		{"malformed", []byte(`{"body":`), ledgerapp.CodeMalformed},
		{"sequence gap", gw.AnchorTx(t, h), ledgerapp.CodeSequenceGap},
		{"not a member", func() []byte { tx, _ := other.PeekAnchor(t, 1); return tx }(), ledgerapp.CodeNotMember},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := c.Submit(ctx, tc.tx)
			var ref *ledgerclient.RefusedError
			if !errors.As(err, &ref) {
				t.Fatalf("err = %v, want *RefusedError", err)
			}
			if ref.Code != uint32(tc.code) || ref.Stage != "check" || ref.Log == "" {
				t.Fatalf("refusal = %+v, want code %d (%s) at check", ref, tc.code, tc.code.Name())
			}
			if errors.Is(err, ledgerclient.ErrUnreachable) {
				t.Fatal("a refusal must not be ErrUnreachable")
			}
		})
	}
}

func TestClientUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now

	c := newClient(t, "http://"+addr, ledgerclient.ClientOptions{Retries: 2, Backoff: 10 * time.Millisecond, RequestTimeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err = c.Submit(ctx, []byte(`{"body":"e30=","signer":"did:ea:00000000000000000000000000000000","sig":"AA=="}`))
	if !errors.Is(err, ledgerclient.ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	var ref *ledgerclient.RefusedError
	if errors.As(err, &ref) {
		t.Fatalf("unreachable reported as refusal %+v", ref)
	}
	if _, err := c.Height(ctx); !errors.Is(err, ledgerclient.ErrUnreachable) {
		t.Fatalf("height: err = %v, want ErrUnreachable", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("bounded retries took %s", d)
	}
}

func TestWatchBlocksSeesDeviceEvents(t *testing.T) {
	_, c, gw := startWithGateway(t, ledgerclient.ClientOptions{})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type seen struct {
		action, did string
		at          time.Time
	}
	events := make(chan seen, 16)
	watchErr := make(chan error, 1)
	from, err := c.Height(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		watchErr <- c.WatchBlocks(ctx, from+1, func(b *ledgerclient.Block) error {
			for _, tx := range b.Txs {
				for _, ev := range tx.Events {
					if ev.Type == "device" {
						events <- seen{ev.Attributes["action"], ev.Attributes["did"], time.Now()}
					}
				}
			}
			return nil
		})
	}()

	dev, regTx := gw.NewDevice(t, credential.KindPayroll)
	submitted := time.Now()
	submit(t, c, regTx)
	revTx := ledgertest.RevokeDeviceTx(t, gw.Signer, dev.DID(), "lost")
	submit(t, c, revTx)
	committed := time.Now()

	want := []string{"register", "revoke"}
	for _, action := range want {
		select {
		case ev := <-events:
			if ev.action != action || ev.did != string(dev.DID()) {
				t.Fatalf("event = %+v, want %s of %s", ev, action, dev.DID())
			}
			if ev.at.Before(submitted) {
				t.Fatalf("event seen before its tx was submitted")
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s event within 5 s of commit (%s)", action, time.Since(committed))
		}
	}
	rec, err := c.Device(ctx, dev.DID())
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != "revoked" || rec.Gateway != gw.DID() {
		t.Fatalf("device record = %+v", rec)
	}
	devs, err := c.GatewayDevices(ctx, gw.DID())
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 || devs[0].DID != dev.DID() {
		t.Fatalf("gateway devices = %+v", devs)
	}
	cancel()
	if err := <-watchErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("watch returned %v, want context.Canceled", err)
	}
}

// GatewayDevices gathers a gateway's devices page by page, in DID order,
// each once, whatever the node's page size.
func TestGatewayDevicesPages(t *testing.T) {
	n, c, gw := startWithGateway(t, ledgerclient.ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var want []device.DID
	var pend []*ledgerclient.PendingTx
	for range 7 {
		dev, tx := gw.NewDevice(t, credential.KindEnv)
		p, err := c.Broadcast(ctx, tx)
		if err != nil {
			t.Fatal(err)
		}
		pend = append(pend, p)
		want = append(want, dev.DID())
	}
	for _, p := range pend {
		if _, err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(want)
	for _, size := range []int{0, 1, 3, 7, 8} {
		n.SetDevicesPage(size)
		devs, err := c.GatewayDevices(ctx, gw.DID())
		if err != nil {
			t.Fatalf("page size %d: %v", size, err)
		}
		got := make([]device.DID, len(devs))
		for i, d := range devs {
			got[i] = d.DID
		}
		if !slices.Equal(got, want) {
			t.Fatalf("page size %d: GatewayDevices = %v, want %v", size, got, want)
		}
	}
	if _, err := c.GatewayDevices(ctx, ledgertest.NewGateway(t, "site-b").DID()); !errors.Is(err, ledgerclient.ErrNotFound) {
		t.Fatalf("devices of an unknown gateway: %v, want ErrNotFound", err)
	}
}

// TestClientLedgerOutage: while the node is down a submit fails with
// ErrUnreachable (not a refusal); once it is back the same bytes commit.
func TestClientLedgerOutage(t *testing.T) {
	n, c, gw := startWithGateway(t, ledgerclient.ClientOptions{Retries: 1, Backoff: 20 * time.Millisecond, RequestTimeout: time.Second})
	before := submit(t, c, func() []byte { tx, _ := gw.NextAnchor(t, 5); return tx }())

	n.Stop()
	tx, _ := gw.NextAnchor(t, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := c.Submit(ctx, tx)
	if !errors.Is(err, ledgerclient.ErrUnreachable) {
		t.Fatalf("submit while down: err = %v, want ErrUnreachable", err)
	}
	var ref *ledgerclient.RefusedError
	if errors.As(err, &ref) {
		t.Fatalf("outage reported as a refusal: %+v", ref)
	}

	n.Restart()
	r := submit(t, c, tx)
	if r.Height <= before.Height {
		t.Fatalf("after restart: committed at %d, before the outage at %d", r.Height, before.Height)
	}
	last, err := c.LastBatch(ctx, gw.DID())
	if err != nil || last.Seq != 2 {
		t.Fatalf("last batch after the outage = %+v, %v", last, err)
	}
}

// TestFollowerBlocksMatchRPCClient: the follower's own decoding of /block
// and /block_results gives what CometBFT's RPC client decodes from the
// same node: tx bytes, hashes, codes, logs and events.
func TestFollowerBlocksMatchRPCClient(t *testing.T) {
	n := ledgertest.StartSingle(t)
	c := newClient(t, n.RPC, ledgerclient.ClientOptions{})
	gw := ledgertest.NewGateway(t, "site-a")
	first := submit(t, c, gw.RegisterTx(t, n.Committee))
	tx, _ := gw.NextAnchor(t, 3)
	last := submit(t, c, tx)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc, err := rpchttp.New(n.RPC, "/websocket")
	if err != nil {
		t.Fatal(err)
	}
	seenTxs := 0
	stop := errors.New("done")
	err = c.WatchBlocks(ctx, first.Height, func(b *ledgerclient.Block) error {
		h := b.Height
		rb, err := rc.Block(ctx, &h)
		if err != nil {
			return err
		}
		rr, err := rc.BlockResults(ctx, &h)
		if err != nil {
			return err
		}
		if !b.Time.Equal(rb.Block.Time) || len(b.Txs) != len(rb.Block.Txs) || len(b.Events) != len(rr.FinalizeBlockEvents) {
			t.Fatalf("block %d: follower %+v, rpc time %v, %d txs, %d events", h, b, rb.Block.Time, len(rb.Block.Txs), len(rr.FinalizeBlockEvents))
		}
		for i, bt := range b.Txs {
			want, res := rb.Block.Txs[i], rr.TxsResults[i]
			if bt.Index != uint32(i) || !bytes.Equal(bt.Tx, want) || bt.Hash != hex.EncodeToString(want.Hash()) ||
				bt.Code != res.Code || bt.Log != res.Log || len(bt.Events) != len(res.Events) {
				t.Fatalf("block %d tx %d: follower %+v, rpc %x %+v", h, i, bt, want.Hash(), res)
			}
			for k, ev := range res.Events {
				got := bt.Events[k]
				if got.Type != ev.Type || len(got.Attributes) != len(ev.Attributes) {
					t.Fatalf("block %d tx %d event %d: follower %+v, rpc %+v", h, i, k, got, ev)
				}
				for _, a := range ev.Attributes {
					if got.Attributes[a.Key] != a.Value {
						t.Fatalf("block %d tx %d event %s.%s = %q, rpc %q", h, i, ev.Type, a.Key, got.Attributes[a.Key], a.Value)
					}
				}
			}
			seenTxs++
		}
		if h >= last.Height {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("watch: %v", err)
	}
	if seenTxs < 2 {
		t.Fatalf("compared %d txs, want the registration and the anchor", seenTxs)
	}
}

// TestClientSharedFollower: a client whose Follower is another client gets
// its receipts through that client's block follower; once the follower is
// closed, waiting through it fails with ErrClosed rather than hanging.
func TestClientSharedFollower(t *testing.T) {
	n := ledgertest.StartSingle(t)
	f, err := ledgerclient.NewClient(n.RPC, ledgerclient.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, n.RPC, ledgerclient.ClientOptions{Follower: f})
	gw := ledgertest.NewGateway(t, "site-a")
	r := submit(t, c, gw.RegisterTx(t, n.Committee))
	if r.Height <= 0 || r.Code != 0 {
		t.Fatalf("receipt through the shared follower = %+v", r)
	}
	tx, _ := gw.NextAnchor(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.Close()
	if _, err := c.Submit(ctx, tx); !errors.Is(err, ledgerclient.ErrClosed) {
		t.Fatalf("submit with its follower closed: %v, want ErrClosed", err)
	}
}
