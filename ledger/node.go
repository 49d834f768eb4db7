package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/BurntSushi/toml"
	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/blocksync"
	cfg "github.com/cometbft/cometbft/config"
	cs "github.com/cometbft/cometbft/consensus"
	cmtlog "github.com/cometbft/cometbft/libs/log"
	mempl "github.com/cometbft/cometbft/mempool"
	nm "github.com/cometbft/cometbft/node"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/proxy"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/statesync"
	"github.com/mitchellh/mapstructure"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/ledger/app"
)

// AppDBName is the name of the application database under the home's data
// directory (goleveldb: DIR/data/edgeanchor.db).
const AppDBName = "edgeanchor"

// ErrNoHome means the directory holds no ledger home. Create one with
// `edgeanchor ledger init --home DIR` or `edgeanchor ledger testnet`.
var ErrNoHome = errors.New("ledger: not a ledger home (no config/config.toml)")

// NodeOptions tune StartNode.
type NodeOptions struct {
	// Logger receives the application's logs and CometBFT's: CometBFT's
	// Info and Debug lines at slog Debug, its errors at slog Error.
	Logger *slog.Logger
	// Registerer takes the application metrics (edgeanchor_ledger_…). Use
	// prometheus.DefaultRegisterer to serve them beside CometBFT's own on the
	// node's prometheus listener. Nil: not registered.
	Registerer prometheus.Registerer
}

// Node is a running CometBFT node with the ledger application in-process.
type Node struct {
	comet *nm.Node
	app   *app.App
	db    dbm.DB
	log   *slog.Logger

	extraMu  sync.Mutex
	extraDBs []dbm.DB // opened by CometBFT but not closed by its OnStop

	lock     *os.File    // holds the home's flock (HomeLockFile) while running
	stopping atomic.Bool // CometBFT's errors while stopping are expected noise
	stopOnce sync.Once
	stopErr  error
	done     chan struct{}
}

// LoadConfig reads DIR/config/config.toml the way the cometbft command does
// (defaults for anything the file leaves out) and checks it.
func LoadConfig(home string) (*cfg.Config, error) {
	path := filepath.Join(home, cfg.DefaultConfigDir, cfg.DefaultConfigFileName)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNoHome, home)
	}
	var raw map[string]any
	if _, err := toml.DecodeFile(path, &raw); err != nil {
		return nil, fmt.Errorf("ledger: %s: %w", path, err)
	}
	conf := cfg.DefaultConfig()
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:           conf,
		WeaklyTypedInput: true,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		),
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: config decoder: %w", err)
	}
	if err := dec.Decode(raw); err != nil {
		return nil, fmt.Errorf("ledger: %s: %w", path, err)
	}
	conf.SetRoot(home)
	if err := conf.ValidateBasic(); err != nil {
		return nil, fmt.Errorf("ledger: %s: %w", path, err)
	}
	return conf, nil
}

// StartNode starts the validator whose home is home (made by InitHome or
// Testnet) with the ledger application in-process. The node stops when ctx
// ends or Stop is called.
func StartNode(ctx context.Context, home string, opts NodeOptions) (*Node, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	conf, err := LoadConfig(home)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(conf.GenesisFile()); err != nil {
		return nil, fmt.Errorf("%w: %s (install the assembled genesis with `edgeanchor ledger genesis install --home %s --genesis FILE --peers LIST`)", ErrNoGenesis, conf.GenesisFile(), home)
	}
	lock, err := lockHome(home)
	if err != nil {
		return nil, err
	}
	started := false
	defer func() {
		if !started {
			lock.Close()
		}
	}()
	metrics, err := app.NewMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("ledger: metrics: %w", err)
	}
	db, err := dbm.NewDB(AppDBName, dbm.BackendType(conf.DBBackend), conf.DBDir())
	if err != nil {
		return nil, fmt.Errorf("ledger: open application database: %w", err)
	}
	application, err := app.NewApp(db, logger, metrics)
	if err != nil {
		db.Close()
		return nil, err
	}
	nodeKey, err := p2p.LoadOrGenNodeKey(conf.NodeKeyFile())
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger: node key: %w", err)
	}
	pv, err := loadFilePV(conf)
	if err != nil {
		db.Close()
		return nil, err
	}
	n := &Node{app: application, db: db, log: logger, done: make(chan struct{}), lock: lock}
	comet, err := nm.NewNodeWithContext(ctx, conf, pv, nodeKey,
		proxy.NewLocalClientCreator(application),
		nm.DefaultGenesisDocProviderFunc(conf),
		n.dbProvider,
		metricsProvider(conf.Instrumentation),
		newCometLogger(logger, &n.stopping),
	)
	if err != nil {
		n.closeDBs()
		return nil, fmt.Errorf("ledger: create node: %w", err)
	}
	n.comet = comet
	if err := comet.Start(); err != nil {
		// A failed Start (a port in use, say) leaves CometBFT's services and
		// databases open; OnStop releases them so the home can be started
		// again in this process.
		n.stopping.Store(true)
		comet.OnStop()
		n.closeDBs()
		return nil, fmt.Errorf("ledger: start node: %w", err)
	}
	go func() {
		select {
		case <-ctx.Done():
			_ = n.Stop()
		case <-n.done:
		}
	}()
	logger.Info("ledger node started",
		"home", home, "chain_id", comet.GenesisDoc().ChainID, "node_id", string(nodeKey.ID()),
		"p2p", conf.P2P.ListenAddress, "rpc", conf.RPC.ListenAddress, "persistent_peers", conf.P2P.PersistentPeers,
		"prometheus", conf.Instrumentation.Prometheus && conf.Instrumentation.PrometheusListenAddr != "",
		"prometheus_addr", conf.Instrumentation.PrometheusListenAddr,
		"timeout_commit", conf.Consensus.TimeoutCommit, "timeout_propose", conf.Consensus.TimeoutPropose,
		"create_empty_blocks_interval", conf.Consensus.CreateEmptyBlocksInterval,
		"flush_throttle_timeout", conf.P2P.FlushThrottleTimeout, "height", application.Height())
	started = true
	return n, nil
}

// loadFilePV loads the validator key and state, refusing to generate them:
// a validator whose key silently changed would sign as someone else.
// (privval.LoadFilePV exits the process on an unreadable file, so check
// first.)
func loadFilePV(conf *cfg.Config) (*privval.FilePV, error) {
	for _, f := range []string{conf.PrivValidatorKeyFile(), conf.PrivValidatorStateFile()} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("ledger: validator key: %w", err)
		}
	}
	return privval.LoadFilePV(conf.PrivValidatorKeyFile(), conf.PrivValidatorStateFile()), nil
}

// Stop stops the node and closes the application database. It is safe to
// call more than once.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() {
		defer close(n.done)
		n.stopping.Store(true)
		if n.comet.IsRunning() {
			if err := n.comet.Stop(); err != nil {
				n.stopErr = fmt.Errorf("ledger: stop node: %w", err)
			}
			n.comet.Wait()
		}
		if err := n.closeDBs(); err != nil && n.stopErr == nil {
			n.stopErr = err
		}
		n.lock.Close() // releases the home for the next start
		n.log.Info("ledger node stopped")
	})
	return n.stopErr
}

// dbProvider opens CometBFT's databases and remembers the transaction
// index, which CometBFT v0.38's node does not close on Stop (it would stay
// locked and a restart in the same process would fail).
func (n *Node) dbProvider(c *cfg.DBContext) (dbm.DB, error) {
	db, err := cfg.DefaultDBProvider(c)
	if err == nil && c.ID == "tx_index" {
		n.extraMu.Lock()
		n.extraDBs = append(n.extraDBs, db)
		n.extraMu.Unlock()
	}
	return db, err
}

func (n *Node) closeDBs() error {
	n.extraMu.Lock()
	for _, db := range n.extraDBs {
		_ = db.Close()
	}
	n.extraDBs = nil
	n.extraMu.Unlock()
	if err := n.db.Close(); err != nil {
		return fmt.Errorf("ledger: close application database: %w", err)
	}
	return nil
}

// Done is closed once the node has stopped.
func (n *Node) Done() <-chan struct{} { return n.done }

// App returns the ledger application.
func (n *Node) App() *app.App { return n.app }

// RPCURL returns the node's RPC address as an http URL.
func (n *Node) RPCURL() string {
	return "http://" + strings.TrimPrefix(n.comet.Config().RPC.ListenAddress, "tcp://")
}

// CometBFT's Prometheus metrics register on the default registry, which
// refuses a second registration: keep one set per chain ID and process so a
// node can be stopped and started again in one process.
var (
	cometMetricsMu sync.Mutex
	cometMetrics   = map[string]func() (*cs.Metrics, *p2p.Metrics, *mempl.Metrics, *sm.Metrics, *proxy.Metrics, *blocksync.Metrics, *statesync.Metrics){}
)

func metricsProvider(ic *cfg.InstrumentationConfig) nm.MetricsProvider {
	def := nm.DefaultMetricsProvider(ic)
	if !ic.Prometheus {
		return def
	}
	return func(chainID string) (*cs.Metrics, *p2p.Metrics, *mempl.Metrics, *sm.Metrics, *proxy.Metrics, *blocksync.Metrics, *statesync.Metrics) {
		cometMetricsMu.Lock()
		defer cometMetricsMu.Unlock()
		if f, ok := cometMetrics[chainID]; ok {
			return f()
		}
		a, b, c, d, e, f, g := def(chainID)
		cometMetrics[chainID] = func() (*cs.Metrics, *p2p.Metrics, *mempl.Metrics, *sm.Metrics, *proxy.Metrics, *blocksync.Metrics, *statesync.Metrics) {
			return a, b, c, d, e, f, g
		}
		return a, b, c, d, e, f, g
	}
}

// cometLogger adapts CometBFT's logger to slog: Debug at Debug-4, Info at
// Debug (so a default Info handler shows only CometBFT's errors), Error at
// Error, except while the node stops, when closed listeners and connections
// are expected and logged at Debug.
type cometLogger struct {
	l        *slog.Logger
	stopping *atomic.Bool
}

func newCometLogger(l *slog.Logger, stopping *atomic.Bool) cmtlog.Logger {
	return cometLogger{l: l.With("component", "cometbft"), stopping: stopping}
}

func (c cometLogger) Debug(msg string, kv ...any) {
	c.l.Log(context.Background(), slog.LevelDebug-4, msg, kv...)
}
func (c cometLogger) Info(msg string, kv ...any) {
	c.l.Log(context.Background(), slog.LevelDebug, msg, kv...)
}
func (c cometLogger) Error(msg string, kv ...any) {
	level := slog.LevelError
	if c.stopping.Load() {
		level = slog.LevelDebug
	}
	c.l.Log(context.Background(), level, msg, kv...)
}
func (c cometLogger) With(kv ...any) cmtlog.Logger {
	return cometLogger{l: c.l.With(kv...), stopping: c.stopping}
}
