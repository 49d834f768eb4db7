// Package gateway is the edge gateway daemon as a composition of packages
// with one job each: it holds the configuration (Config, its keys) and the
// ingest pipeline between the MQTT broker and the record store (Ingest),
// and New assembles the record store (gateway/store), the broker, the HTTP
// API (gateway/httpapi) and, with a ledger, the identity cache, enrollment
// and tokens (gateway/identity) and batching, anchoring and proofs
// (gateway/batch).
package gateway

// API for the others (enrollment/identity, batcher/anchorer, cmd):
//
//	cfg := gateway.DefaultConfig() / gateway.LoadConfig(path); cfg.Validate()
//	g, err := gateway.New(cfg, gateway.Deps{Logger, Registerer, Gatherer,
//	        Signer, Registry, Enroller, LedgerPing, Ledger})
//	    the one constructor: with Deps.Ledger it also attaches the
//	    ledger identity (unless Registry is given) and anchoring
//	g.Store()      *store.Store: the record store (Badger, group commit)
//	    .LastGSeq() / .Changed() (closed at the next commit) / .Get(gseq)
//	    .Range(from, to, fn) (the batcher's RecordSource)
//	    .DeviceRecords(did, fromSeq, toSeq, limit) / .LastSeq(did)
//	    .Append(ctx, Pending) / .Enqueue (queue now, wait later); a
//	    byte-identical resend of a stored did+seq returns the stored
//	    record (Enqueue's wait says dup) and stores nothing
//	    .StoredDuplicate(did, seq, env): that check before the verify
//	    .DB() *badger.DB: keep your own key prefix; r/, d/, l/ are the
//	    store's (see gateway/store), and s/acked; SyncWrites is on. At open
//	    a gseq hole deletes nothing unless it is a failed write's tail.
//	    Record.LeafData() = salt ‖ receipt body (the Merkle leaf data).
//	g.Anchoring()  *batch.Anchoring: batch log, batcher, anchorer, proofs
//	    (nil without Deps.Ledger).
//	g.Broker()     *broker.Broker: SetRegistry / SetEnroller before Run,
//	    DisconnectDevice(did, reason); it also sweeps the Registry every
//	    second and disconnects revoked devices by itself.
//	g.Mux()        *http.ServeMux for extra routes (admin API) before Run.
//	g.Go(name, fn) runs fn(ctx) during Run; an error from fn stops the
//	    gateway. Services start after the store and before the broker, and
//	    stop after the broker (reverse order).
//	g.AddReadyCheck(name, fn) adds a critical /readyz check (failing: 503,
//	    devices cannot be served); g.AddDegradedCheck(name, fn) one that
//	    only degrades (200, "status":"degraded"). fn(ctx) error runs in
//	    the background every second (2 s timeout); /readyz answers from
//	    the last results (gateway/httpapi, health.go).
//	g.Signer()     the gateway's SM2 key (receipts, batch headers, txs).
//	g.Registerer() the metrics registerer (register your own metrics there).
//	g.Run(ctx)     blocks until ctx ends or a component fails; g.Close()
//	    releases everything if Run was never called.
//	Metrics: the broker's (broker/metrics.go) and the store's (store.Metrics)
//	    are registered by New; edgeanchor_store_write_seconds is one group
//	    commit from submit to fsync'd, edgeanchor_store_group_records its size.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/batch"
	"github.com/edgeanchor/edgeanchor/gateway/httpapi"
	"github.com/edgeanchor/edgeanchor/gateway/identity"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// Deps are what the gateway is given rather than builds.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: a private registry
	Gatherer   prometheus.Gatherer   // served at /metrics; nil: Registerer if it is a registry
	// Signer is the gateway key; nil loads Config.KeyPath.
	Signer device.Signer
	// Registry answers device identities; nil: an empty StaticRegistry
	// (set the ledger-following cache with Broker().SetRegistry).
	Registry broker.Registry
	// Enroller admits new devices; nil: enrollment refused.
	Enroller broker.Enroller
	// LedgerPing reports whether the ledger is reachable (/readyz); nil
	// with Ledger set: Ledger's Height.
	LedgerPing func(ctx context.Context) error
	// Ledger is the ledger client (the caller closes it after Run); nil: a
	// gateway without a ledger (no enrollment, no anchoring). With it New
	// also follows the ledger's device registry and admits enrollments
	// (unless Registry is given; attachLedgerIdentity), and cuts,
	// anchors and proves batches (enableAnchoring).
	Ledger *ledgerclient.Client
}

type service struct {
	name string
	run  func(ctx context.Context) error
}

// Gateway is the assembled daemon.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	reg    prometheus.Registerer
	gather prometheus.Gatherer
	signer device.Signer
	store  *store.Store
	broker *broker.Broker
	mux    *http.ServeMux
	httpLn net.Listener
	ping   func(ctx context.Context) error
	svcs   []service
	health *httpapi.Health
	// Set by New when Deps.Ledger is given.
	identity  *identity.Cache
	enroller  *identity.Enroller
	anchoring *batch.Anchoring
	closeMu   sync.Mutex
	closed    bool
	ran       bool
}

// New opens the store, builds the broker and binds every listener; Run
// serves them.
func New(cfg Config, deps Deps) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: deps.Logger, reg: deps.Registerer, gather: deps.Gatherer, signer: deps.Signer,
		mux: http.NewServeMux(), ping: deps.LedgerPing, health: httpapi.NewHealth(healthInterval, healthTimeout)}
	if g.ping == nil && deps.Ledger != nil {
		ledger := deps.Ledger
		g.ping = func(ctx context.Context) error { _, err := ledger.Height(ctx); return err }
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.reg == nil {
		r := prometheus.NewRegistry()
		g.reg = r
		if g.gather == nil {
			g.gather = r
		}
	}
	if g.gather == nil {
		if r, ok := g.reg.(prometheus.Gatherer); ok {
			g.gather = r
		} else {
			g.gather = prometheus.DefaultGatherer
		}
	}
	if g.signer == nil {
		s, err := device.LoadKeySigner(cfg.KeyPath)
		if err != nil {
			return nil, fmt.Errorf("gateway: load key %s: %w", cfg.KeyPath, err)
		}
		g.signer = s
	}
	dir := filepath.Join(cfg.DataDir, "records")
	st, err := store.Open(dir, store.Options{
		Config: cfg.Store, Signer: g.signer, Logger: g.log, Metrics: store.NewMetrics(g.reg, dir),
		MaxPending: cfg.Limits.MaxInFlight, Claims: batch.Claims(),
	})
	if err != nil {
		return nil, err
	}
	g.store = st
	if err := writeDataDirInfo(cfg.DataDir, g.signer.DID(), cfg.Site); err != nil {
		_ = st.Close()
		return nil, err
	}
	var tlsConf *tls.Config
	if cfg.MQTT.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.MQTT.TLSCert, cfg.MQTT.TLSKey)
		if err != nil {
			_ = st.Close()
			return nil, fmt.Errorf("gateway: load TLS certificate: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	accounts := make([]broker.Account, len(cfg.Accounts))
	for i, a := range cfg.Accounts {
		accounts[i] = broker.Account{Username: a.Username, PasswordHash: a.PasswordHash, Topics: a.Topics}
	}
	connPerSource, connGlobal, failPerSource, failGlobal := cfg.Limits.connectLimits()
	ingest := NewIngest(st, cfg.Limits.MaxPayload)
	ingest.SetClock(time.Now, cfg.FutureTolerance)
	g.broker, err = broker.New(broker.Options{
		Site: cfg.Site, Registry: deps.Registry, Ingester: ingest,
		Enroller: deps.Enroller, Accounts: accounts, CredentialWindow: cfg.CredentialWindow,
		MaxPayload: cfg.Limits.MaxPayload, DeviceRate: cfg.Limits.DeviceRate, DeviceBurst: cfg.Limits.DeviceBurst,
		MaxConnections: cfg.Limits.MaxConnections, MaxInFlight: cfg.Limits.MaxInFlight,
		V3RefusalsBeforeDisconnect: cfg.Limits.V3RefusalsBeforeDisconnect,
		SubscriberInflight:         cfg.Limits.SubscriberInflight,
		ClientWriteQueue:           cfg.Limits.ClientWriteQueue,
		TCPAddr:                    cfg.MQTT.TCP, WSAddr: cfg.MQTT.WS, TLSAddr: cfg.MQTT.TLS, TLSConfig: tlsConf,
		ConnectTimeout: cfg.MQTT.ConnectTimeout, FDHeadroom: cfg.MQTT.FDHeadroom,
		ConnectPerSource: connPerSource, ConnectGlobal: connGlobal,
		AuthFailuresPerSource: failPerSource, AuthFailuresGlobal: failGlobal,
		Logger: g.log.With("component", "broker"), Registerer: g.reg,
	})
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	// The refusal series exist at 0 from the start (dashboards show 0,
	// not "No data", on a healthy site).
	initMetricLabels(g.broker.Metrics())
	g.httpLn, err = net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		_ = g.broker.Close()
		_ = st.Close()
		return nil, fmt.Errorf("gateway: listen http on %s: %w", cfg.HTTP.Addr, err)
	}
	httpapi.Routes(g.mux, httpapi.Options{Store: g.store, Health: g.health, Gatherer: g.gather,
		MaxPage: cfg.HTTP.MaxPage, Log: g.log})
	g.health.Add("broker", httpapi.Critical, func(context.Context) error {
		if !g.broker.Up() {
			return errors.New("not serving")
		}
		return g.broker.ListenerHealth() // nil while every MQTT listener accepts
	})
	g.health.Add("store", httpapi.Critical, func(context.Context) error { return g.store.Healthy() })
	if g.ping != nil {
		g.health.Add("ledger", httpapi.Degraded, func(ctx context.Context) error {
			if err := g.ping(ctx); err != nil {
				return fmt.Errorf("unreachable (anchoring and enrollment wait; ingest goes on): %w", err)
			}
			return nil
		})
	}
	if deps.Ledger != nil {
		if deps.Registry == nil {
			if g.identity, g.enroller, err = attachLedgerIdentity(g, deps.Ledger); err != nil {
				_ = g.Close()
				return nil, err
			}
		}
		if g.anchoring, err = enableAnchoring(g, deps.Ledger); err != nil {
			_ = g.Close()
			return nil, err
		}
	}
	return g, nil
}

// Readiness probing (httpapi.Health): each check runs every healthInterval, at
// most healthTimeout each.
const (
	healthInterval = time.Second
	healthTimeout  = 2 * time.Second
)

// Store returns the record store.
func (g *Gateway) Store() *store.Store { return g.store }

// Identity returns the ledger-following identity cache; nil without
// Deps.Ledger or with Deps.Registry.
func (g *Gateway) Identity() *identity.Cache { return g.identity }

// Enroller returns the enrollment check; nil when Identity is nil.
func (g *Gateway) Enroller() *identity.Enroller { return g.enroller }

// Anchoring returns the batcher, anchorer and proof API; nil without
// Deps.Ledger.
func (g *Gateway) Anchoring() *batch.Anchoring { return g.anchoring }

// Broker returns the MQTT broker.
func (g *Gateway) Broker() *broker.Broker { return g.broker }

// Mux returns the HTTP mux, for extra routes added before Run.
func (g *Gateway) Mux() *http.ServeMux { return g.mux }

// Signer returns the gateway's key.
func (g *Gateway) Signer() device.Signer { return g.signer }

// Config returns the validated configuration.
func (g *Gateway) Config() Config { return g.cfg }

// Registerer returns the metrics registerer.
func (g *Gateway) Registerer() prometheus.Registerer { return g.reg }

// Logger returns the gateway's logger.
func (g *Gateway) Logger() *slog.Logger { return g.log }

// HTTPAddr returns the bound address of the HTTP API.
func (g *Gateway) HTTPAddr() string { return g.httpLn.Addr().String() }

// Go registers a background service run by Run; call before Run.
func (g *Gateway) Go(name string, run func(ctx context.Context) error) {
	g.svcs = append(g.svcs, service{name: name, run: run})
}

// AddReadyCheck adds a critical /readyz check: while it fails /readyz
// answers 503 (devices cannot be served). It runs in the background (see
// Health.Add); call before or during Run.
func (g *Gateway) AddReadyCheck(name string, check func(ctx context.Context) error) {
	g.health.Add(name, httpapi.Critical, check)
}

// AddDegradedCheck adds a /readyz check that only degrades: while it fails
// /readyz still answers 200, with "status":"degraded" and the check's
// error under its name.
func (g *Gateway) AddDegradedCheck(name string, check func(ctx context.Context) error) {
	g.health.Add(name, httpapi.Degraded, check)
}

// Health returns the readiness state behind /readyz.
func (g *Gateway) Health() *httpapi.Health { return g.health }

// Run starts the services, the broker and the HTTP API, and blocks until
// ctx ends or one of them fails; it then stops them in reverse order and
// closes the store. The error is nil after a clean stop on ctx.
func (g *Gateway) Run(ctx context.Context) error {
	g.closeMu.Lock()
	if g.closed || g.ran {
		g.closeMu.Unlock()
		return errors.New("gateway: Run called twice or after Close")
	}
	g.ran = true
	g.closeMu.Unlock()

	if g.cfg.MemoryLimitMB > 0 && os.Getenv("GOMEMLIMIT") == "" {
		prev := debug.SetMemoryLimit(int64(g.cfg.MemoryLimitMB) << 20)
		defer debug.SetMemoryLimit(prev)
	}
	if g.cfg.GCPercent > 0 && os.Getenv("GOGC") == "" {
		prev := debug.SetGCPercent(g.cfg.GCPercent)
		defer debug.SetGCPercent(prev)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(g.svcs)+1)
	var svcWG sync.WaitGroup
	svcCtx, svcCancel := context.WithCancel(context.Background())
	defer svcCancel()
	for _, s := range g.svcs {
		svcWG.Add(1)
		go func() {
			defer svcWG.Done()
			if err := s.run(svcCtx); err != nil && svcCtx.Err() == nil {
				errc <- fmt.Errorf("gateway: service %s: %w", s.name, err)
			}
		}()
	}
	if err := g.broker.Start(context.Background()); err != nil {
		svcCancel()
		svcWG.Wait()
		_ = g.broker.Close()
		_ = g.httpLn.Close()
		_ = g.store.Close()
		return err
	}
	// Readiness is probed in the background from now on; /readyz answers
	// from the last results (the first ones are in before it serves).
	healthCtx, healthCancel := context.WithCancel(context.Background())
	healthWait := g.health.Start(healthCtx, 200*time.Millisecond)
	defer func() { healthCancel(); healthWait() }()
	srv := &http.Server{Handler: g.mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelWarn)}
	go func() {
		if err := srv.Serve(g.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("gateway: http: %w", err)
		}
	}()
	g.log.Info("gateway started", "did", g.signer.DID(), "site", g.cfg.Site, "mqtt_tcp", g.broker.Addr("tcp"),
		"mqtt_ws", g.broker.Addr("ws"), "mqtt_tls", g.broker.Addr("tls"), "http", g.HTTPAddr(),
		"last_gseq", g.store.LastGSeq())

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		g.log.Error("gateway component failed", "error", runErr)
	}
	// Reverse order: HTTP, broker (no new publishes), services, store.
	shutCtx, shutCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer shutCancel()
	_ = srv.Shutdown(shutCtx)
	_ = g.broker.Close()
	svcCancel()
	svcWG.Wait()
	if err := g.store.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("gateway: close store: %w", err)
	}
	g.closeMu.Lock()
	g.closed = true
	g.closeMu.Unlock()
	g.log.Info("gateway stopped", "last_gseq", g.store.LastGSeq())
	return runErr
}

// Close releases a gateway whose Run was never called (Run closes
// everything itself when it returns).
func (g *Gateway) Close() error {
	g.closeMu.Lock()
	defer g.closeMu.Unlock()
	if g.closed || g.ran {
		return nil
	}
	g.closed = true
	_ = g.httpLn.Close()
	_ = g.broker.Close()
	return g.store.Close()
}
