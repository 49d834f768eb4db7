package gateway

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// Durability bounds: 50 clients, at most 2,000 publishes each, ~3 s of
// publishing before the SIGKILL; after the restart, until every client has
// had a PUBACK again plus 1 s, at most 20 s.
const (
	durClients    = 50
	durMaxPerDev  = 2000
	durBeforeKill = 3 * time.Second
	durAfter      = time.Second
	durAfterMax   = 20 * time.Second
)

// durClient is one device publishing QoS 1 in sequence; it remembers every
// seq whose PUBACK it received, and after a lost connection reconnects with
// a fresh credential and carries on with its next seq (never resending).
type durClient struct {
	dev       *device.KeySigner
	addr      string
	next      uint64
	acked     []uint64
	ackedKill int // acked before the kill
	reconnect int
	// ackedAfter counts PUBACKs after the kill (read by the test while the
	// client runs).
	ackedAfter atomic.Int64
}

func (d *durClient) run(ctx context.Context, killed *atomic.Bool) {
	var c paho.Client
	defer func() {
		if c != nil {
			c.Disconnect(0)
		}
	}()
	topic := "ea/v1/dev/" + string(d.dev.DID()) + "/up"
	for ctx.Err() == nil && d.next < durMaxPerDev {
		if c == nil || !c.IsConnectionOpen() {
			if c != nil {
				c.Disconnect(0)
				d.reconnect++
			}
			var err error
			if c, err = e2eConnect(d.addr, d.dev, nil); err != nil {
				c = nil
				select { // the gateway is down or restarting
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
		}
		d.next++
		seq := d.next
		tok := c.Publish(topic, 1, false, durEnvelope(d.dev, seq))
		if !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
			c.Disconnect(0)
			c = nil
			d.reconnect++
			continue
		}
		d.acked = append(d.acked, seq)
		if !killed.Load() {
			d.ackedKill = len(d.acked)
		} else {
			d.ackedAfter.Add(1)
		}
	}
}

func durEnvelope(dev *device.KeySigner, seq uint64) []byte {
	body, err := device.NewBody(dev.DID(), seq, time.Now(), device.KindDust,
		map[string]any{"pm25_ugm3": 10, "pm10_ugm3": 20, "noise_dba": 50})
	if err != nil {
		panic(err)
	}
	env, err := device.Seal(dev, body)
	if err != nil {
		panic(err)
	}
	return env
}

// While 50 clients publish QoS 1, the gateway process is killed with SIGKILL
// and restarted on the same ports and data. Every PUBACKed message is then in
// the store exactly once, each device's stored seqs strictly increase, gseqs
// run 1..N without a gap or a repeat, and the clients went on publishing
// after the restart with their next seqs.
func TestDurabilitySIGKILL(t *testing.T) {
	t.Parallel()
	env := ledgertest.StartMember(t, "site-a")
	devs := registerDevices(t, env, durClients)
	g := startGatewayProc(t, env, "")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var killed atomic.Bool
	clients := make([]*durClient, len(devs))
	var wg sync.WaitGroup
	for i, dev := range devs {
		clients[i] = &durClient{dev: dev, addr: g.mqtt}
		wg.Add(1)
		go func() { defer wg.Done(); clients[i].run(ctx, &killed) }()
	}
	time.Sleep(durBeforeKill)
	killed.Store(true)
	g.kill()
	killedAt := time.Now()
	g.start() // same config: same ports, same data directory
	t.Logf("gateway killed and ready again in %s", time.Since(killedAt).Round(time.Millisecond))
	waitFor(t, durAfterMax, "a PUBACK for every client after the restart", func() bool {
		for _, c := range clients {
			if c.ackedAfter.Load() == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(durAfter)
	cancel()
	wg.Wait()

	var totalAcked, ackedBefore, ackedAfter, stored int
	gseqs := map[uint64]device.DID{}
	var maxG uint64
	for _, c := range clients {
		did := c.dev.DID()
		recs := g.deviceRecords(did)
		storedSeq := map[uint64]bool{}
		var last uint64
		for _, r := range recs {
			if r.Seq <= last {
				t.Fatalf("%s: stored seq %d after %d (duplicate or out of order)", did, r.Seq, last)
			}
			last = r.Seq
			storedSeq[r.Seq] = true
			if other, dup := gseqs[r.GSeq]; dup {
				t.Fatalf("gseq %d stored for %s and %s", r.GSeq, other, did)
			}
			gseqs[r.GSeq] = did
			maxG = max(maxG, r.GSeq)
			if r.Seq > c.next {
				t.Fatalf("%s: stored seq %d was never sent (last sent %d)", did, r.Seq, c.next)
			}
		}
		for _, s := range c.acked {
			if !storedSeq[s] {
				t.Fatalf("%s: seq %d was PUBACKed but is not in the store", did, s)
			}
		}
		totalAcked += len(c.acked)
		ackedBefore += c.ackedKill
		ackedAfter += len(c.acked) - c.ackedKill
		stored += len(recs)
		if len(c.acked) == c.ackedKill {
			t.Fatalf("%s: no PUBACK after the restart (acked %d before the kill)", did, c.ackedKill)
		}
	}
	if uint64(len(gseqs)) != maxG {
		t.Fatalf("gseqs: %d records but the highest gseq is %d (gap)", len(gseqs), maxG)
	}
	if ackedBefore == 0 {
		t.Fatal("nothing was acknowledged before the kill")
	}
	t.Logf("%d clients: %d PUBACKed (%d before the kill, %d after), %d stored (%d stored without a PUBACK seen)",
		len(clients), totalAcked, ackedBefore, ackedAfter, stored, stored-totalAcked)
}
