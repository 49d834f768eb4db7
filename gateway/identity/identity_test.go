package identity

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

func startCache(t *testing.T, gw device.DID, l Ledger) (*Cache, chan device.DID) {
	t.Helper()
	c := NewCache(gw, l, slog.New(slog.DiscardHandler))
	revoked := make(chan device.DID, 16)
	c.OnRevoke(func(d device.DID) { revoked <- d })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c, revoked
}

func idWaitFor(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// The cache loads this gateway's devices at start, follows registrations
// and revocations block by block, ignores other gateways' devices, and hands
// out one key pointer per device.
func TestCacheFollowsLedger(t *testing.T) {
	t.Parallel()
	e := ledgertest.StartMember(t, "site-a")
	other := ledgertest.NewGateway(t, "site-b")
	e.Submit(t, other.RegisterTx(t, e.Node.Committee))

	devA, txA := e.Gateway.NewDevice(t, "payroll")
	e.Submit(t, txA)
	devX, txX := other.NewDevice(t, "env")
	e.Submit(t, txX)

	c, revoked := startCache(t, e.Gateway.DID(), e.Client)
	idWaitFor(t, "load", 20*time.Second, c.Loaded)
	a, ok := c.Lookup(devA.DID())
	if !ok || a.Revoked || a.Kind != "payroll" || a.Site != "site-a" || !a.Pub.Equal(devA.Public()) {
		t.Fatalf("device A after load: %+v %v", a, ok)
	}
	if a2, _ := c.Lookup(devA.DID()); a2.Pub != a.Pub {
		t.Fatal("two lookups gave two key pointers")
	}
	if _, ok := c.Lookup(devX.DID()); ok {
		t.Fatal("another gateway's device is in the cache")
	}

	devB, txB := e.Gateway.NewDevice(t, "survey")
	e.Submit(t, txB)
	idWaitFor(t, "registration followed", 5*time.Second, func() bool { _, ok := c.Lookup(devB.DID()); return ok })

	// A regulator revokes A: the cache marks it and calls OnRevoke.
	start := time.Now()
	e.Submit(t, ledgertest.RevokeDeviceTx(t, e.Node.Regulator, devA.DID(), "key compromised"))
	select {
	case d := <-revoked:
		if d != devA.DID() {
			t.Fatalf("OnRevoke(%s), want %s", d, devA.DID())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no OnRevoke within 5 s of the revocation")
	}
	t.Logf("revocation seen %s after submit", time.Since(start).Round(time.Millisecond))
	if a, _ := c.Lookup(devA.DID()); !a.Revoked {
		t.Fatal("revoked device not marked revoked")
	}
	// Put never brings a revoked device back.
	c.Put(a)
	if a, _ := c.Lookup(devA.DID()); !a.Revoked {
		t.Fatal("Put revived a revoked device")
	}
	if b, _ := c.Lookup(devB.DID()); b.Revoked {
		t.Fatal("revocation of A touched B")
	}

	// A fresh cache (a gateway restart) loads A as revoked.
	c2, _ := startCache(t, e.Gateway.DID(), e.Client)
	idWaitFor(t, "reload", 20*time.Second, c2.Loaded)
	if a, ok := c2.Lookup(devA.DID()); !ok || !a.Revoked {
		t.Fatalf("after restart A = %+v %v, want revoked", a, ok)
	}
	if _, ok := c2.Lookup(devB.DID()); !ok {
		t.Fatal("after restart B is missing")
	}
}

// fakeLedger is a unit-level Ledger of function fields (used only
// for the outage test; the real node cannot be made unreachable and back).
type fakeLedger struct {
	height  func(context.Context) (int64, error)
	devices func(context.Context, device.DID) ([]anchor.DeviceRecord, error)
	watch   func(context.Context, int64, func(*ledgerclient.Block) error) error
}

func (f fakeLedger) Height(ctx context.Context) (int64, error) { return f.height(ctx) }
func (f fakeLedger) GatewayDevices(ctx context.Context, did device.DID) ([]anchor.DeviceRecord, error) {
	return f.devices(ctx, did)
}
func (f fakeLedger) WatchBlocks(ctx context.Context, from int64, fn func(*ledgerclient.Block) error) error {
	return f.watch(ctx, from, fn)
}

// While the ledger is unreachable the cache is not Loaded and retries; once
// it answers, the cache loads and follows from the height read before the
// list.
func TestCacheSurvivesOutage(t *testing.T) {
	priv, _ := device.GenerateKey()
	dev := device.NewKeySigner(priv)
	der, _ := device.MarshalPublicKeyDER(dev.Public())
	gw := device.DID("did:ea:00000000000000000000000000000001")

	var calls atomic.Int32
	var mu sync.Mutex
	var watchFrom int64
	f := fakeLedger{
		height: func(context.Context) (int64, error) {
			if calls.Add(1) <= 3 {
				return 0, ledgerclient.ErrUnreachable
			}
			return 41, nil
		},
		devices: func(_ context.Context, did device.DID) ([]anchor.DeviceRecord, error) {
			if did != gw {
				return nil, errors.New("wrong gateway asked")
			}
			return []anchor.DeviceRecord{{DID: dev.DID(), Pub: der, Kind: "env", Site: "site-a", Gateway: gw, Status: "active"}}, nil
		},
		watch: func(ctx context.Context, from int64, _ func(*ledgerclient.Block) error) error {
			mu.Lock()
			watchFrom = from
			mu.Unlock()
			<-ctx.Done()
			return ctx.Err()
		},
	}
	c, _ := startCache(t, gw, f)
	if c.Loaded() {
		t.Fatal("loaded before the ledger answered")
	}
	idWaitFor(t, "load after outage", 10*time.Second, c.Loaded)
	if calls.Load() < 4 {
		t.Fatalf("ledger asked %d times, want retries", calls.Load())
	}
	if d, ok := c.Lookup(dev.DID()); !ok || d.Kind != "env" {
		t.Fatalf("device after load: %+v %v", d, ok)
	}
	idWaitFor(t, "watch started", 5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return watchFrom != 0 })
	mu.Lock()
	defer mu.Unlock()
	if watchFrom != 42 {
		t.Fatalf("watch from %d, want 42", watchFrom)
	}
}

// A cache saves its devices to a snapshot; a cache started from it while the
// ledger is unreachable knows them (revocations included) but is not Loaded.
func TestIdentitySnapshot(t *testing.T) {
	mk := func() (*device.KeySigner, []byte) {
		priv, _ := device.GenerateKey()
		s := device.NewKeySigner(priv)
		der, _ := device.MarshalPublicKeyDER(s.Public())
		return s, der
	}
	a, derA := mk()
	b, derB := mk()
	gw := device.DID("did:ea:00000000000000000000000000000002")
	path := t.TempDir() + "/identity.json"
	up := fakeLedger{
		height: func(context.Context) (int64, error) { return 7, nil },
		devices: func(context.Context, device.DID) ([]anchor.DeviceRecord, error) {
			return []anchor.DeviceRecord{
				{DID: a.DID(), Pub: derA, Kind: "env", Site: "site-a", Gateway: gw, Status: "active"},
				{DID: b.DID(), Pub: derB, Kind: "payroll", Site: "site-a", Gateway: gw, Status: "revoked"},
			}, nil
		},
		watch: func(ctx context.Context, _ int64, _ func(*ledgerclient.Block) error) error {
			<-ctx.Done()
			return ctx.Err()
		},
	}
	c1 := NewCache(gw, up, slog.New(slog.DiscardHandler))
	if err := c1.UseSnapshot(path); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c1.Run(ctx) }()
	idWaitFor(t, "first load", 10*time.Second, c1.Loaded)
	cancel()
	<-done

	var tries atomic.Int32 // the cache's attempts to load from the ledger
	down := fakeLedger{
		height: func(context.Context) (int64, error) { tries.Add(1); return 0, ledgerclient.ErrUnreachable },
		devices: func(context.Context, device.DID) ([]anchor.DeviceRecord, error) {
			tries.Add(1)
			return nil, ledgerclient.ErrUnreachable
		},
		watch: func(ctx context.Context, _ int64, _ func(*ledgerclient.Block) error) error {
			<-ctx.Done()
			return ctx.Err()
		},
	}
	c2 := NewCache(gw, down, slog.New(slog.DiscardHandler))
	if err := c2.UseSnapshot(path); err != nil {
		t.Fatal(err)
	}
	startCacheRunning(t, c2)
	// A second try at the ledger means the first one has failed and been
	// dealt with: had it wrongly marked the cache loaded, it would show.
	idWaitFor(t, "two tries at the ledger", 10*time.Second, func() bool { return tries.Load() >= 2 })
	if c2.Loaded() {
		t.Fatal("Loaded without the ledger")
	}
	if d, ok := c2.Lookup(a.DID()); !ok || d.Revoked || d.Kind != "env" || !d.Pub.Equal(a.Public()) {
		t.Fatalf("A from the snapshot: %+v %v", d, ok)
	}
	if d, ok := c2.Lookup(b.DID()); !ok || !d.Revoked {
		t.Fatalf("B from the snapshot: %+v %v, want revoked", d, ok)
	}
}

func startCacheRunning(t *testing.T, c *Cache) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}
