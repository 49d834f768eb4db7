package broker

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
)

// slowCleanup holds the first session cleanup inside mochi's
// UnsubscribeClient (OnUnsubscribed runs after the topic unsubscribes and
// before Clients.Delete): the window in which a clean session's cleanup,
// which works by client ID, used to delete a same-ID device that had just
// reconnected and subscribed (mochi v2.7.9 attachClient).
type slowCleanup struct {
	mqtt.HookBase
	held    atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (h *slowCleanup) ID() string           { return "slow-cleanup" }
func (h *slowCleanup) Provides(b byte) bool { return b == mqtt.OnUnsubscribed }
func (h *slowCleanup) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if h.held.CompareAndSwap(false, true) { // only the first cleanup waits
		close(h.entered)
		<-h.release
	}
}

// receiver connects d with a clean session, subscribes to its receipt topic
// and returns the client and the receipts it gets.
func (tb *testBroker) receiver(t *testing.T, d *device.KeySigner) (*paho5.Client, <-chan []byte) {
	t.Helper()
	got := make(chan []byte, 16)
	conn, err := net.Dial("tcp", tb.b.Addr("tcp"))
	if err != nil {
		t.Error(err)
		return nil, got
	}
	c := paho5.NewClient(paho5.ClientConfig{Conn: conn, OnPublishReceived: []func(paho5.PublishReceived) (bool, error){
		func(pr paho5.PublishReceived) (bool, error) {
			select {
			case got <- pr.Packet.Payload:
			default:
			}
			return true, nil
		}}})
	pw, err := credential.MakeConnect(d, time.Now())
	if err != nil {
		t.Error(err)
		return nil, got
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho5.Connect{ClientID: string(d.DID()), Username: string(d.DID()), UsernameFlag: true,
		Password: []byte(pw), PasswordFlag: true, KeepAlive: 30, CleanStart: true}); err != nil {
		t.Errorf("connect: %v", err)
		return nil, got
	}
	if _, err := c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: ReceiptTopic(d.DID()), QoS: 1}}}); err != nil {
		t.Errorf("subscribe: %v", err)
	}
	return c, got
}

// TestQuickReconnectKeepsReceipts: a device that reconnects with the same
// client ID while its previous clean session is still being cleaned up
// gets the receipts of its next publish. Without the broker's wait for the
// old session's cleanup, that cleanup removed the new connection from
// mochi's client list and no receipt reached it for the whole session.
func TestQuickReconnectKeepsReceipts(t *testing.T) {
	tb := startBroker(t, Options{Ingester: funcIngester{func(context.Context, DeviceInfo, []byte) (Accepted, error) {
		return Accepted{Kind: "env.dust", Receipt: func() []byte { return []byte(`{"receipt":"r"}`) }}, nil
	}}})
	slow := &slowCleanup{entered: make(chan struct{}), release: make(chan struct{})}
	if err := tb.b.Server().AddHook(slow, nil); err != nil {
		t.Fatal(err)
	}
	d := tb.device(t)
	first, got1 := tb.receiver(t, d)
	if first == nil {
		t.FailNow()
	}
	if _, err := pub(first, d.DID(), 1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got1:
	case <-time.After(5 * time.Second):
		t.Fatal("no receipt on the first connection")
	}
	_ = first.Disconnect(&paho5.Disconnect{})
	select {
	case <-slow.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the first session's cleanup never ran")
	}

	type conn struct {
		c   *paho5.Client
		got <-chan []byte
	}
	second := make(chan conn, 1)
	go func() {
		c, got := tb.receiver(t, d)
		second <- conn{c, got}
	}()
	// Give the reconnect time to complete (as it did before the fix) while
	// the old session's cleanup is held, then let the cleanup finish.
	var sc conn
	select {
	case sc = <-second:
	case <-time.After(300 * time.Millisecond):
	}
	close(slow.release)
	if sc.c == nil {
		sc = <-second
	}
	if sc.c == nil {
		t.FailNow()
	}
	t.Cleanup(func() { _ = sc.c.Disconnect(&paho5.Disconnect{}) })
	if pr, err := pub(sc.c, d.DID(), 1); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("publish on the second connection: %+v %v", pr, err)
	}
	select {
	case r := <-sc.got:
		if string(r) != `{"receipt":"r"}` {
			t.Fatalf("receipt %q", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no receipt on the second connection: the old session's cleanup removed it")
	}
}
