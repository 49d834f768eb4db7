package ledger

import (
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	cfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/types"
	"github.com/emmansun/gmsm/sm2"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

// Default ports (docs/internals.md, "Ports").
const (
	DefaultP2PPort        = 26656
	DefaultRPCPort        = 26657
	DefaultPrometheusPort = 26660
	DefaultChainID        = "edgeanchor-dev"
)

// Key files of a home (or of a testnet's output directory): the
// organisation's committee key and its regulator key, SM2 PKCS#8 PEM, mode
// 0600. In a home made by InitHome or Testnet the committee key is the whole
// committee (threshold 1): its proposals take effect alone.
const (
	CommitteeKeyFile = "keys/committee.pem"
	RegulatorKeyFile = "keys/regulator.pem"
)

// ErrHomeExists means the directory already holds a ledger home; InitHome
// never overwrites keys. Use another directory or remove it first.
var ErrHomeExists = errors.New("ledger: home already initialised")

// HomeOptions tune InitHome.
type HomeOptions struct {
	ChainID string // DefaultChainID when empty
	Moniker string // "validator0" when empty
	// Ports on 127.0.0.1; zero means the defaults 26656, 26657, 26660.
	P2PPort, RPCPort, PrometheusPort int
	// NoPrometheus turns CometBFT's prometheus listener off.
	NoPrometheus bool
	// Gateways are consortium members from the first block.
	Gateways []anchor.GenesisGateway
}

// Home describes a generated validator home.
type Home struct {
	Dir           string
	NodeID        string
	P2PAddr       string // host:port
	RPCURL        string // http://host:port
	PrometheusURL string // http://host:port/metrics, "" when off
	CommitteeKey  string // path of the committee member's private key
	RegulatorKey  string // path of the regulator private key
}

// GenesisGatewayFromKey is the genesis entry of a gateway with key pub.
func GenesisGatewayFromKey(pub *ecdsa.PublicKey, site, name string) (anchor.GenesisGateway, error) {
	der, err := device.MarshalPublicKeyDER(pub)
	if err != nil {
		return anchor.GenesisGateway{}, err
	}
	return anchor.GenesisGateway{DID: device.DIDFromPublicKey(pub), Pub: der, Site: site, Name: name}, nil
}

// InitHome makes a single-validator ledger home in dir: CometBFT config with
// the consortium defaults, a validator key, a node key, dev committee and
// regulator keys under dir/keys/, and a genesis naming them (and opts'
// gateways) in its app_state.
func InitHome(dir string, opts HomeOptions) (*Home, error) {
	homes, err := makeHomes([]string{dir}, dir, opts, []ports{{
		p2p:  orDefault(opts.P2PPort, DefaultP2PPort),
		rpc:  orDefault(opts.RPCPort, DefaultRPCPort),
		prom: orDefault(opts.PrometheusPort, DefaultPrometheusPort),
	}})
	if err != nil {
		return nil, err
	}
	return homes[0], nil
}

// Testnet makes n validator homes outDir/node0 … outDir/node{n-1} on
// 127.0.0.1 sharing one genesis and one set of committee and regulator keys
// (outDir/keys/). Node k listens on p2p basePort+10k, rpc basePort+10k+1 and
// prometheus basePort+10k+2, and dials the others as persistent peers.
func Testnet(outDir string, n, basePort int, opts HomeOptions) ([]*Home, error) {
	if n < 1 || n > 64 {
		return nil, fmt.Errorf("ledger: testnet of %d validators (want 1 to 64)", n)
	}
	if basePort < 1024 || basePort+10*n > 65535 {
		return nil, fmt.Errorf("ledger: base port %d leaves no room for %d validators (want 1024 ≤ P, P+10N ≤ 65535)", basePort, n)
	}
	dirs := make([]string, n)
	ps := make([]ports, n)
	for k := range n {
		dirs[k] = filepath.Join(outDir, fmt.Sprintf("node%d", k))
		ps[k] = ports{p2p: basePort + 10*k, rpc: basePort + 10*k + 1, prom: basePort + 10*k + 2}
	}
	return makeHomes(dirs, outDir, opts, ps)
}

type ports struct{ p2p, rpc, prom int }

func orDefault(v, d int) int {
	if v == 0 {
		return d
	}
	return v
}

// ConsortiumDefaults sets the CometBFT settings docs/ledger.md explains.
func ConsortiumDefaults(c *cfg.Config) {
	c.Consensus.TimeoutPropose = time.Second
	c.Consensus.TimeoutCommit = 300 * time.Millisecond
	c.Consensus.CreateEmptyBlocks = true
	c.Consensus.CreateEmptyBlocksInterval = time.Second
	c.Consensus.PeerGossipSleepDuration = 10 * time.Millisecond
	c.P2P.FlushThrottleTimeout = 10 * time.Millisecond
	c.P2P.AddrBookStrict = false
	c.P2P.AllowDuplicateIP = true
	c.P2P.PexReactor = false // members are known: persistent_peers, no address gossip
	c.TxIndex.Indexer = "kv"
	c.Instrumentation.Prometheus = true
	c.Mempool.Recheck = true // CheckTx's view is rebuilt by rechecks after each block
	c.Mempool.Size = 10000
	c.Mempool.CacheSize = 20000
	c.Mempool.MaxTxBytes = 64 << 10
	c.RPC.MaxBodyBytes = 1 << 20
	c.RPC.MaxSubscriptionClients = 200
	c.RPC.MaxSubscriptionsPerClient = 20
	c.RPC.TimeoutBroadcastTxCommit = 10 * time.Second
	c.Storage.DiscardABCIResponses = false // block_results proves a tx's result
}

func makeHomes(dirs []string, keyDir string, opts HomeOptions, ps []ports) ([]*Home, error) {
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, cfg.DefaultConfigDir, cfg.DefaultConfigFileName)); err == nil {
			return nil, fmt.Errorf("%w: %s", ErrHomeExists, d)
		}
	}
	if _, err := os.Stat(filepath.Join(keyDir, CommitteeKeyFile)); err == nil {
		return nil, fmt.Errorf("%w: %s exists", ErrHomeExists, filepath.Join(keyDir, CommitteeKeyFile))
	}
	chainID := opts.ChainID
	if chainID == "" {
		chainID = DefaultChainID
	}
	appState, adminPath, regPath, err := writeDevKeys(keyDir, opts.Gateways)
	if err != nil {
		return nil, err
	}
	homes := make([]*Home, len(dirs))
	confs := make([]*cfg.Config, len(dirs))
	gen := &types.GenesisDoc{
		GenesisTime:     time.Now().UTC().Truncate(time.Second),
		ChainID:         chainID,
		InitialHeight:   1,
		ConsensusParams: types.DefaultConsensusParams(),
		AppState:        appState,
	}
	for k, dir := range dirs {
		c := cfg.DefaultConfig()
		c.SetRoot(dir)
		for _, sub := range []string{cfg.DefaultConfigDir, cfg.DefaultDataDir} {
			if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
				return nil, fmt.Errorf("ledger: %w", err)
			}
		}
		ConsortiumDefaults(c)
		c.Moniker = opts.Moniker
		if c.Moniker == "" || len(dirs) > 1 {
			c.Moniker = fmt.Sprintf("validator%d", k)
		}
		c.P2P.ListenAddress = fmt.Sprintf("tcp://127.0.0.1:%d", ps[k].p2p)
		c.RPC.ListenAddress = fmt.Sprintf("tcp://127.0.0.1:%d", ps[k].rpc)
		c.Instrumentation.PrometheusListenAddr = fmt.Sprintf("127.0.0.1:%d", ps[k].prom)
		c.Instrumentation.Prometheus = !opts.NoPrometheus
		pv := privval.GenFilePV(c.PrivValidatorKeyFile(), c.PrivValidatorStateFile())
		pv.Save()
		nk, err := p2p.LoadOrGenNodeKey(c.NodeKeyFile())
		if err != nil {
			return nil, fmt.Errorf("ledger: node key: %w", err)
		}
		pub, err := pv.GetPubKey()
		if err != nil {
			return nil, fmt.Errorf("ledger: validator key: %w", err)
		}
		gen.Validators = append(gen.Validators, types.GenesisValidator{
			Address: pub.Address(), PubKey: pub, Power: 10, Name: c.Moniker,
		})
		confs[k] = c
		h := &Home{
			Dir: dir, NodeID: string(nk.ID()),
			P2PAddr:      fmt.Sprintf("127.0.0.1:%d", ps[k].p2p),
			RPCURL:       fmt.Sprintf("http://127.0.0.1:%d", ps[k].rpc),
			CommitteeKey: adminPath,
			RegulatorKey: regPath,
		}
		if !opts.NoPrometheus {
			h.PrometheusURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", ps[k].prom)
		}
		homes[k] = h
	}
	if err := gen.ValidateAndComplete(); err != nil {
		return nil, fmt.Errorf("ledger: genesis: %w", err)
	}
	for k, c := range confs {
		var peers []string
		for j, h := range homes {
			if j != k {
				peers = append(peers, h.NodeID+"@"+h.P2PAddr)
			}
		}
		c.P2P.PersistentPeers = strings.Join(peers, ",")
		if err := c.ValidateBasic(); err != nil {
			return nil, fmt.Errorf("ledger: config: %w", err)
		}
		cfg.WriteConfigFile(filepath.Join(c.RootDir, cfg.DefaultConfigDir, cfg.DefaultConfigFileName), c)
		if err := gen.SaveAs(c.GenesisFile()); err != nil {
			return nil, fmt.Errorf("ledger: genesis: %w", err)
		}
	}
	return homes, nil
}

// writeDevKeys makes the committee and regulator keys under dir/keys and returns
// the genesis app_state naming them. Nothing is written if the gateways are
// invalid.
func writeDevKeys(dir string, gateways []anchor.GenesisGateway) (json.RawMessage, string, string, error) {
	var ders [2][]byte
	var keys [2]*sm2.PrivateKey
	for i := range keys {
		k, err := device.GenerateKey()
		if err != nil {
			return nil, "", "", fmt.Errorf("ledger: key: %w", err)
		}
		keys[i] = k
		if ders[i], err = device.MarshalPublicKeyDER(&k.PublicKey); err != nil {
			return nil, "", "", err
		}
	}
	if gateways == nil {
		gateways = []anchor.GenesisGateway{}
	}
	st := anchor.GenesisState{Committee: anchor.Committee{Members: [][]byte{ders[0]}, Threshold: 1}, Regulators: [][]byte{ders[1]}, Gateways: gateways}
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, "", "", fmt.Errorf("ledger: genesis app_state: %w", err)
	}
	if _, err := anchor.ParseGenesisState(raw); err != nil {
		return nil, "", "", err
	}
	paths := [2]string{filepath.Join(dir, CommitteeKeyFile), filepath.Join(dir, RegulatorKeyFile)}
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
		return nil, "", "", fmt.Errorf("ledger: %w", err)
	}
	for i, p := range paths {
		if err := device.WritePrivateKeyFile(p, keys[i]); err != nil {
			return nil, "", "", err
		}
		if err := device.WritePublicKeyFile(strings.TrimSuffix(p, ".pem")+".pub.pem", &keys[i].PublicKey); err != nil {
			return nil, "", "", err
		}
	}
	return raw, paths[0], paths[1], nil
}
