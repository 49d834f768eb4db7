// Package broker is the gateway's MQTT broker: mochi-mqtt v2 with hooks that
// authenticate devices by their SM2 keys at CONNECT (or enroll them), enforce
// the topic ACL, and feed every device publish through an Ingester before the
// PUBACK/PUBREC is written. It knows nothing of storage: the gateway passes
// an Ingester and a Registry in.
package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/broker/listener"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/refusal"
)

// Ingester turns one device publish into a stored record. Ingest is called
// from the publishing client's goroutine, many at once: it checks the
// payload there (so verification runs on all cores), queues the durable
// write and returns a function that waits for it. A refusal found before
// the write is returned as err (a *Refusal); wait returns the Accepted
// record once it is durably stored, or a *Refusal. The PUBACK is sent only
// after wait returned Accepted. Writes queued one after the other from one
// goroutine are sequenced in that order. dev is the authenticated
// publisher; payload the raw MQTT payload.
type Ingester interface {
	Ingest(ctx context.Context, dev DeviceInfo, payload []byte) (wait func() (Accepted, error), err error)
}

// Accepted is a stored record as the broker needs it: how to build the
// receipt message for the device and the verified-record message for site
// applications. The builders are called only when somebody subscribes, so
// a gateway without listeners spends nothing on them; either may be nil.
type Accepted struct {
	GSeq    uint64
	Kind    string
	Receipt func() []byte // published on ReceiptTopic(did)
	Record  func() []byte // republished on RecordsTopic(site, kind), best effort
	// Duplicate: the publish resent a record already stored (same device,
	// seq and envelope bytes; its PUBACK was lost). It is acknowledged,
	// its receipt sent again, and nothing new is stored or republished.
	Duplicate bool
}

// Refusal is a refused publish. Reason is the metric and log label (see
// docs/protocol.md), Kind the record kind if it was decoded (else "").
type Refusal struct {
	Reason string
	Kind   string
	Err    error
}

func (r *Refusal) Error() string {
	if r.Err == nil {
		return "publish refused: " + r.Reason
	}
	return "publish refused: " + r.Reason + ": " + r.Err.Error()
}

func (r *Refusal) Unwrap() error { return r.Err }

// EnrollRequest is a CONNECT whose password is an enrollment credential
// (ea1-enroll.{token}.{reg}.{sig}); Username and ClientID have been checked
// to be the same well-formed DID.
type EnrollRequest struct {
	DID      device.DID
	Password string
	Remote   string
}

// Enroller admits a new device: it checks the token and the registration,
// registers the device on the ledger and returns once the registration is
// committed. It refuses with an *AuthError whose Reason is the metric label
// (token_unknown, token_used, ledger_unavailable, ...). It is called from the
// connecting client's goroutine and may take seconds.
type Enroller func(ctx context.Context, req EnrollRequest) (DeviceInfo, error)

// Account is a site application account: read-only on Topics.
type Account struct {
	Username     string
	PasswordHash string // bcrypt
	Topics       []string
}

// Options configure a Broker. Zero limits mean "no limit" except where noted.
type Options struct {
	Site     string
	Registry Registry
	Ingester Ingester
	Enroller Enroller // nil: enrollment refused with enrollment_disabled
	Accounts []Account

	// CredentialWindow bounds |now-unix| of a connect credential (default 120 s).
	CredentialWindow time.Duration
	// MaxPayload: publishes over this many bytes are refused as too_large.
	// mochi itself cuts connections whose packets exceed 2*MaxPayload+4 KiB.
	MaxPayload int
	// DeviceRate (msgs/s) and DeviceBurst: per-device token bucket.
	DeviceRate  float64
	DeviceBurst int
	// MaxConnections bounds the open MQTT connections on all listeners,
	// those still waiting for their CONNECT included; beyond it
	// a CONNECT is answered "server busy" (and, past a small margin, the
	// connection closed at once). It is capped below RLIMIT_NOFILE minus
	// FDHeadroom; 0 means that cap alone.
	MaxConnections int
	// FDHeadroom is the number of descriptors left below RLIMIT_NOFILE for
	// the rest of the process (default DefaultFDHeadroom).
	FDHeadroom int
	// ConnectTimeout: a connection that has not sent its CONNECT (TLS
	// handshake included) this long after it was accepted is closed
	// (default DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// ConnectPerSource and ConnectGlobal limit new connections per source
	// address and in all; AuthFailuresPerSource and AuthFailuresGlobal the
	// CONNECTs refused by authentication. Zero rates turn a limit off.
	ConnectPerSource, ConnectGlobal           listener.RateLimit
	AuthFailuresPerSource, AuthFailuresGlobal listener.RateLimit
	// MaxInFlight bounds publishes inside Ingest at once (inflight_exceeded).
	MaxInFlight int
	// V3RefusalsBeforeDisconnect (default 1): MQTT 3.1.1 clients cannot be
	// told why a publish was refused, so they are cut off at this count.
	V3RefusalsBeforeDisconnect int
	// SubscriberInflight bounds the unacknowledged QoS 1/2 messages queued
	// for one subscriber (mochi's maximum_inflight, default 8,192); past it
	// mochi drops messages to that subscriber (counted as republish or
	// receipt drops).
	SubscriberInflight int
	// ClientWriteQueue bounds the messages waiting to be written to one
	// client (mochi's maximum_client_writes_pending, allocated per client up
	// front at 8 bytes a slot; default 256); past it mochi drops messages to
	// that client (counted as republish or receipt drops).
	ClientWriteQueue int
	// RevocationSweep is how often connected devices are checked against the
	// Registry and revoked ones disconnected (default 1 s).
	RevocationSweep time.Duration

	// Listener addresses; empty turns one off. TLS needs TLSConfig.
	TCPAddr   string
	WSAddr    string
	TLSAddr   string
	TLSConfig *tls.Config

	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time // default time.Now
}

// Broker is the embedded MQTT broker with edgeanchor's hooks.
type Broker struct {
	opts     Options
	log      *slog.Logger
	srv      *mqtt.Server
	metrics  *Metrics
	accounts map[string]*Account
	nonces   nonceCache
	limiter  *rateLimiter
	sessions sync.Map // *mqtt.Client -> *session
	inflight atomic.Int64
	addrs    map[string]listeners.Listener
	up       atomic.Bool
	// guard counts and rate-limits the connections of connListeners.
	guard         *listener.Guard
	connListeners []*listener.Listener

	mu       sync.RWMutex // guards registry and enroller (set before Start)
	registry Registry
	enroller Enroller

	ctx         context.Context
	cancel      context.CancelFunc
	connectWork *connectWork // CONNECT verification (connectwork.go), from Start
	wg          sync.WaitGroup
	closeOnce   sync.Once
}

// DefaultConnectTimeout is how long a new connection may take to send its
// CONNECT (TLS handshake included) before it is closed.
const DefaultConnectTimeout = 5 * time.Second

// DefaultFDHeadroom is how many file descriptors the connection limit
// leaves to the rest of the process (Badger's files, HTTP, the ledger
// client) below RLIMIT_NOFILE.
const DefaultFDHeadroom = 512

// ErrNoIngester means Options.Ingester was nil.
var ErrNoIngester = errors.New("broker: an Ingester is required")

// New builds the broker and binds its listeners; Start serves them.
func New(opts Options) (*Broker, error) {
	if opts.Ingester == nil {
		return nil, ErrNoIngester
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.Registry == nil {
		opts.Registry = NewStaticRegistry()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CredentialWindow <= 0 {
		opts.CredentialWindow = 120 * time.Second
	}
	if opts.MaxPayload <= 0 {
		opts.MaxPayload = device.DefaultMaxBody
	}
	if opts.V3RefusalsBeforeDisconnect <= 0 {
		opts.V3RefusalsBeforeDisconnect = 1
	}
	if opts.RevocationSweep <= 0 {
		opts.RevocationSweep = time.Second
	}
	if opts.FDHeadroom <= 0 {
		opts.FDHeadroom = DefaultFDHeadroom
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	limit, nofile, err := listener.ConnLimit(opts.MaxConnections, opts.FDHeadroom)
	if err != nil {
		return nil, err
	}
	if opts.MaxConnections > 0 && limit < opts.MaxConnections {
		opts.Logger.Warn("connection limit lowered to fit the descriptor limit", "max_connections", opts.MaxConnections,
			"limit", limit, "rlimit_nofile", nofile, "fd_headroom", opts.FDHeadroom)
	}
	opts.MaxConnections = limit
	b := &Broker{
		opts:     opts,
		log:      opts.Logger,
		accounts: map[string]*Account{},
		limiter:  newRateLimiter(opts.DeviceRate, opts.DeviceBurst),
		addrs:    map[string]listeners.Listener{},
		registry: opts.Registry,
		enroller: opts.Enroller,
	}
	for i := range opts.Accounts {
		a := opts.Accounts[i]
		b.accounts[a.Username] = &a
	}
	caps := mqtt.NewDefaultServerCapabilities()
	if opts.MaxConnections > 0 {
		caps.MaximumClients = int64(opts.MaxConnections)
	}
	caps.MaximumPacketSize = uint32(2*opts.MaxPayload + 4096)
	// mochi allocates each client's outbound queue up front (8,192 slots
	// by default, 64 KiB per client; 256 slots are 2 KiB, 10,000 devices
	// 600 MB lighter). A device receives only its receipts; a site
	// application whose connection stops taking 256 messages has
	// republished records dropped (counted) and reads them from the HTTP
	// API instead.
	caps.MaximumClientWritesPending = 256
	if opts.ClientWriteQueue > 0 {
		caps.MaximumClientWritesPending = int32(min(opts.ClientWriteQueue, 1<<16))
	}
	if opts.SubscriberInflight > 0 {
		caps.MaximumInflight = uint16(min(opts.SubscriberInflight, 65535))
	}
	caps.MaximumSessionExpiryInterval = 3600
	caps.MaximumMessageExpiryInterval = 3600
	b.srv = mqtt.New(&mqtt.Options{
		Capabilities: caps,
		InlineClient: true,
		// A device's packet is one envelope, usually under 1 KiB; a larger
		// one only takes more reads. 1 KiB a connection less than mochi's
		// default.
		ClientNetReadBufferSize: 1024,
		Logger:                  slog.New(minLevel{opts.Logger.Handler(), slog.LevelError}).With("component", "mochi"),
	})
	b.metrics = NewMetrics(opts.Registerer, func() float64 { return float64(atomic.LoadInt64(&b.srv.Info.ClientsConnected)) })
	b.guard = listener.NewGuard(listener.GuardOptions{MaxConnections: limit, ConnectTimeout: opts.ConnectTimeout,
		ConnectPerSource: opts.ConnectPerSource, ConnectGlobal: opts.ConnectGlobal,
		AuthFailuresPerSource: opts.AuthFailuresPerSource, AuthFailuresGlobal: opts.AuthFailuresGlobal,
		Now: opts.Now(), Logger: opts.Logger, Registerer: opts.Registerer})
	b.metrics.Conn = b.guard.Metrics()
	if err := b.srv.AddHook(&hook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("broker: add hook: %w", err)
	}
	add := func(id string, l listeners.Listener) error {
		if err := b.srv.AddListener(l); err != nil {
			_ = b.srv.Close()
			return fmt.Errorf("broker: listen %s on %s: %w", id, l.Address(), err)
		}
		b.addrs[id] = l
		return nil
	}
	if opts.TCPAddr != "" {
		if err := b.addListener(add, listener.New(b.guard, b.srv, "tcp", opts.TCPAddr, nil)); err != nil {
			return nil, err
		}
	}
	if opts.TLSAddr != "" && opts.TLSConfig != nil {
		if err := b.addListener(add, listener.New(b.guard, b.srv, "tls", opts.TLSAddr, opts.TLSConfig)); err != nil {
			return nil, err
		}
	}
	if opts.WSAddr != "" {
		if err := b.addListener(add, listener.NewWebSocket(b.guard, b.srv, "ws", opts.WSAddr)); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// minLevel passes on only records at or above level. mochi logs every
// refused packet at Warn with the whole packet dumped; the broker's own
// refusal logs and metrics say the same in one line, so mochi is kept to
// errors (unless the broker's logger is at Debug).
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	if h.Handler.Enabled(ctx, slog.LevelDebug) {
		return true
	}
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.level}
}
func (h minLevel) WithGroup(n string) slog.Handler { return minLevel{h.Handler.WithGroup(n), h.level} }

// SetRegistry replaces the identity registry; call before Start.
func (b *Broker) SetRegistry(r Registry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.registry = r
}

// SetEnroller installs the enrollment handler; call before Start.
func (b *Broker) SetEnroller(e Enroller) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.enroller = e
}

func (b *Broker) reg() Registry {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.registry
}

// Start serves the listeners and the revocation sweep until Close or ctx ends.
func (b *Broker) Start(ctx context.Context) error {
	b.ctx, b.cancel = context.WithCancel(ctx)
	b.startConnectWork(b.ctx, connectWorkers())
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("broker: serve: %w", err)
	}
	b.up.Store(true)
	b.wg.Add(1)
	go b.sweepRevoked(b.ctx)
	return nil
}

// Close stops the listeners, disconnects every client and waits for the
// broker's goroutines.
func (b *Broker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.up.Store(false)
		if b.cancel != nil {
			b.cancel()
		}
		err = b.srv.Close()
		b.wg.Wait()
	})
	return err
}

// Up reports whether the broker is serving.
func (b *Broker) Up() bool { return b.up.Load() }

// Addr returns the bound address of listener "tcp", "ws" or "tls" ("" when
// off). All three report the real port when configured with port 0.
func (b *Broker) Addr(id string) string {
	l, ok := b.addrs[id]
	if !ok {
		return ""
	}
	return l.Address()
}

// Server exposes the mochi server (inline publishing, $SYS info).
func (b *Broker) Server() *mqtt.Server { return b.srv }

// Metrics returns the broker's metrics.
func (b *Broker) Metrics() *Metrics { return b.metrics }

// DisconnectDevice closes the session of did if it is connected (a
// revocation); it reports whether a session was closed.
func (b *Broker) DisconnectDevice(did device.DID, reason string) bool {
	cl, ok := b.srv.Clients.Get(string(did))
	if !ok || cl.Closed() {
		return false
	}
	if s := b.session(cl); s == nil || !s.device {
		return false
	}
	b.log.Info("device disconnected", "did", did, "reason", reason)
	b.kick(cl)
	return true
}

func (b *Broker) sweepRevoked(ctx context.Context) {
	defer b.wg.Done()
	t := time.NewTicker(b.opts.RevocationSweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		reg := b.reg()
		b.sessions.Range(func(k, v any) bool {
			s := v.(*session)
			if cl := k.(*mqtt.Client); cl.Closed() && s.state.CompareAndSwap(sessionAdmitted, sessionAbandoned) {
				// Authenticated but gone before its session was established
				// (the CONNACK could not be written): no OnDisconnect comes.
				// The swap, not a read of the state followed by one of
				// Closed, decides: a session established in between, and
				// closed, would lose the OnDisconnect that ends its
				// acknowledger, and Close would wait for it for ever.
				b.sessions.Delete(k)
				return true
			}
			if !s.device {
				return true
			}
			if info, ok := reg.Lookup(s.dev.DID); ok && info.Revoked {
				cl := k.(*mqtt.Client)
				if !cl.Closed() {
					b.log.Info("device disconnected", "did", s.dev.DID, "reason", refusal.Revoked)
					b.kick(cl)
				}
			}
			return true
		})
	}
}

// ListenerHealth is nil while the broker serves and every listener
// accepts connections; otherwise it says which does not and why
// (for /readyz). A listener that failed to accept (out of descriptors)
// is reported for a few seconds after its last failure, until an accept
// succeeds.
func (b *Broker) ListenerHealth() error {
	if !b.Up() {
		return errors.New("broker not serving")
	}
	now := time.Now()
	var errs []error
	for _, l := range b.connListeners {
		if err := l.Health(now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ConnectionLimit is the effective limit on open MQTT connections.
func (b *Broker) ConnectionLimit() int { return b.guard.Max() }

// addListener adds a Listener through add (New's helper).
func (b *Broker) addListener(add func(string, listeners.Listener) error, l *listener.Listener) error {
	if err := add(l.ID(), l); err != nil {
		return err
	}
	b.connListeners = append(b.connListeners, l)
	return nil
}
