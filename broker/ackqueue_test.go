package broker

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

// TestQuietDeviceHoldsNoAcknowledger: a connected device whose publishes
// have all been answered costs the broker mochi's two goroutines (reader
// and writer) and no third one waiting for its next publish; the next
// publishes are still answered in order.
func TestQuietDeviceHoldsNoAcknowledger(t *testing.T) {
	tb := startBroker(t, Options{Ingester: funcIngester{func(ctx context.Context, dev DeviceInfo, p []byte) (Accepted, error) {
		return Accepted{Kind: "env.dust", Receipt: func() []byte { return []byte("{}") }}, nil
	}}})
	const n = 40
	base := runtime.NumGoroutine()
	conns := make([]*rawConn, n)
	dids := make([]device.DID, n)
	for i := range conns {
		s := tb.device(t)
		pw, err := credential.MakeConnect(s, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		var ack rawPacket
		conns[i], ack = rawConnect(t, tb.b.Addr("tcp"), 4, string(s.DID()), pw, true)
		if ack.body[1] != 0 {
			t.Fatalf("device %d: CONNACK return code %d", i, ack.body[1])
		}
		dids[i] = s.DID()
	}
	for round := range 3 {
		for i, c := range conns {
			for k := range 5 {
				c.publish1(UpTopic(dids[i]), uint16(round*5+k+1), []byte("x"))
			}
		}
		for _, c := range conns {
			for k := range 5 {
				c.expect(4, uint16(round*5+k+1)) // PUBACKs in the order sent
			}
		}
		// All answered: what is left per device once the answering
		// goroutines have ended.
		testutil.WaitFor(t, 10*time.Second, "goroutines of quiet devices", func() error {
			if per := float64(runtime.NumGoroutine()-base) / n; per > 2.1 {
				return fmt.Errorf("%.2f goroutines per connected device with nothing to answer, want 2 (mochi's reader and writer)", per)
			}
			return nil
		})
	}
}
