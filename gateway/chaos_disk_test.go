//go:build chaos

package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// chaosDev publishes its readings in seq order, QoS 1, MQTT 3.1.1, and
// keeps each one (the same envelope bytes) until it is acknowledged, like
// a device's store-and-forward spool: without a PUBACK it reconnects and
// sends the same reading again.
type chaosDev struct {
	dev   *device.KeySigner
	addr  string
	envs  map[uint64][]byte
	acked uint64 // every seq up to acked was acknowledged
	fails int
}

func (d *chaosDev) run(ctx context.Context, t *testing.T, until func(*chaosDev) bool) {
	var c paho.Client
	defer func() {
		if c != nil {
			c.Disconnect(0)
		}
	}()
	topic := "ea/v1/dev/" + string(d.dev.DID()) + "/up"
	for ctx.Err() == nil && !until(d) {
		if c == nil || !c.IsConnectionOpen() {
			if c != nil {
				c.Disconnect(0)
			}
			var err error
			if c, err = e2eConnect(d.addr, d.dev, nil); err != nil {
				c = nil
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
		}
		seq := d.acked + 1
		env, ok := d.envs[seq]
		if !ok {
			env = e2eEnvelope(t, d.dev, seq)
			d.envs[seq] = env
		}
		tok := c.Publish(topic, 1, false, env)
		if !tok.WaitTimeout(3*time.Second) || tok.Error() != nil || !c.IsConnectionOpen() {
			// Refused (the gateway closes a 3.1.1 connection) or lost: keep it.
			d.fails++
			c.Disconnect(0)
			c = nil
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		d.acked = seq
	}
}

// TestChaosFullDiskTmpfs fills a real 64 MiB tmpfs under a real gateway
// process (issue 12, item 1: the gateway died with SIGBUS in Badger's
// value log write). With store.min_free_mb the gateway must refuse before
// the disk is full, stay up, say why on /readyz, and take the devices'
// spooled readings once space is freed, without a restart; afterwards
// every acknowledged reading is stored exactly once, in order. Needs root
// (mount); `make chaos` runs it.
func TestChaosFullDiskTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a tmpfs: run it as root (make chaos; CI runs as root)")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	// 16 MiB of filler: deleting it later is "freeing space".
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 16<<20), 0o600); err != nil {
		t.Fatal(err)
	}

	env := ledgertest.StartMember(t, "site-a")
	const ndev = 8
	devs := registerDevices(t, env, ndev)
	g := startGatewayProcAt(t, env, filepath.Join(mnt, "data"),
		"store:\n  value_log_file_mb: 8\n  memtable_mb: 4\n  min_free_mb: 20\n")
	t.Cleanup(func() {
		if g.t.Failed() {
			out, _ := exec.Command("df", "-h", mnt).CombinedOutput()
			t.Logf("%s", out)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cds := make([]*chaosDev, ndev)
	for i := range cds {
		cds[i] = &chaosDev{dev: devs[i], addr: g.mqtt, envs: map[uint64][]byte{}}
	}
	runAll := func(until func(*chaosDev) bool) {
		var wg sync.WaitGroup
		for _, d := range cds {
			wg.Add(1)
			go func() { defer wg.Done(); d.run(ctx, t, until) }()
		}
		wg.Wait()
	}

	// Phase 1: publish until the gateway refuses for the disk (bounded:
	// 60,000 readings per device, 4 minutes).
	start := time.Now()
	full := func() bool {
		code, body := g.get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(string(body), "store.min_free_mb")
	}
	var fullSeen sync.Once
	isFull := make(chan struct{})
	go func() {
		for ctx.Err() == nil {
			if full() {
				fullSeen.Do(func() { close(isFull) })
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	runAll(func(d *chaosDev) bool {
		select {
		case <-isFull:
			return true
		case <-g.exited:
			return true
		default:
			return d.acked >= 60000
		}
	})
	select {
	case <-g.exited:
		out := g.out.String()
		at := max(0, len(out)-4000)
		for _, mark := range []string{"fatal error", "panic:", "SIGBUS"} {
			if i := strings.Index(out, mark); i >= 0 {
				at = max(0, i-200)
				break
			}
		}
		t.Fatalf("the gateway died on the filling disk:\n%s", out[at:min(len(out), at+3000)])
	default:
	}
	select {
	case <-isFull:
	default:
		t.Fatalf("the disk never reached the floor (acked %d by device 0)", cds[0].acked)
	}
	var ackedFull uint64
	for _, d := range cds {
		ackedFull += d.acked
	}
	t.Logf("phase 1: %d readings acknowledged in %s before the floor", ackedFull, time.Since(start).Round(time.Millisecond))
	// Still refusing a while later, still alive.
	for range 3 {
		for _, d := range cds[:2] {
			before := d.acked
			d.fails = 0
			d.run(ctx, t, func(d *chaosDev) bool { return d.fails > 0 && d.acked == before || d.acked > before })
			if d.acked != before {
				t.Fatalf("a reading was acknowledged below the floor (device %s seq %d)", d.dev.DID(), d.acked)
			}
		}
	}
	select {
	case <-g.exited:
		t.Fatalf("the gateway died on the full disk:\n%s", g.out.String())
	default:
	}
	if v := g.metric(`edgeanchor_store_disk_low`); v != 1 {
		t.Fatalf("edgeanchor_store_disk_low = %v, want 1", v)
	}
	if v := g.metric(`edgeanchor_messages_refused_total{kind="env.dust",reason="disk_full"}`); v < 1 {
		t.Fatalf(`refused{disk_full} = %v`, v)
	}

	// Phase 2: free space; the same process takes every spooled reading
	// and 200 more per device.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	testutil.WaitUntil(t, 30*time.Second, "/readyz to be 200 again after space was freed", func() bool {
		code, _ := g.get("/readyz")
		return code == http.StatusOK
	})
	target := map[*chaosDev]uint64{}
	for _, d := range cds {
		target[d] = d.acked + 200
	}
	runAll(func(d *chaosDev) bool { return d.acked >= target[d] })
	select {
	case <-g.exited:
		t.Fatalf("the gateway died:\n%s", g.out.String())
	default:
	}
	var total uint64
	for _, d := range cds {
		if d.acked < target[d] {
			t.Fatalf("device %s: acked %d, want %d after space was freed", d.dev.DID(), d.acked, target[d])
		}
		recs := g.deviceRecords(d.dev.DID())
		if uint64(len(recs)) != d.acked {
			t.Fatalf("device %s: %d stored records, %d acknowledged", d.dev.DID(), len(recs), d.acked)
		}
		for i, r := range recs {
			if r.Seq != uint64(i+1) || r.Gap != 0 {
				t.Fatalf("device %s: record %d has seq %d gap %d (lost or duplicated)", d.dev.DID(), i, r.Seq, r.Gap)
			}
			var got, want bytes.Buffer
			_ = json.Compact(&got, r.Envelope) // the API indents its JSON
			_ = json.Compact(&want, d.envs[r.Seq])
			if got.String() != want.String() {
				t.Fatalf("device %s seq %d: stored envelope is not the one sent", d.dev.DID(), r.Seq)
			}
		}
		total += d.acked
	}
	t.Logf("phase 2: %d readings in all, each stored once, gateway up throughout; %s", total,
		fmt.Sprint(time.Since(start).Round(time.Millisecond)))
}
