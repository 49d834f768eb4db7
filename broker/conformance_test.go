package broker

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
	"github.com/edgeanchor/edgeanchor/device/refusal"
	eatest "github.com/edgeanchor/edgeanchor/internal/testutil"
)

// receiptIngester accepts every publish; each record's receipt is the
// payload "receipt-N", N counting from 1.
func receiptIngester() funcIngester {
	var n atomic.Int64
	return funcIngester{func(context.Context, DeviceInfo, []byte) (Accepted, error) {
		i := n.Add(1)
		return Accepted{Kind: "env.dust", Receipt: func() []byte { return []byte("receipt-" + strconv.FormatInt(i, 10)) }}, nil
	}}
}

func connectPassword(t *testing.T, d *device.KeySigner) string {
	t.Helper()
	pw, err := credential.MakeConnect(d, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return pw
}

// An MQTT 3.1.1 device that publishes outside its up topic, or whose
// connection is taken over by a second one with its client ID, has its
// connection closed: it never receives a DISCONNECT packet (e0 00), which
// 3.1.1 does not have for a server.
func TestV3CutOffWithoutDisconnectPacket(t *testing.T) {
	tb := startBroker(t, Options{Ingester: receiptIngester()})
	d := tb.device(t)
	did := string(d.DID())

	rc, _ := rawConnect(t, tb.b.Addr("tcp"), 4, did, connectPassword(t, d), true)
	rc.publish1("ea/v1/dev/"+did+"/elsewhere", 1, []byte("x"))
	got, err := rc.untilClosed(10 * time.Second)
	if err != nil {
		t.Fatalf("foreign-topic publish: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("foreign-topic publish: the broker wrote %d packets before closing (first %#x %x), want none", len(got), got[0].header, got[0].body)
	}
	if v := testutil.ToFloat64(tb.b.Metrics().Refused.WithLabelValues(refusal.ForeignTopic, "")); v != 1 {
		t.Fatalf("refused{foreign_topic} = %v, want 1", v)
	}

	first, _ := rawConnect(t, tb.b.Addr("tcp"), 4, did, connectPassword(t, d), true)
	second, ack := rawConnect(t, tb.b.Addr("tcp"), 4, did, connectPassword(t, d), true)
	if ack.body[1] != 0 {
		t.Fatalf("second connection refused: CONNACK %x", ack.body)
	}
	got, err = first.untilClosed(10 * time.Second)
	if err != nil {
		t.Fatalf("taken-over connection: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("taken-over connection got %d packets (first %#x %x), want none", len(got), got[0].header, got[0].body)
	}
	// The second connection works.
	second.publish1(UpTopic(d.DID()), 7, []byte("x"))
	second.expect(4, 7)
}

// Debian's mosquitto_pub (3.1.1) publishing on a foreign topic sees its
// connection closed, not a protocol error.
func TestV3ForeignTopicMosquittoPub(t *testing.T) {
	bin, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		t.Fatalf("mosquitto_pub is required (apt-get install mosquitto-clients; .ci/run does): %v", err)
	}
	tb := startBroker(t, Options{Ingester: receiptIngester()})
	d := tb.device(t)
	host, port, _ := strings.Cut(tb.b.Addr("tcp"), ":")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-h", host, "-p", port, "-V", "mqttv311", "-i", string(d.DID()),
		"-u", string(d.DID()), "-P", connectPassword(t, d), "-q", "1", "-t", "ea/v1/dev/"+string(d.DID())+"/other",
		"-m", "x", "-d").CombinedOutput()
	if err == nil {
		t.Fatalf("mosquitto_pub on a foreign topic succeeded:\n%s", out)
	}
	if strings.Contains(strings.ToLower(string(out)), "protocol error") || strings.Contains(string(out), "DISCONNECT") ||
		!strings.Contains(string(out), "connection was lost") {
		t.Fatalf("mosquitto_pub did not just lose its connection (a DISCONNECT or protocol error?):\n%s", out)
	}
	if v := testutil.ToFloat64(tb.b.Metrics().Refused.WithLabelValues(refusal.ForeignTopic, "")); v != 1 {
		t.Fatalf("refused{foreign_topic} = %v, want 1\n%s", v, out)
	}
}

// The MQTT 5 CONNACK advertises the Maximum Packet Size the broker
// enforces; a packet over it closes the connection with a log line and a
// count.
func TestMaximumPacketSize(t *testing.T) {
	var logs eatest.SyncBuffer
	tb := startBroker(t, Options{Ingester: receiptIngester(), MaxPayload: 1000,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	want := uint32(2*1000 + 4096)
	d := tb.device(t)
	conn, err := net.Dial("tcp", tb.b.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	c := paho5.NewClient(paho5.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho5.Connect{ClientID: string(d.DID()), Username: string(d.DID()), UsernameFlag: true,
		Password: []byte(connectPassword(t, d)), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	_ = c.Disconnect(&paho5.Disconnect{})
	if ca.Properties == nil || ca.Properties.MaximumPacketSize == nil || *ca.Properties.MaximumPacketSize != want {
		t.Fatalf("CONNACK maximum packet size = %+v, want %d", ca.Properties, want)
	}

	for i, v := range []byte{4, 5} {
		before := testutil.ToFloat64(tb.b.Metrics().PacketsTooLarge)
		rc, _ := rawConnect(t, tb.b.Addr("tcp"), v, string(d.DID()), connectPassword(t, d), true)
		rc.publish1(UpTopic(d.DID()), 1, bytes.Repeat([]byte("a"), int(want)))
		if _, err := rc.untilClosed(10 * time.Second); err != nil {
			t.Fatalf("v%d: oversized packet: %v", v, err)
		}
		// The count and then the log line come from the connection's
		// goroutine once it has closed: wait for both.
		eatest.WaitUntil(t, 10*time.Second, "the oversized packet counted and logged", func() bool {
			return testutil.ToFloat64(tb.b.Metrics().PacketsTooLarge) >= before+1 &&
				strings.Count(logs.String(), "packet too large") >= i+1
		})
		if got := testutil.ToFloat64(tb.b.Metrics().PacketsTooLarge); got != before+1 {
			t.Fatalf("v%d: packets_too_large = %v, want %v", v, got, before+1)
		}
	}
	// The line is logged just after the count: wait for both lines.
	eatest.WaitUntil(t, 10*time.Second, "two log lines about the oversized packets", func() bool {
		return strings.Count(logs.String(), "packet too large") >= 2
	})
	if n := strings.Count(logs.String(), "packet too large"); n != 2 || !strings.Contains(logs.String(), string(d.DID())) {
		t.Fatalf("%d log lines about the oversized packets, want 2 naming the device:\n%s", n, logs.String())
	}
}

// persistent5 connects d with paho.golang (MQTT 5) asking for a session
// that outlives the connection (expiry 300 s), with manual acknowledgement:
// nothing it receives is acknowledged, so the broker keeps it in flight.
// It returns the client, the CONNACK and the messages received.
func (tb *testBroker) persistent5(t *testing.T, d *device.KeySigner, clean bool) (*paho5.Client, *paho5.Connack, <-chan []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", tb.b.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 16)
	c := paho5.NewClient(paho5.ClientConfig{Conn: conn, EnableManualAcknowledgment: true,
		OnPublishReceived: []func(paho5.PublishReceived) (bool, error){
			func(pr paho5.PublishReceived) (bool, error) { got <- pr.Packet.Payload; return true, nil }}})
	expiry := uint32(300)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho5.Connect{ClientID: string(d.DID()), Username: string(d.DID()), UsernameFlag: true,
		Password: []byte(connectPassword(t, d)), PasswordFlag: true, KeepAlive: 30, CleanStart: clean,
		Properties: &paho5.ConnectProperties{SessionExpiryInterval: &expiry}})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho5.Disconnect{}) })
	return c, ca, got
}

func nextMsg(t *testing.T, ch <-chan []byte) string {
	t.Helper()
	select {
	case m := <-ch:
		return string(m)
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10 s")
		return ""
	}
}

// waitGone waits until the broker has closed d's connection.
func (tb *testBroker) waitGone(t *testing.T, d *device.KeySigner) {
	t.Helper()
	eatest.WaitUntil(t, 10*time.Second, "the broker to see the connection close", func() bool {
		cl, ok := tb.b.srv.Clients.Get(string(d.DID()))
		return ok && cl.Closed() && tb.b.session(cl) == nil
	})
}

// A device with a persistent session re-subscribes to its receipt topic,
// with packet identifier 1, while the broker holds an unacknowledged
// receipt it sent with identifier 1: client and server identifiers are
// independent (MQTT 5 §2.2.1), so the SUBSCRIBE is granted, not refused
// with 0x91 "packet identifier in use" (mochi keeps both in one map).
func TestResubscribeWhileReceiptInFlight(t *testing.T) {
	tb := startBroker(t, Options{Ingester: receiptIngester()})
	d := tb.device(t)
	a, _, got := tb.persistent5(t, d, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub := &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: ReceiptTopic(d.DID()), QoS: 1}}}
	if _, err := a.Subscribe(ctx, sub); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if pr, err := pub(a, d.DID(), 1); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("publish: %+v %v", pr, err)
	}
	if m := nextMsg(t, got); m != "receipt-1" {
		t.Fatalf("got %q, want receipt-1", m)
	}
	_ = a.Disconnect(&paho5.Disconnect{}) // receipt-1 stays unacknowledged
	tb.waitGone(t, d)

	b, ca, got := tb.persistent5(t, d, false)
	if !ca.SessionPresent {
		t.Fatal("session not present")
	}
	if m := nextMsg(t, got); m != "receipt-1" { // resent, still unacknowledged
		t.Fatalf("got %q, want receipt-1 again", m)
	}
	sa, err := b.Subscribe(ctx, sub) // paho's first identifier on a new client: 1
	if sa == nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 1 {
		t.Fatalf("re-subscribe: SUBACK %+v (%v), want granted QoS 1", sa, err)
	}
}

// The same over raw bytes with MQTT 3.1.1, where the identifiers are
// visible: a QoS 1 publish and a SUBSCRIBE that reuse the identifier of an
// unacknowledged receipt are answered with the client's identifier, and
// the receipt is not lost: it is resent when the device returns.
func TestClientPacketIDsIndependentV3(t *testing.T) {
	tb := startBroker(t, Options{Ingester: receiptIngester()})
	d := tb.device(t)
	did := string(d.DID())
	a, _ := rawConnect(t, tb.b.Addr("tcp"), 4, did, connectPassword(t, d), false)
	a.subscribe1(string(ReceiptTopic(d.DID())), 1)
	if ack, _ := a.expect(9, 1); !bytes.Equal(ack.subackCodes(4), []byte{1}) {
		t.Fatalf("first SUBACK codes %x", ack.subackCodes(4))
	}
	// seen collects the receipts (server identifier → payload) read while
	// waiting for the broker's answers.
	seen := map[uint16]string{}
	note := func(ps []rawPacket) {
		for _, p := range ps {
			if p.kind() == 3 {
				seen[p.id()] = string(p.payload(4))
			}
		}
	}
	for i, want := range []string{"receipt-1", "receipt-2"} {
		a.publish1(UpTopic(d.DID()), 1, []byte("x")) // identifier 1 both times
		_, before := a.expect(4, 1)
		note(before)
		for !strings.Contains(strings.Join(mapValues(seen), ","), want) {
			p, _ := a.expect(3, 0)
			note([]rawPacket{p})
		}
		if len(seen) != i+1 {
			t.Fatalf("after publish %d the broker holds receipts %v", i+1, seen)
		}
	}
	a.subscribe1(string(ReceiptTopic(d.DID())), 1)
	ack, _ := a.expect(9, 1)
	if !bytes.Equal(ack.subackCodes(4), []byte{1}) {
		t.Fatalf("re-subscribe with identifier 1 while receipt %v is in flight: SUBACK codes %x, want 01", seen, ack.subackCodes(4))
	}
	_ = a.c.Close()
	tb.waitGone(t, d)

	b, ca := rawConnect(t, tb.b.Addr("tcp"), 4, did, connectPassword(t, d), false)
	if ca.body[0]&1 != 1 {
		t.Fatal("session not present")
	}
	resent := map[uint16]string{}
	for len(resent) < len(seen) {
		p, err := b.read(5 * time.Second)
		if err != nil {
			t.Fatalf("resent receipts %v of %v: %v", resent, seen, err)
		}
		if p.kind() == 3 {
			resent[p.id()] = string(p.payload(4))
		}
	}
	for id, m := range seen {
		if resent[id] != m {
			t.Fatalf("resent %v, want %v (every unacknowledged receipt)", resent, seen)
		}
	}
}

func mapValues(m map[uint16]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// A message for a device's receipt topic published while the device is
// away (the anchor notice after it disconnected following its PUBACK) is
// kept for its persistent session and delivered when it returns.
func TestPersistentSessionGetsNoticeWhileAway(t *testing.T) {
	tb := startBroker(t, Options{Ingester: receiptIngester()})
	d := tb.device(t)
	a, _, got := tb.persistent5(t, d, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: ReceiptTopic(d.DID()), QoS: 1}}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if pr, err := pub(a, d.DID(), 1); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("publish: %+v %v", pr, err)
	}
	if m := nextMsg(t, got); m != "receipt-1" {
		t.Fatalf("got %q", m)
	}
	_ = a.Disconnect(&paho5.Disconnect{})
	tb.waitGone(t, d)
	// What the anchorer does once the batch is on the ledger.
	if err := tb.b.Server().Publish(string(ReceiptTopic(d.DID())), []byte("anchored-1"), false, 1); err != nil {
		t.Fatal(err)
	}
	_, ca, got := tb.persistent5(t, d, false)
	if !ca.SessionPresent {
		t.Fatal("session not present")
	}
	for {
		m := nextMsg(t, got)
		if m == "anchored-1" {
			break
		}
		if m != "receipt-1" { // resent: it was never acknowledged
			t.Fatalf("got %q, want anchored-1", m)
		}
	}
}
