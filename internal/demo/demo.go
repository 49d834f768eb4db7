// Package demo runs the whole edgeanchor system in one process on
// 127.0.0.1: a single-validator ledger, a gateway and a simulated device
// fleet. It is what `edgeanchor demo` (and `make run`) runs.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway"
	"github.com/edgeanchor/edgeanchor/gateway/identity"
	"github.com/edgeanchor/edgeanchor/ledger"
	"github.com/edgeanchor/edgeanchor/portal"
	"github.com/edgeanchor/edgeanchor/sim"
	"github.com/edgeanchor/edgeanchor/sim/profile"
)

// ErrPortTaken means a port the demo needs on 127.0.0.1 is in use. Stop
// whatever holds it (often a previous demo) or give the demo another port.
var ErrPortTaken = errors.New("port already in use")

// Options configure Run. Zero ports take the defaults of docs/internals.md.
type Options struct {
	Dir     string
	Devices int
	Profile string
	Rate    float64 // readings per second per device
	Site    string
	Seed    uint64

	MQTTPort, WSPort, HTTPPort int
	P2PPort, RPCPort           int // used when the ledger home is made
	// PromPort is the ledger's own Prometheus listener (CometBFT's and the
	// ledger application's metrics), used when the ledger home is made.
	PromPort int
	// PortalPort is the regulator's portal (package portal), on 127.0.0.1.
	PortalPort int

	// Progress receives the start banner and the live progress line.
	Progress io.Writer
	// Live: rewrite one line in place (a terminal); otherwise print a line
	// every LineEvery.
	Live      bool
	Interval  time.Duration // refresh (1 s)
	LineEvery time.Duration // non-live line interval (10 s)
	// OnStatus, if set, is called at every refresh (tests).
	OnStatus func(Status)
	LogLevel slog.Level
	// Log receives the components' logs (default: Dir/demo.log).
	Log io.Writer
}

// Status is one refresh of the progress line.
type Status struct {
	Online     int     // devices connected to the gateway
	MsgsPerSec float64 // records stored per second, over the last refresh
	Accepted   float64 // records stored since the gateway started
	Refused    float64 // publishes refused
	Batches    float64 // batches anchored on the ledger
	Height     int64   // ledger height
	Spooled    int     // readings waiting in device spools
}

// DefaultOptions are what `make run` uses.
func DefaultOptions() Options {
	return Options{
		Dir: "./var", Devices: 20, Profile: "mixed", Rate: 3, Site: "site-a",
		MQTTPort: 1883, WSPort: 8083, HTTPPort: 8480, P2PPort: ledger.DefaultP2PPort, RPCPort: ledger.DefaultRPCPort,
		PromPort: ledger.DefaultPrometheusPort, PortalPort: 8490,
	}
}

// paths are where the demo keeps its state under Dir.
type paths struct {
	dir, ledger, gateway, gatewayKey, sim, trust, log string
}

func newPaths(dir string) paths {
	return paths{
		dir:        dir,
		ledger:     filepath.Join(dir, "ledger"),
		gateway:    filepath.Join(dir, "gateway"),
		gatewayKey: filepath.Join(dir, "gateway", "gateway.key"),
		sim:        filepath.Join(dir, "sim"),
		trust:      filepath.Join(dir, "trust.json"),
		log:        filepath.Join(dir, "demo.log"),
	}
}

func (o *Options) defaults() {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.LineEvery <= 0 {
		o.LineEvery = 10 * time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Site == "" {
		o.Site = "site-a"
	}
}

// host is the only address the demo binds.
const host = "127.0.0.1"

// system is the demo's state directory and logger, made ready by prepare.
type system struct {
	o        Options
	p        paths
	log      *slog.Logger
	signer   *device.KeySigner // the gateway's key
	p2p, rpc int
	prom     int // the ledger's Prometheus port; 0: off in its home
	closeLog func()
}

// prepare checks every port before anything starts, then makes what is made
// once: the state directory, the gateway key, the ledger home with the
// gateway in its genesis, and the trust file.
func prepare(o Options) (*system, error) {
	o.defaults()
	s := &system{o: o, p: newPaths(o.Dir), p2p: o.P2PPort, rpc: o.RPCPort, prom: o.PromPort, closeLog: func() {}}
	if err := s.validate(); err != nil {
		return nil, err
	}
	ledgerFlag := func(flag string) string { return flag }
	if conf, err := ledger.LoadConfig(s.p.ledger); err == nil {
		s.p2p, s.rpc = portOf(conf.P2P.ListenAddress, s.p2p), portOf(conf.RPC.ListenAddress, s.rpc)
		s.prom = 0
		if conf.Instrumentation.Prometheus {
			s.prom = portOf("tcp://"+conf.Instrumentation.PrometheusListenAddr, 0)
		}
		cfgFile := filepath.Join(s.p.ledger, "config", "config.toml")
		ledgerFlag = func(string) string { return "its setting in " + cfgFile }
	}
	ports := []struct {
		what, change string
		port         int
	}{
		{"the gateway's MQTT listener", "--mqtt-port", o.MQTTPort},
		{"the gateway's MQTT WebSocket listener", "--ws-port", o.WSPort},
		{"the gateway's HTTP API", "--http-port", o.HTTPPort},
		{"the ledger's p2p listener", ledgerFlag("--p2p-port"), s.p2p},
		{"the ledger's RPC", ledgerFlag("--rpc-port"), s.rpc},
		{"the ledger's Prometheus listener", ledgerFlag("--ledger-metrics-port"), s.prom},
		{"the regulator's portal", "--portal-port", o.PortalPort},
	}
	for _, pt := range ports {
		if pt.port == 0 {
			continue
		}
		if err := checkPort(host, pt.port); err != nil {
			return nil, fmt.Errorf("%w: %s needs %s:%d (%v); stop what holds it (a demo still running?) or change %s",
				ErrPortTaken, pt.what, host, pt.port, err, pt.change)
		}
	}

	if err := os.MkdirAll(s.p.dir, 0o700); err != nil {
		return nil, err
	}
	logOut := o.Log
	if logOut == nil {
		f, err := os.OpenFile(s.p.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		s.closeLog = func() { f.Close() }
		logOut = f
	}
	s.log = slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: o.LogLevel}))
	if err := s.makeOnce(); err != nil {
		s.closeLog()
		return nil, err
	}
	return s, nil
}

func (s *system) makeOnce() error {
	if _, err := os.Stat(s.p.gatewayKey); os.IsNotExist(err) {
		priv, err := device.GenerateKey()
		if err != nil {
			return err
		}
		if err := device.WritePrivateKeyFile(s.p.gatewayKey, priv); err != nil {
			return err
		}
	}
	signer, err := device.LoadKeySigner(s.p.gatewayKey)
	if err != nil {
		return err
	}
	s.signer = signer
	if _, err := ledger.LoadConfig(s.p.ledger); errors.Is(err, ledger.ErrNoHome) {
		gg, err := ledger.GenesisGatewayFromKey(signer.Public(), s.o.Site, "demo gateway")
		if err != nil {
			return err
		}
		if _, err := ledger.InitHome(s.p.ledger, ledger.HomeOptions{
			P2PPort: s.p2p, RPCPort: s.rpc, PrometheusPort: s.prom, NoPrometheus: s.prom == 0,
			Gateways: []anchor.GenesisGateway{gg},
		}); err != nil {
			return fmt.Errorf("demo: ledger init: %w", err)
		}
		s.log.Info("ledger home made", "home", s.p.ledger, "gateway", signer.DID())
	} else if err != nil {
		return err
	}
	if _, err := os.Stat(s.p.trust); os.IsNotExist(err) {
		t, err := evidence.ExportTrustFromHome(s.p.ledger)
		if err != nil {
			return err
		}
		if err := evidence.WriteTrustFile(s.p.trust, t); err != nil {
			return err
		}
	}
	return nil
}

// gatewayConfig is the demo gateway's configuration.
func (s *system) gatewayConfig() gateway.Config {
	c := gateway.DefaultConfig()
	c.DataDir = s.p.gateway
	c.KeyPath = s.p.gatewayKey
	c.Site = s.o.Site
	c.Name = "demo gateway"
	c.LedgerRPC = fmt.Sprintf("http://%s:%d", host, s.rpc)
	c.MQTT = gateway.MQTTConfig{TCP: net.JoinHostPort(host, strconv.Itoa(s.o.MQTTPort)), WS: net.JoinHostPort(host, strconv.Itoa(s.o.WSPort))}
	c.HTTP.Addr = net.JoinHostPort(host, strconv.Itoa(s.o.HTTPPort))
	return c
}

// fleetConfig is the simulated fleet's configuration; on a first start it
// makes the enrollment tokens the devices need in the gateway's token store.
func (s *system) fleetConfig() (sim.Config, error) {
	o := s.o
	need, err := sim.TokensNeeded(s.p.sim, o.Profile, o.Devices)
	if err != nil {
		return sim.Config{}, err
	}
	var tokens []sim.Token
	if len(need) > 0 {
		store, err := identity.OpenTokenStore(s.p.gateway)
		if err != nil {
			return sim.Config{}, err
		}
		for _, kind := range []string{profile.KindPayroll, profile.KindSurvey, profile.KindEnv} {
			if need[kind] == 0 {
				continue
			}
			toks, _, err := store.Create(identity.TokenRequest{Site: o.Site, Kind: kind, Count: need[kind], TTL: 72 * time.Hour}, time.Now())
			if err != nil {
				return sim.Config{}, err
			}
			for _, t := range toks {
				tokens = append(tokens, sim.Token{Value: t, Kind: kind})
			}
		}
		s.log.Info("enrollment tokens made", "count", len(tokens))
	}
	c := s.simConfig(tokens)
	c.Logger = s.log.With("component", "sim")
	return c, nil
}

// simConfig is the fleet's configuration from the options, with tokens.
func (s *system) simConfig(tokens []sim.Token) sim.Config {
	o := s.o
	c := sim.DefaultConfig()
	c.Broker = "tcp://" + net.JoinHostPort(host, strconv.Itoa(o.MQTTPort))
	c.Devices, c.Profile, c.Rate, c.Site, c.Seed = o.Devices, o.Profile, o.Rate, o.Site, o.Seed
	c.StateDir = s.p.sim
	c.Tokens = tokens
	return c
}

// ErrOptions means an option of the demo is out of bounds (the error names
// it); nothing was made or started. Fix the flag and run again.
var ErrOptions = errors.New("demo: bad option")

// validate checks the fleet's and the gateway's configuration before
// anything is made, so that a bad --profile, --devices, --rate or site
// leaves no ledger or gateway behind.
func (s *system) validate() error {
	c := s.simConfig(nil)
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrOptions, err)
	}
	g := s.gatewayConfig()
	if err := g.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrOptions, err)
	}
	return nil
}

// banner is what the demo prints at start: where to look, and the command
// that verifies one record's proof bundle.
func (s *system) banner() string {
	base := "http://" + net.JoinHostPort(host, strconv.Itoa(s.o.HTTPPort))
	return fmt.Sprintf(`edgeanchor demo: ledger, gateway and %d simulated devices on 127.0.0.1 (state in %s, log in %s)
  metrics:     %s/metrics
  records:     %s/v1/records/1
  verify one:  curl -s %s/v1/records/1/proof > proof.json && bin/edgeanchor verify proof.json --trust %s
  ledger RPC:  http://%s:%d
  ledger metrics: %s
  portal:      %s
Ctrl-C stops everything.
`, s.o.Devices, s.p.dir, s.p.log, base, base, base, s.p.trust, host, s.rpc, s.ledgerMetrics(), s.portalURL())
}

// portalURL is the portal's address, or "off".
func (s *system) portalURL() string {
	if s.o.PortalPort == 0 {
		return "off"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(s.o.PortalPort)) + "/"
}

// startPortal starts the portal (unless its port is 0); the func it
// returns stops it.
func (s *system) startPortal(ctx context.Context) (func(), error) {
	if s.o.PortalPort == 0 {
		return func() {}, nil
	}
	cfg := portal.DefaultConfig()
	cfg.Listen = net.JoinHostPort(host, strconv.Itoa(s.o.PortalPort))
	cfg.LedgerRPC = fmt.Sprintf("http://%s:%d", host, s.rpc)
	cfg.TrustPath = s.p.trust
	cfg.Gateways = []portal.GatewayAPI{{DID: s.signer.DID(), URL: "http://" + net.JoinHostPort(host, strconv.Itoa(s.o.HTTPPort))}}
	srv, err := portal.New(cfg, portal.Deps{Logger: s.log.With("component", "portal")})
	if err != nil {
		return nil, fmt.Errorf("demo: start portal: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		_ = srv.Close()
		return nil, fmt.Errorf("demo: start portal: %w", err)
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(pctx, ln) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			s.log.Warn("portal stop failed", "error", err)
		}
		_ = srv.Close()
	}, nil
}

// Run runs the demo until ctx ends, then stops the fleet, the gateway and
// the ledger, in that order.
func Run(ctx context.Context, o Options) error {
	s, err := prepare(o)
	if err != nil {
		return err
	}
	defer s.closeLog()
	o, log, p := s.o, s.log, s.p

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// 1. ledger. Its metrics are its own, as on a validator: CometBFT
	// serves the default registry on the home's Prometheus listener, so the
	// application's go there too, not onto the gateway's /metrics (reg).
	node, err := ledger.StartNode(context.WithoutCancel(ctx), p.ledger, ledger.NodeOptions{
		Logger: log.With("component", "ledger"), Registerer: prometheus.DefaultRegisterer})
	if err != nil {
		return fmt.Errorf("demo: start ledger: %w", err)
	}
	defer func() {
		if err := node.Stop(); err != nil {
			log.Warn("ledger stop failed", "error", err)
		}
	}()

	// 2. gateway
	gcfg := s.gatewayConfig()
	gwCtx, gwCancel := context.WithCancel(context.WithoutCancel(ctx))
	gwDone, err := startGateway(gwCtx, gcfg, s.signer, log.With("component", "gateway"), reg)
	if err != nil {
		gwCancel()
		return fmt.Errorf("demo: start gateway: %w", err)
	}
	defer func() {
		gwCancel()
		if err := <-gwDone; err != nil {
			log.Warn("gateway stop failed", "error", err)
		}
	}()

	// 3. tokens (first start) and 4. the fleet
	scfg, err := s.fleetConfig()
	if err != nil {
		return err
	}
	fleet, err := sim.Open(scfg)
	if err != nil {
		return err
	}
	fleetCtx, fleetCancel := context.WithCancel(ctx)
	defer fleetCancel()
	var wg sync.WaitGroup
	wg.Add(1)
	var fleetErr error
	go func() { defer wg.Done(); fleetErr = fleet.Run(fleetCtx) }()

	// 5. the regulator's portal, on the ledger, the trust file and the
	// gateway's record API.
	stopPortal, err := s.startPortal(ctx)
	if err != nil {
		fleetCancel()
		wg.Wait()
		return err
	}
	defer stopPortal()

	fmt.Fprint(o.Progress, s.banner())

	progressLoop(ctx, o, reg, node, fleet)
	fleetCancel()
	wg.Wait()
	if o.Live {
		fmt.Fprintln(o.Progress)
	}
	fmt.Fprintln(o.Progress, "edgeanchor demo: stopping (fleet, gateway, ledger)")
	log.Info("demo stopping")
	return fleetErr
}

// progressLoop refreshes the progress line until ctx ends.
func progressLoop(ctx context.Context, o Options, reg prometheus.Gatherer, node *ledger.Node, fleet *sim.Fleet) {
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	var (
		prevAccepted float64
		prevAt       = time.Now()
		lastLine     time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-node.Done():
			fmt.Fprintln(o.Progress, "\nedgeanchor demo: the ledger node stopped; see the log")
			return
		case now := <-t.C:
			st := gatherStatus(reg)
			st.Height = node.App().Height()
			fs := fleet.Stats()
			st.Spooled = fs.Spooled
			if dt := now.Sub(prevAt).Seconds(); dt > 0 {
				st.MsgsPerSec = (st.Accepted - prevAccepted) / dt
			}
			prevAccepted, prevAt = st.Accepted, now
			if o.OnStatus != nil {
				o.OnStatus(st)
			}
			line := fmt.Sprintf("devices online %d | %.1f msgs/s | stored %.0f | refused %.0f | batches anchored %.0f | ledger height %d | spooled %d",
				st.Online, st.MsgsPerSec, st.Accepted, st.Refused, st.Batches, st.Height, st.Spooled)
			switch {
			case o.Live:
				fmt.Fprintf(o.Progress, "\r\033[K%s", line)
			case now.Sub(lastLine) >= o.LineEvery:
				fmt.Fprintln(o.Progress, line)
				lastLine = now
			}
		}
	}
}

// gatherStatus reads the gateway's counters from the registry.
func gatherStatus(g prometheus.Gatherer) Status {
	var st Status
	mfs, err := g.Gather()
	if err != nil {
		return st
	}
	var batches, outbox float64
	for _, mf := range mfs {
		var sum float64
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
		switch mf.GetName() {
		case "edgeanchor_devices_connected":
			st.Online = int(sum)
		case "edgeanchor_messages_accepted_total":
			st.Accepted = sum
		case "edgeanchor_messages_refused_total":
			st.Refused = sum
		case "edgeanchor_batches_total":
			batches = sum
		case "edgeanchor_outbox_depth":
			outbox = sum
		}
	}
	// Batches cut and stored, less those waiting in the outbox: anchored.
	st.Batches = max(0, batches-outbox)
	return st
}

// ledgerMetrics says where the ledger's metrics are served.
func (s *system) ledgerMetrics() string {
	if s.prom == 0 {
		return "off (instrumentation.prometheus in " + filepath.Join(s.p.ledger, "config", "config.toml") + ")"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(s.prom)) + "/metrics"
}

// checkPort fails if host:port cannot be bound now.
func checkPort(host string, port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return l.Close()
}

// portOf extracts the port of a CometBFT listen address ("tcp://h:p").
func portOf(addr string, def int) int {
	if u, err := url.Parse(addr); err == nil && u.Port() != "" {
		if p, err := strconv.Atoi(u.Port()); err == nil {
			return p
		}
	}
	return def
}

func itoa(i int) string { return strconv.Itoa(i) }
