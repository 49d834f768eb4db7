package listener

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/device/refusal"
)

// Accept back-off: after a failed accept (out of descriptors, a connection
// aborted before it was accepted, ...) the listener waits, doubling the
// pause from acceptBackoffMin up to acceptBackoffMax, and tries again. It
// never gives up: mochi's own TCP listener returns on the first error and
// the port stays dead until a restart.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
	// listenerHealthWindow: a listener whose last accept failed less than
	// this long ago, with no success since, is reported as not accepting.
	listenerHealthWindow = 5 * time.Second
	// busyMargin connections beyond the limit are still read, to answer
	// them CONNACK "server busy"; beyond that they are closed at once.
	busyMargin = 64
)

// ErrFDLimit means RLIMIT_NOFILE leaves no descriptors for MQTT
// connections after the headroom: raise the limit (systemd LimitNOFILE,
// ulimit -n) or lower the headroom.
var ErrFDLimit = errors.New("broker: descriptor limit too low")

// ConnMetrics count what happens to connections before and around CONNECT.
type ConnMetrics struct {
	AcceptErrors    *prometheus.CounterVec // listener, error
	Refused         *prometheus.CounterVec // reason
	ConnectTimeouts prometheus.Counter
	Throttled       *prometheus.CounterVec // scope, limit
	Open            prometheus.GaugeFunc
	Pending         prometheus.GaugeFunc
	Limit           prometheus.GaugeFunc
}

func newConnMetrics(reg prometheus.Registerer, g *Guard) *ConnMetrics {
	m := &ConnMetrics{
		AcceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeanchor_mqtt_accept_errors_total", Help: "Failed accepts of an MQTT listener (retried after a growing pause), by listener and error."},
			[]string{"listener", "error"}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeanchor_mqtt_connections_refused_total", Help: "MQTT connections refused before CONNECT was processed, by reason (max_connections: over the limit plus its margin)."},
			[]string{"reason"}),
		ConnectTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeanchor_mqtt_connect_timeouts_total", Help: "MQTT connections closed because no CONNECT arrived within mqtt.connect_timeout."}),
		Throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeanchor_mqtt_connect_throttled_total", Help: "Connections or CONNECTs refused by the connect rate limits, by scope (source, global) and limit (attempts, auth_failures)."},
			[]string{"scope", "limit"}),
	}
	m.Open = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgeanchor_mqtt_connections_open", Help: "Open MQTT connections, CONNECT pending or done."},
		func() float64 { return float64(g.open.Load()) })
	m.Pending = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgeanchor_mqtt_connections_pending", Help: "Open MQTT connections whose CONNECT is not yet accepted."},
		func() float64 { return float64(g.pending.Load()) })
	m.Limit = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgeanchor_mqtt_connections_limit", Help: "The effective connection limit: limits.max_connections capped below RLIMIT_NOFILE minus mqtt.fd_headroom."},
		func() float64 { return float64(g.max) })
	reg.MustRegister(m.AcceptErrors, m.Refused, m.ConnectTimeouts, m.Throttled, m.Open, m.Pending, m.Limit)
	// Every known label value has a series from the start, so a quiet
	// site's dashboard shows 0, not "No data".
	m.Refused.WithLabelValues(refusal.MaxConnections)
	for _, scope := range []string{ScopeSource, ScopeGlobal} {
		for _, limit := range []string{LimitAttempts, LimitAuthFailures} {
			m.Throttled.WithLabelValues(scope, limit)
		}
	}
	return m
}

// acceptErrorLabels are the values acceptErrorLabel gives.
var acceptErrorLabels = []string{"emfile", "enfile", "econnaborted", "enomem", "other"}

// Guard is shared by the broker's listeners: it counts the open
// connections against the limit, rate-limits new ones, and decides before
// authentication whether a CONNECT is refused (Admit).
type Guard struct {
	max           int64 // effective limit
	open, pending atomic.Int64
	attempts      *sourceLimiter
	failures      *sourceLimiter
	timeout       time.Duration
	sample        *sampledLog
	log           *slog.Logger
	metrics       *ConnMetrics
}

// GuardOptions configure a Guard.
type GuardOptions struct {
	// MaxConnections is the effective connection limit (ConnLimit's).
	MaxConnections int
	// ConnectTimeout: a connection that has not sent its CONNECT (TLS
	// handshake included) this long after it was accepted is closed.
	ConnectTimeout time.Duration
	// ConnectPerSource and ConnectGlobal limit new connections per source
	// address and in all; AuthFailuresPerSource and AuthFailuresGlobal the
	// CONNECTs refused by authentication. Zero rates turn a limit off.
	ConnectPerSource, ConnectGlobal           RateLimit
	AuthFailuresPerSource, AuthFailuresGlobal RateLimit
	Now                                       time.Time // the limiters' start
	Logger                                    *slog.Logger
	Registerer                                prometheus.Registerer
}

// NewGuard builds a Guard and registers its metrics on o.Registerer.
func NewGuard(o GuardOptions) *Guard {
	g := &Guard{max: int64(o.MaxConnections), timeout: o.ConnectTimeout, sample: newSampledLog(10 * time.Second),
		attempts: newSourceLimiter(o.ConnectPerSource, o.ConnectGlobal, o.Now),
		failures: newSourceLimiter(o.AuthFailuresPerSource, o.AuthFailuresGlobal, o.Now),
		log:      o.Logger}
	g.metrics = newConnMetrics(o.Registerer, g)
	return g
}

// Metrics are the guard's and its listeners' metrics.
func (g *Guard) Metrics() *ConnMetrics { return g.metrics }

// Max is the effective limit on open connections.
func (g *Guard) Max() int { return int(g.max) }

// ConnLimit is the effective connection limit: maxConns (0: none) capped
// at RLIMIT_NOFILE minus headroom and the busy margin.
func ConnLimit(maxConns, headroom int) (limit int, nofile uint64, err error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, fmt.Errorf("broker: read RLIMIT_NOFILE: %w", err)
	}
	nofile = rl.Cur
	avail := int64(1 << 30) // unlimited (RLIM_INFINITY) or huge
	if nofile < 1<<30 {
		avail = int64(nofile) - int64(headroom) - busyMargin
	}
	if avail < 1 {
		return 0, nofile, fmt.Errorf("%w: RLIMIT_NOFILE %d leaves no descriptors for MQTT connections after mqtt.fd_headroom %d and a margin of %d",
			ErrFDLimit, nofile, headroom, busyMargin)
	}
	if maxConns <= 0 || int64(maxConns) > avail {
		return int(avail), nofile, nil
	}
	return maxConns, nofile, nil
}

// Listener is the broker's mochi Listener for MQTT over TCP, TLS and
// (with ws set) WebSocket.
// Unlike mochi's listeners.TCP it keeps accepting after an error (with a
// growing pause), reports whether it is accepting, caps the open
// connections, rate-limits them per source address, gives each one
// Options.ConnectTimeout to send its CONNECT, and closes the ones still
// waiting for it at once when it is closed.
type Listener struct {
	id, address string
	tlsConf     *tls.Config
	srv         *mqtt.Server // whose clients Close disconnects
	g           *Guard
	ln          net.Listener
	done        chan struct{}
	end         atomic.Bool
	ws          *wsServer // MQTT over WebSocket: connections go to its HTTP server

	mu    sync.Mutex
	conns map[*trackedConn]struct{}
	// starting counts the connections handed to mochi that it may not
	// have counted in its clients' WaitGroup yet (EstablishConnection
	// does so before it first reads). Close waits for it, so that mochi's
	// Wait for its clients, which follows, never runs alongside that Add.
	starting sync.WaitGroup

	hmu      sync.Mutex
	lastErr  error
	errAt    time.Time
	okAt     time.Time
	failures int
}

var _ listeners.Listener = (*Listener)(nil)

// New is a listener for MQTT over TCP (TLS with tlsConf) on
// address, its connections counted and limited by g; srv is the mochi
// server it is added to.
func New(g *Guard, srv *mqtt.Server, id, address string, tlsConf *tls.Config) *Listener {
	for _, e := range acceptErrorLabels {
		g.metrics.AcceptErrors.WithLabelValues(id, e)
	}
	return &Listener{id: id, address: address, tlsConf: tlsConf, srv: srv, g: g,
		done: make(chan struct{}), conns: map[*trackedConn]struct{}{}}
}

func (l *Listener) ID() string { return l.id }

func (l *Listener) Protocol() string {
	if l.ws != nil {
		return "ws"
	}
	if l.tlsConf != nil {
		return "tls"
	}
	return "tcp"
}

func (l *Listener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Init binds the address.
func (l *Listener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	l.ln = ln
	return nil
}

// Serve accepts connections until Close; a failed accept is retried.
func (l *Listener) Serve(establish listeners.EstablishFn) {
	if l.ws != nil {
		l.ws.start(establish)
	}
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if l.end.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
			l.acceptFailed(err, delay)
			t := time.NewTimer(delay)
			select {
			case <-l.done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		if delay > 0 {
			l.acceptRecovered()
			delay = 0
		}
		go l.serveConn(c, establish)
	}
}

// acceptErrorLabel names the errors worth telling apart on a dashboard.
func acceptErrorLabel(err error) string {
	switch {
	case errors.Is(err, syscall.EMFILE):
		return "emfile"
	case errors.Is(err, syscall.ENFILE):
		return "enfile"
	case errors.Is(err, syscall.ECONNABORTED):
		return "econnaborted"
	case errors.Is(err, syscall.ENOBUFS), errors.Is(err, syscall.ENOMEM):
		return "enomem"
	}
	return "other"
}

func (l *Listener) acceptFailed(err error, retry time.Duration) {
	now := time.Now()
	l.hmu.Lock()
	first := l.failures == 0
	l.failures++
	n := l.failures
	l.lastErr, l.errAt = err, now
	l.hmu.Unlock()
	l.g.metrics.AcceptErrors.WithLabelValues(l.id, acceptErrorLabel(err)).Inc()
	if first || n%100 == 0 {
		l.g.log.Warn("mqtt listener cannot accept; retrying", "listener", l.id, "error", err,
			"retry_in", retry, "failures", n)
	}
}

func (l *Listener) acceptRecovered() {
	l.hmu.Lock()
	n, since := l.failures, l.errAt
	l.failures = 0
	l.okAt = time.Now()
	l.hmu.Unlock()
	l.g.log.Info("mqtt listener accepting again", "listener", l.id, "failures", n, "last_failure", since)
}

// Health is nil while the listener accepts, else why it does not. A
// listener that failed to accept (out of descriptors) is reported for a
// few seconds after its last failure, until an accept succeeds.
func (l *Listener) Health(now time.Time) error {
	if l.end.Load() {
		return fmt.Errorf("mqtt listener %s closed", l.id)
	}
	l.hmu.Lock()
	defer l.hmu.Unlock()
	if l.failures > 0 && l.errAt.After(l.okAt) && now.Sub(l.errAt) < listenerHealthWindow {
		return fmt.Errorf("mqtt listener %s not accepting (%d failed accepts): %v", l.id, l.failures, l.lastErr)
	}
	return nil
}

// serveConn admits one accepted connection and hands it to mochi.
func (l *Listener) serveConn(c net.Conn, establish listeners.EstablishFn) {
	g := l.g
	now := time.Now()
	src := sourceOf(c.RemoteAddr())
	if scope := g.attempts.take(src, now); scope != "" {
		_ = c.Close()
		g.metrics.Throttled.WithLabelValues(scope, LimitAttempts).Inc()
		g.sample.log(g.log, slog.LevelInfo, "throttle/"+scope, "connection throttled", now,
			"listener", l.id, "remote", c.RemoteAddr().String(), "scope", scope, "limit", LimitAttempts)
		return
	}
	n := g.open.Add(1)
	if n > g.max+busyMargin {
		g.open.Add(-1)
		_ = c.Close()
		g.metrics.Refused.WithLabelValues(refusal.MaxConnections).Inc()
		g.sample.log(g.log, slog.LevelWarn, "refused/max", "connection refused", now,
			"listener", l.id, "remote", c.RemoteAddr().String(), "reason", "max_connections", "limit", g.max)
		return
	}
	tc := &trackedConn{Conn: c, l: l, over: n > g.max, connectBy: now.Add(g.timeout)}
	tc.pending.Store(true)
	g.pending.Add(1)
	l.mu.Lock()
	closed := l.end.Load()
	if !closed {
		l.conns[tc] = struct{}{}
	}
	l.mu.Unlock()
	if closed {
		_ = tc.Close()
		return
	}
	_ = c.SetReadDeadline(tc.connectBy)
	if l.ws != nil {
		l.ws.hand(tc) // the upgrade and the CONNECT run in its HTTP server
		return
	}
	var conn net.Conn = tc
	if l.tlsConf != nil {
		conn = tls.Server(tc, l.tlsConf)
	}
	if err := l.establish(establish, conn); err != nil {
		g.log.Debug("mqtt connection ended", "listener", l.id, "remote", c.RemoteAddr().String(), "error", err)
	}
	_ = conn.Close()
}

// establish hands conn to mochi unless the listener is closed. Until
// mochi first reads it (it has counted the client by then) or returns,
// the hand-over is counted in l.starting.
func (l *Listener) establish(establish listeners.EstablishFn, conn net.Conn) error {
	l.mu.Lock()
	if l.end.Load() {
		l.mu.Unlock()
		return net.ErrClosed
	}
	l.starting.Add(1)
	l.mu.Unlock()
	sc := &startingConn{Conn: conn, done: l.starting.Done}
	defer sc.started()
	return establish(l.id, sc)
}

// startingConn is a connection being handed to mochi: its first read
// marks the hand-over done.
type startingConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (c *startingConn) started() { c.once.Do(c.done) }

func (c *startingConn) Read(p []byte) (int, error) {
	c.started()
	return c.Conn.Read(p)
}

// Close stops accepting, disconnects mochi's clients of the listener, then
// closes every connection still open, those that never sent CONNECT
// included.
func (l *Listener) Close(_ listeners.CloseFn) {
	// end is set under mu: a hand-over to mochi that took the lock before
	// is counted in starting (waited for below), a later one sees end.
	l.mu.Lock()
	first := l.end.CompareAndSwap(false, true)
	l.mu.Unlock()
	if first {
		close(l.done)
		if l.ln != nil {
			_ = l.ln.Close()
		}
		if l.ws != nil {
			l.ws.close()
		}
	}
	l.starting.Wait()
	l.closeClients()
	l.mu.Lock()
	open := make([]*trackedConn, 0, len(l.conns))
	for c := range l.conns {
		open = append(open, c)
	}
	l.mu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
}

// closeClients disconnects the listener's mochi clients as mochi's own
// close function (Server.closeListenerClients) does, without its
// Clients.GetByListener: that takes the clients' read lock a second time
// (through Len) while holding it, so a client removing itself at that
// moment (Delete, whose write lock waits for the first read lock and holds
// back the second) deadlocks Close for ever.
func (l *Listener) closeClients() {
	for _, cl := range l.srv.Clients.GetAll() {
		if cl.Net.Listener == l.id && !cl.Closed() {
			_ = l.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// trackedConn is an accepted connection, counted until it is closed. It is
// pending until mochi sets its first deadline, which mochi does right after
// the CONNECT was read and accepted (keep-alive). On the WebSocket listener
// the HTTP server and the upgrade set deadlines too: there the first one
// after arm counts.
type trackedConn struct {
	net.Conn
	l         *Listener
	over      bool        // over the connection limit: answered "server busy"
	unarmed   atomic.Bool // WebSocket: deadlines set before arm are not mochi's
	connectBy time.Time   // the CONNECT deadline
	pending   atomic.Bool
	timedOut  atomic.Bool
	closeOnce sync.Once
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && c.pending.Load() && errors.Is(err, os.ErrDeadlineExceeded) && c.timedOut.CompareAndSwap(false, true) {
		l := c.l
		now := time.Now()
		l.g.metrics.ConnectTimeouts.Inc()
		l.g.sample.log(l.g.log, slog.LevelInfo, "connect_timeout", "connection closed", now,
			"listener", l.id, "remote", c.RemoteAddr().String(), "reason", "connect_timeout", "timeout", l.g.timeout)
	}
	return n, err
}

// established marks the CONNECT done.
func (c *trackedConn) established() {
	if c.unarmed.Load() {
		return
	}
	if c.pending.CompareAndSwap(true, false) {
		c.l.g.pending.Add(-1)
	}
}

func (c *trackedConn) SetDeadline(t time.Time) error {
	c.established()
	return c.Conn.SetDeadline(c.clamp(t))
}

func (c *trackedConn) SetReadDeadline(t time.Time) error {
	c.established()
	return c.Conn.SetReadDeadline(c.clamp(t))
}

// clamp keeps a deadline set before arm (by the WebSocket listener's HTTP
// server or the upgrade) within the CONNECT deadline.
func (c *trackedConn) clamp(t time.Time) time.Time {
	if c.unarmed.Load() && (t.IsZero() || t.After(c.connectBy)) {
		return c.connectBy
	}
	return t
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.unarmed.Store(false)
		c.established()
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		c.l.g.open.Add(-1)
	})
	return err
}

// trackedOf finds the trackedConn under a client's connection.
func trackedOf(c net.Conn) *trackedConn {
	if s, ok := c.(*startingConn); ok {
		c = s.Conn
	}
	switch x := c.(type) {
	case *tls.Conn:
		c = x.NetConn()
	case *wsConn:
		c = x.Conn
	}
	t, _ := c.(*trackedConn)
	return t
}
