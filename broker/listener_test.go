package broker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeanchor/edgeanchor/broker/listener"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
	"github.com/edgeanchor/edgeanchor/device/refusal"
	itest "github.com/edgeanchor/edgeanchor/internal/testutil"
)

// connectPacket encodes an MQTT 5 CONNECT of did with password pw.
func connectPacket(t testing.TB, did device.DID, pw string) []byte {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30,
			ClientIdentifier: string(did), UsernameFlag: true, Username: []byte(did), PasswordFlag: true, Password: []byte(pw)}}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// waitClosed reads c until the server closes it (EOF or reset) or the
// deadline passes; it reports whether the server closed it.
func waitClosed(c net.Conn, within time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestConnectTimeout: connections that send nothing are closed once the
// CONNECT deadline passes, counted, and no longer pending.
func TestConnectTimeout(t *testing.T) {
	tb := startBroker(t, Options{ConnectTimeout: 300 * time.Millisecond, Ingester: funcIngester{
		func(context.Context, DeviceInfo, []byte) (Accepted, error) { return Accepted{Kind: "env.dust"}, nil }}})
	m := tb.b.Metrics().Conn
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", tb.b.Addr("tcp"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		conns = append(conns, c)
	}
	for i, c := range conns {
		if !waitClosed(c, 10*time.Second) {
			t.Fatalf("connection %d still open 10 s after a 300 ms CONNECT deadline", i)
		}
	}
	itest.WaitUntil(t, 5*time.Second, "connect timeouts counted", func() bool {
		return testutil.ToFloat64(m.ConnectTimeouts) == 3 && testutil.ToFloat64(m.Pending) == 0 && testutil.ToFloat64(m.Open) == 0
	})
	// A device that connects in time is not affected by the deadline
	// afterwards (its keep-alive governs).
	s := tb.device(t)
	c := tb.connect5(t, s)
	time.Sleep(600 * time.Millisecond) // past the CONNECT deadline: the session must still work
	if r, err := pub(c, s.DID(), 1); err != nil || r.ReasonCode != 0 {
		t.Fatalf("publish after the CONNECT deadline: %v %+v", err, r)
	}
}

// TestCloseWithPendingConnection: a connection that never sent CONNECT
// does not hold up Close.
func TestCloseWithPendingConnection(t *testing.T) {
	tb := startBroker(t, Options{ConnectTimeout: time.Minute, Ingester: funcIngester{}})
	c, err := net.Dial("tcp", tb.b.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	itest.WaitUntil(t, 5*time.Second, "pending connection", func() bool {
		return testutil.ToFloat64(tb.b.Metrics().Conn.Pending) == 1
	})
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- tb.b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waiting 10 s later for a connection that never sent CONNECT")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %s", d)
	}
	if !waitClosed(c, 5*time.Second) {
		t.Fatal("pending connection not closed by Close")
	}
}

// TestPendingCountsAgainstMaxConnections: connections still waiting for
// their CONNECT take places under MaxConnections; a device beyond the
// limit is answered "server busy", and connects once they are gone.
func TestPendingCountsAgainstMaxConnections(t *testing.T) {
	tb := startBroker(t, Options{MaxConnections: 2, ConnectTimeout: time.Minute, Ingester: funcIngester{
		func(context.Context, DeviceInfo, []byte) (Accepted, error) { return Accepted{Kind: "env.dust"}, nil }}})
	var idle []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", tb.b.Addr("tcp"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	itest.WaitUntil(t, 5*time.Second, "two pending", func() bool {
		return testutil.ToFloat64(tb.b.Metrics().Conn.Pending) == 2
	})
	s := tb.device(t)
	ca, err := tryConnect5(tb, s, nil)
	if err == nil || ca == nil || ca.ReasonCode != packets.ErrServerBusy.Code {
		t.Fatalf("connect over the limit: %v %+v, want CONNACK server busy", err, ca)
	}
	if got := testutil.ToFloat64(tb.b.Metrics().Conn.Refused.WithLabelValues(refusal.MaxConnections)); got != 1 {
		t.Fatalf("refused{max_connections} = %g, want 1", got)
	}
	for _, c := range idle {
		_ = c.Close()
	}
	itest.WaitUntil(t, 5*time.Second, "idle connections gone", func() bool {
		return testutil.ToFloat64(tb.b.Metrics().Conn.Open) == 0
	})
	c := tb.connect5(t, s)
	if r, err := pub(c, s.DID(), 1); err != nil || r.ReasonCode != 0 {
		t.Fatalf("publish: %v %+v", err, r)
	}
}

// tryConnect5 connects s over MQTT 5 from local (nil: any), returning the
// CONNACK and the error.
func tryConnect5(tb *testBroker, s *device.KeySigner, local net.Addr) (*paho5.Connack, error) {
	c, ca, err := dial5(tb, s, local, time.Now())
	if err == nil {
		_ = c.Disconnect(&paho5.Disconnect{})
	}
	return ca, err
}

func dial5(tb *testBroker, s *device.KeySigner, local net.Addr, credTime time.Time) (*paho5.Client, *paho5.Connack, error) {
	d := net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", tb.b.Addr("tcp"))
	if err != nil {
		return nil, nil, err
	}
	c := paho5.NewClient(paho5.ClientConfig{Conn: conn})
	pw, err := credential.MakeConnect(s, credTime)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho5.Connect{ClientID: string(s.DID()), Username: string(s.DID()), UsernameFlag: true,
		Password: []byte(pw), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
	if err != nil {
		_ = conn.Close()
		return nil, ca, err
	}
	return c, ca, nil
}

// TestConnectFloodFromOneSource: bad CONNECTs flooding from 127.0.0.2
// are throttled (per source, before they touch the global budget) while a
// device on 127.0.0.1 connects and publishes normally.
func TestConnectFloodFromOneSource(t *testing.T) {
	tb := startBroker(t, Options{
		ConnectPerSource: listener.RateLimit{Rate: 5, Burst: 10}, ConnectGlobal: listener.RateLimit{Rate: 20, Burst: 20},
		AuthFailuresPerSource: listener.RateLimit{Rate: 1, Burst: 3}, AuthFailuresGlobal: listener.RateLimit{Rate: 5, Burst: 5},
		Ingester: funcIngester{func(context.Context, DeviceInfo, []byte) (Accepted, error) { return Accepted{Kind: "env.dust"}, nil }}})
	victim := tb.device(t)
	bad := tb.device(t) // registered, but the flood's credentials are not signed by it
	badPW := "ea1." + "1700000000" + "." + strings.Repeat("ab", 16) + ".AAAA"
	flood := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 2 * time.Second}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var sent, answered int
	var mu sync.Mutex
	for w := range 4 {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 100 && ctx.Err() == nil; i++ {
				c, err := flood.DialContext(ctx, "tcp", tb.b.Addr("tcp"))
				if err != nil {
					continue
				}
				_, _ = c.Write(connectPacket(t, bad.DID(), badPW))
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				var hdr [4]byte
				n, _ := io.ReadFull(c, hdr[:])
				_ = c.Close()
				mu.Lock()
				sent++
				if n == 4 {
					answered++
				}
				mu.Unlock()
			}
		}(w)
	}
	// The legitimate device connects and publishes while the flood runs.
	for i := range 5 {
		c, ca, err := dial5(tb, victim, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, time.Now())
		if err != nil {
			t.Fatalf("legitimate connect %d during the flood: %v %+v", i, err, ca)
		}
		if r, err := pub(c, victim.DID(), 1); err != nil || r.ReasonCode != 0 {
			t.Fatalf("legitimate publish %d during the flood: %v %+v", i, err, r)
		}
		_ = c.Disconnect(&paho5.Disconnect{})
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	m := tb.b.Metrics()
	srcAttempts := testutil.ToFloat64(m.Conn.Throttled.WithLabelValues(listener.ScopeSource, listener.LimitAttempts))
	srcAuth := testutil.ToFloat64(m.Conn.Throttled.WithLabelValues(listener.ScopeSource, listener.LimitAuthFailures))
	failures := testutil.ToFloat64(m.AuthFailures.WithLabelValues(refusal.Malformed)) + testutil.ToFloat64(m.AuthFailures.WithLabelValues(refusal.Stale))
	t.Logf("flood: %d connections, %d answered; throttled source/attempts %g, source/auth_failures %g; auth failures %g",
		sent, answered, srcAttempts, srcAuth, failures)
	if srcAttempts == 0 || srcAuth == 0 {
		t.Fatalf("throttled source/attempts %g, source/auth_failures %g: want both > 0", srcAttempts, srcAuth)
	}
	if failures > 3+float64(sent)/10 {
		t.Fatalf("%g CONNECTs from the flooding source were authenticated and failed; its budget is 3 (+1/s)", failures)
	}
}

// TestStaleCredentialReasonString: an MQTT 5 device whose clock is 10
// minutes off is told so in the CONNACK's reason string, with the
// gateway's time.
func TestStaleCredentialReasonString(t *testing.T) {
	tb := startBroker(t, Options{Ingester: funcIngester{}})
	s := tb.device(t)
	_, ca, err := dial5(tb, s, nil, time.Now().Add(-10*time.Minute))
	if err == nil || ca == nil {
		t.Fatalf("stale credential connected: %v", err)
	}
	if ca.ReasonCode != packets.ErrNotAuthorized.Code {
		t.Fatalf("reason code %#x, want 0x87", ca.ReasonCode)
	}
	rs := ""
	if ca.Properties != nil {
		rs = ca.Properties.ReasonString
	}
	year := time.Now().UTC().Format("2006-")
	if !strings.HasPrefix(rs, "stale: ") || !strings.Contains(rs, "gateway's time "+year) {
		t.Fatalf("reason string %q: want the stale reason with the gateway's time", rs)
	}
}

// TestWebSocketConnectTimeout: on the WebSocket listener the CONNECT
// deadline covers the HTTP request and the upgrade, a connection upgraded
// but silent is closed too, pending ones count, and Close does not wait
// for them.
func TestWebSocketConnectTimeout(t *testing.T) {
	tb := startBroker(t, Options{WSAddr: "127.0.0.1:0", ConnectTimeout: 400 * time.Millisecond, Ingester: funcIngester{}})
	m := tb.b.Metrics().Conn
	raw, err := net.Dial("tcp", tb.b.Addr("ws"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	ws, _, err := (&websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}).Dial("ws://"+tb.b.Addr("ws")+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if !waitClosed(raw, 10*time.Second) {
		t.Fatal("silent TCP connection on the WebSocket listener still open 10 s after a 400 ms deadline")
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := ws.ReadMessage(); err == nil {
		t.Fatal("upgraded but silent WebSocket got a message")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("upgraded but silent WebSocket still open 10 s after a 400 ms deadline")
	}
	itest.WaitUntil(t, 5*time.Second, "both counted as connect timeouts", func() bool {
		return testutil.ToFloat64(m.ConnectTimeouts) == 2 && testutil.ToFloat64(m.Open) == 0
	})

	// A pending WebSocket does not hold up Close.
	tb2 := startBroker(t, Options{WSAddr: "127.0.0.1:0", ConnectTimeout: time.Minute, Ingester: funcIngester{}})
	ws2, _, err := (&websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}).Dial("ws://"+tb2.b.Addr("ws")+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.Close()
	itest.WaitUntil(t, 5*time.Second, "pending WebSocket", func() bool {
		return testutil.ToFloat64(tb2.b.Metrics().Conn.Pending) == 1
	})
	done := make(chan error, 1)
	go func() { done <- tb2.b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waiting 10 s later for a WebSocket that never sent CONNECT")
	}
}
