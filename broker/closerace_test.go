package broker

import (
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	itest "github.com/edgeanchor/edgeanchor/internal/testutil"
)

// TestCloseWhileConnectionsPending: Close with connections that mochi has
// taken but that never sent CONNECT, on the TCP and the WebSocket
// listener. mochi counts each in its clients' WaitGroup when it takes it
// and waits on that group at Close; the listener must make the count
// happen before that wait (the race detector reports an Add that does not,
// and such a Wait may return before the count).
func TestCloseWhileConnectionsPending(t *testing.T) {
	tb := startBroker(t, Options{WSAddr: "127.0.0.1:0", ConnectTimeout: time.Minute, Ingester: funcIngester{}})
	const each = 8
	for range each {
		c, err := net.Dial("tcp", tb.b.Addr("tcp"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		ws, _, err := (&websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}).Dial("ws://"+tb.b.Addr("ws")+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ws.Close() })
	}
	itest.WaitUntil(t, 10*time.Second, "every connection pending", func() bool {
		return testutil.ToFloat64(tb.b.Metrics().Conn.Pending) == 2*each
	})
	done := make(chan error, 1)
	go func() { done <- tb.b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waiting 10 s later for connections that never sent CONNECT")
	}
	itest.WaitUntil(t, 10*time.Second, "every connection closed", func() bool {
		return testutil.ToFloat64(tb.b.Metrics().Conn.Open) == 0
	})
}
