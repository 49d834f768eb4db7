package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
)

// Ledger is what the identity cache needs of the ledger client
// (*ledgerclient.Client implements it).
type Ledger interface {
	Height(ctx context.Context) (int64, error)
	GatewayDevices(ctx context.Context, did device.DID) ([]anchor.DeviceRecord, error)
	WatchBlocks(ctx context.Context, from int64, fn func(*ledgerclient.Block) error) error
}

var _ Ledger = (*ledgerclient.Client)(nil)

// Cache is the gateway's view of its devices on the ledger. It
// implements broker.Registry: lookups are served from memory (one parsed
// public key per device, the same pointer every time), and the cache follows
// the ledger block by block so that a RevokeDevice committed on the ledger
// marks the device revoked and disconnects it at once (within the block
// follower's poll interval). When the ledger is unreachable the cache keeps
// what it has and retries; Loaded reports whether the first load is done.
type Cache struct {
	gateway device.DID
	ledger  Ledger
	log     *slog.Logger

	mu       sync.RWMutex
	m        map[device.DID]broker.DeviceInfo
	onRevoke func(device.DID)
	snapshot string // file the cache is saved to after each change ("" = none)
	saveMu   sync.Mutex

	loaded atomic.Bool
	height atomic.Int64
}

var _ broker.Registry = (*Cache)(nil)

// NewCache returns an empty cache of the devices registered through
// gateway. Start it with Run.
func NewCache(gateway device.DID, ledger Ledger, log *slog.Logger) *Cache {
	return &Cache{gateway: gateway, ledger: ledger, log: log, m: map[device.DID]broker.DeviceInfo{}}
}

// OnRevoke sets the function called (outside the cache's lock) with the DID
// of each cached device whose revocation the ledger commits; the gateway
// passes one that disconnects the device (broker.Broker.DisconnectDevice). Set it before Run.
func (c *Cache) OnRevoke(f func(device.DID)) {
	c.mu.Lock()
	c.onRevoke = f
	c.mu.Unlock()
}

// Lookup implements broker.Registry.
func (c *Cache) Lookup(did device.DID) (broker.DeviceInfo, bool) {
	c.mu.RLock()
	d, ok := c.m[did]
	c.mu.RUnlock()
	return d, ok
}

// Put adds a device the gateway has just registered on the ledger (the
// enroller calls it once the registration committed, so that the device is
// admitted without waiting for the block follower). A revoked entry is never
// brought back, and an entry with the same key keeps its key pointer.
func (c *Cache) Put(d broker.DeviceInfo) {
	c.mu.Lock()
	c.putLocked(d)
	c.mu.Unlock()
	c.save()
}

func (c *Cache) putLocked(d broker.DeviceInfo) {
	old, ok := c.m[d.DID]
	if ok && old.Revoked {
		return
	}
	if ok && old.Pub != nil && d.Pub != nil && old.Pub.Equal(d.Pub) {
		d.Pub = old.Pub
	}
	c.m[d.DID] = d
}

// Loaded reports whether the cache has loaded the gateway's devices from the
// ledger at least once.
func (c *Cache) Loaded() bool { return c.loaded.Load() }

// Height is the last ledger block the cache has applied.
func (c *Cache) Height() int64 { return c.height.Load() }

// Len returns the number of cached devices, revoked ones included.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// Run loads the gateway's devices from the ledger (retrying while it is
// unreachable) and then follows new blocks until ctx is done. It returns
// ctx's error.
func (c *Cache) Run(ctx context.Context) error {
	from, err := c.load(ctx)
	if err != nil {
		return err
	}
	for {
		err := c.ledger.WatchBlocks(ctx, from, func(b *ledgerclient.Block) error {
			c.apply(b)
			from = b.Height + 1
			return nil
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.log.Warn("identity cache: block watch ended, restarting", "error", err, "from", from)
		if !identitySleep(ctx, time.Second) {
			return ctx.Err()
		}
	}
}

// load fetches the device list, retrying with backoff, and returns the first
// height to follow. The height is read before the list so that no block
// between the two is missed (applying a block twice is harmless).
func (c *Cache) load(ctx context.Context) (int64, error) {
	delay := 200 * time.Millisecond
	for {
		h, err := c.ledger.Height(ctx)
		var devs []anchor.DeviceRecord
		if err == nil {
			devs, err = c.ledger.GatewayDevices(ctx, c.gateway)
			if errors.Is(err, ledgerclient.ErrNotFound) {
				devs, err = nil, nil
			}
		}
		if err == nil {
			n := c.loadRecords(devs)
			c.height.Store(h)
			c.loaded.Store(true)
			c.log.Info("identity cache loaded", "devices", n, "height", h)
			return h + 1, nil
		}
		c.log.Warn("identity cache: ledger not reachable, retrying", "error", err, "retry_in", delay)
		if !identitySleep(ctx, delay) {
			return 0, ctx.Err()
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func (c *Cache) loadRecords(devs []anchor.DeviceRecord) int {
	var revoked []device.DID
	c.mu.Lock()
	n := 0
	for _, r := range devs {
		d, err := deviceInfoFromRecord(r)
		if err != nil {
			c.log.Warn("identity cache: skipping ledger device record", "did", r.DID, "error", err)
			continue
		}
		if old, ok := c.m[d.DID]; ok && !old.Revoked && d.Revoked {
			revoked = append(revoked, d.DID)
		}
		c.putLocked(d)
		n++
	}
	cb := c.onRevoke
	c.mu.Unlock()
	c.save()
	c.notify(cb, revoked)
	return n
}

func deviceInfoFromRecord(r anchor.DeviceRecord) (broker.DeviceInfo, error) {
	did, err := device.ParseDID(string(r.DID))
	if err != nil {
		return broker.DeviceInfo{}, err
	}
	pub, err := device.ParsePublicKeyDER(r.Pub)
	if err != nil {
		return broker.DeviceInfo{}, err
	}
	if !did.Matches(pub) {
		return broker.DeviceInfo{}, fmt.Errorf("gateway: ledger record of %s holds the key of %s", did, device.DIDFromPublicKey(pub))
	}
	return broker.DeviceInfo{DID: did, Pub: pub, Kind: r.Kind, Site: r.Site, Revoked: r.Status == "revoked"}, nil
}

// apply reads a committed block's successful transactions: RegisterDevice
// through this gateway adds the device, RevokeDevice of a cached device
// marks it revoked and disconnects it. The transactions themselves are read
// (not the events), since their format is the ledger's contract.
func (c *Cache) apply(b *ledgerclient.Block) {
	var revoked []device.DID
	changed := false
	c.mu.Lock()
	for _, t := range b.Txs {
		if t.Code != 0 {
			continue
		}
		tx, err := anchor.DecodeTx(t.Tx)
		if err != nil {
			continue
		}
		switch tx.Type() {
		case anchor.TypeRegisterDevice, anchor.TypeRevokeDevice:
		default:
			continue
		}
		body, err := anchor.DecodeBody(tx.Body)
		if err != nil {
			continue
		}
		switch v := body.(type) {
		case *anchor.RegisterDeviceBody:
			if v.Gateway != c.gateway {
				continue
			}
			reg, pub, err := credential.ParseRegistration(v.Registration)
			if err != nil {
				continue
			}
			c.putLocked(broker.DeviceInfo{DID: reg.DID, Pub: pub, Kind: reg.Kind, Site: reg.Site})
			changed = true
			c.log.Info("identity cache: device registered", "did", reg.DID, "height", b.Height)
		case *anchor.RevokeDeviceBody:
			d, ok := c.m[v.DID]
			if !ok || d.Revoked {
				continue
			}
			d.Revoked = true
			c.m[v.DID] = d
			revoked = append(revoked, v.DID)
			changed = true
			c.log.Warn("identity cache: device revoked", "did", v.DID, "height", b.Height, "reason", v.Reason)
		}
	}
	cb := c.onRevoke
	c.mu.Unlock()
	c.height.Store(b.Height)
	if changed {
		c.save()
	}
	c.notify(cb, revoked)
}

// snapshotDevice is one device in the snapshot file.
type snapshotDevice struct {
	DID     device.DID `json:"did"`
	Pub     []byte     `json:"pub"` // SPKI DER
	Kind    string     `json:"kind"`
	Site    string     `json:"site"`
	Revoked bool       `json:"revoked,omitempty"`
}

// UseSnapshot makes the cache start from the devices saved in path (if the
// file exists) and save itself there after every change (mode 0600). A
// gateway restarted while the ledger is unreachable then still knows its
// devices (and its revocations); Loaded stays false until the ledger
// answers. Call before Run.
func (c *Cache) UseSnapshot(path string) error {
	c.snapshot = path
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("gateway: identity snapshot: %w", err)
	}
	var devs []snapshotDevice
	if err := json.Unmarshal(raw, &devs); err != nil {
		c.log.Warn("identity snapshot unreadable, ignored", "path", path, "error", err)
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range devs {
		pub, err := device.ParsePublicKeyDER(d.Pub)
		if err != nil || !d.DID.Matches(pub) {
			continue
		}
		c.m[d.DID] = broker.DeviceInfo{DID: d.DID, Pub: pub, Kind: d.Kind, Site: d.Site, Revoked: d.Revoked}
	}
	c.log.Info("identity cache: snapshot loaded", "devices", len(c.m), "path", path)
	return nil
}

// save writes the snapshot (if configured); a failure is logged, never
// fatal: the ledger stays the source of truth.
func (c *Cache) save() {
	if c.snapshot == "" {
		return
	}
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	c.mu.RLock()
	devs := make([]snapshotDevice, 0, len(c.m))
	for _, d := range c.m {
		der, err := device.MarshalPublicKeyDER(d.Pub)
		if err != nil {
			continue
		}
		devs = append(devs, snapshotDevice{DID: d.DID, Pub: der, Kind: d.Kind, Site: d.Site, Revoked: d.Revoked})
	}
	c.mu.RUnlock()
	raw, err := json.Marshal(devs)
	if err == nil {
		err = WriteFileAtomic(c.snapshot, raw, 0o600)
	}
	if err != nil {
		c.log.Warn("identity snapshot not saved", "path", c.snapshot, "error", err)
	}
}

func (c *Cache) notify(cb func(device.DID), dids []device.DID) {
	if cb == nil {
		return
	}
	for _, d := range dids {
		cb(d)
	}
}

func identitySleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
