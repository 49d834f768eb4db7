package broker

import (
	"context"
	"net"
	"testing"
	"time"

	eatest "github.com/edgeanchor/edgeanchor/internal/testutil"

	"github.com/edgeanchor/edgeanchor/device/credential"
)

// Close returns promptly while a device is in the middle of connecting
// (here: its enrollment is waiting for the ledger). mochi closes the
// clients it lists when its listeners close; one that was still being
// admitted was not listed yet, went on to serve its connection, and
// mochi's Close waited for it: until the device went away or its
// keepalive ran out (45 s at 30 s), with the gateway's shutdown stuck.
func TestCloseWhileDeviceConnects(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	var info DeviceInfo
	tb := startBroker(t, Options{Ingester: receiptIngester(), Enroller: func(ctx context.Context, req EnrollRequest) (DeviceInfo, error) {
		close(entered)
		<-release // a ledger that answers late, whatever ctx says
		return info, nil
	}})
	d := tb.device(t)
	info, _ = tb.reg.Lookup(d.DID())
	// The enrollment credential is not checked by this Enroller.
	rc := rawSendConnect(t, tb.b.Addr("tcp"), 5, string(d.DID()), credential.EnrollPrefix+"x.y.z", true)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the enrollment did not start")
	}
	closed := make(chan struct{})
	go func() { _ = tb.b.Close(); close(closed) }()
	// Once the listener is closed, mochi has closed the clients it knew.
	addr := tb.b.Addr("tcp")
	eatest.WaitFor(t, 10*time.Second, "listener closed", func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return errListenerOpen
		}
		return nil
	})
	close(release)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatalf("Close still waiting 10 s after the connecting device was admitted; goroutines:\n%s", eatest.Goroutines())
	}
	// The connection is closed: either the listener closed it while it
	// was still pending (nothing sent), or it was admitted just before and
	// then told the server is shutting down (CONNACK, DISCONNECT 0x8b).
	got, err := rc.untilClosed(10 * time.Second)
	if err != nil {
		t.Fatalf("the late device's connection: %v", err)
	}
	closedPending := len(got) == 0
	admittedThenTold := len(got) == 2 && got[0].kind() == 2 && got[1].kind() == 14 && got[1].body[0] == 0x8b
	if !closedPending && !admittedThenTold {
		t.Fatalf("the late device got %d packets %+v, want none (closed while pending) or CONNACK then DISCONNECT 0x8b", len(got), got)
	}
}

var errListenerOpen = net.UnknownNetworkError("listener still accepting")
