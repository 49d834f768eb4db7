package listener

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsServer serves MQTT over WebSocket on a Listener's connections:
// the listener accepts, limits and tracks them, then hands each to an HTTP
// server (through a net.Listener fed by a channel) that upgrades it and
// gives the WebSocket to mochi. The CONNECT deadline covers the HTTP
// request, the upgrade and the CONNECT.
type wsServer struct {
	l        *Listener
	conns    chan net.Conn
	upgrader websocket.Upgrader

	mu  sync.Mutex
	srv *http.Server // set by start, closed by close
}

// NewWebSocket is a listener for MQTT over WebSocket on address (see
// New).
func NewWebSocket(g *Guard, srv *mqtt.Server, id, address string) *Listener {
	l := New(g, srv, id, address, nil)
	l.ws = &wsServer{l: l, conns: make(chan net.Conn),
		upgrader: websocket.Upgrader{
			Subprotocols: []string{"mqtt"},
			// Devices are not browsers and authenticate in CONNECT, as
			// with mochi's own WebSocket listener.
			CheckOrigin: func(*http.Request) bool { return true },
		}}
	return l
}

// start runs the HTTP server until close.
func (w *wsServer) start(establish listeners.EstablishFn) {
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { w.serve(rw, r, establish) }),
		ReadHeaderTimeout: w.l.g.timeout,
		ErrorLog:          slog.NewLogLogger(w.l.g.log.Handler(), slog.LevelDebug),
	}
	srv.SetKeepAlivesEnabled(false) // one request per connection: the upgrade
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.l.end.Load() {
		return // closed before it started
	}
	w.srv = srv
	go func() { _ = srv.Serve(chanListener{w}) }()
}

// hand passes an accepted connection to the HTTP server.
func (w *wsServer) hand(c *trackedConn) {
	c.unarmed.Store(true)
	select {
	case w.conns <- c:
	case <-w.l.done:
		_ = c.Close()
	}
}

func (w *wsServer) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.srv != nil {
		_ = w.srv.Close()
	}
}

func (w *wsServer) serve(rw http.ResponseWriter, r *http.Request, establish listeners.EstablishFn) {
	ws, err := w.upgrader.Upgrade(rw, r, nil)
	if err != nil {
		return // the upgrader has answered the request
	}
	defer ws.Close()
	tc, _ := ws.NetConn().(*trackedConn)
	if tc != nil {
		// The upgrade cleared the deadlines: the CONNECT gets what is left
		// of the connection's time (at least a second).
		_ = tc.Conn.SetReadDeadline(time.Now().Add(max(time.Second, time.Until(tc.connectBy))))
		tc.unarmed.Store(false)
	}
	if err := w.l.establish(establish, &wsConn{Conn: ws.NetConn(), ws: ws}); err != nil {
		w.l.g.log.Debug("mqtt connection ended", "listener", w.l.id, "remote", r.RemoteAddr, "error", err)
	}
}

// chanListener is the HTTP server's view of the connections handed over.
type chanListener struct{ w *wsServer }

func (c chanListener) Accept() (net.Conn, error) {
	select {
	case conn := <-c.w.conns:
		return conn, nil
	case <-c.w.l.done:
		return nil, net.ErrClosed
	}
}

func (c chanListener) Close() error   { return nil } // the Listener owns the socket
func (c chanListener) Addr() net.Addr { return c.w.l.ln.Addr() }

// wsConn is a WebSocket as the byte stream mochi reads: MQTT packets travel
// in binary messages, which need not align with packets. Deadlines and
// Close go to the underlying connection.
type wsConn struct {
	net.Conn
	ws  *websocket.Conn
	msg io.Reader // the binary message being read, nil between messages
}

// errWSText refuses a text message: MQTT over WebSocket is binary.
var errWSText = errors.New("websocket: MQTT needs binary messages")

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.msg == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errWSText
			}
			c.msg = r
		}
		n, err := c.msg.Read(p)
		if errors.Is(err, io.EOF) {
			c.msg = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
