package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	cfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/types"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

// Multi-party genesis (docs/ledger.md, "Forming a consortium"): each
// organisation makes its home on its own machine with InitMember, which
// writes a public member file; a coordinator assembles genesis from the
// member files alone (AssembleGenesis); each member installs it
// (InstallGenesis). No private key leaves the machine it was made on.

// MemberFileName is the public member file InitMember writes in the home.
const MemberFileName = "member.json"

// MemberVersion is the only member file version.
const MemberVersion = 1

// DefaultPower is a validator's voting power when none is given.
const DefaultPower = 10

// MemberFile is an organisation's public description: everything genesis
// needs from it, and nothing secret.
//
//	{"version":1,"org":"…","validator":{"pub_key":"<b64 ed25519>","power":10},
//	 "node_id":"<40 hex>","p2p_address":"host:port",
//	 "committee_key":"<b64 SPKI DER>","regulator_keys":["<b64 SPKI DER>"]}
type MemberFile struct {
	Version       int             `json:"version"`
	Org           string          `json:"org"`
	Validator     MemberValidator `json:"validator"`
	NodeID        string          `json:"node_id"`
	P2PAddress    string          `json:"p2p_address"`
	CommitteeKey  []byte          `json:"committee_key"`
	RegulatorKeys [][]byte        `json:"regulator_keys"`
}

// MemberValidator is the validator part of a member file.
type MemberValidator struct {
	PubKey []byte `json:"pub_key"` // ed25519, 32 bytes
	Power  int64  `json:"power"`
}

// MemberOptions tune InitMember.
type MemberOptions struct {
	Org string // organisation name (required)
	// Ports on 127.0.0.1; zero means the defaults 26656, 26657, 26660.
	P2PPort, RPCPort, PrometheusPort int
	// ListenHost is the address the p2p listener binds (127.0.0.1 when
	// empty); ExternalAddress (host:port) is what other members dial, by
	// default ListenHost:P2PPort.
	ListenHost, ExternalAddress string
	NoPrometheus                bool
	Power                       int64 // DefaultPower when zero
	Regulator                   bool  // also make a regulator key

	// RPCListenHost is the address the RPC listener binds (127.0.0.1 when
	// empty): a member whose node serves gateways or verifiers on other
	// hosts opens it to them (0.0.0.0, behind its firewall).
	RPCListenHost string
}

// ErrNoGenesis means a member home has no genesis yet: install the one the
// coordinator assembled (`edgeanchor ledger genesis install`).
var ErrNoGenesis = errors.New("ledger: the home has no genesis yet")

// InitMember makes an organisation's home in dir: CometBFT config with the
// consortium defaults, a validator key, a node key, the committee key
// (dir/keys/committee.pem) and, for a regulator, dir/keys/regulator.pem,
// and writes the public member file dir/member.json. It writes no genesis.
func InitMember(dir string, opts MemberOptions) (*Home, *MemberFile, error) {
	if err := anchorText("org", opts.Org); err != nil {
		return nil, nil, err
	}
	power := opts.Power
	if power == 0 {
		power = DefaultPower
	}
	if power < 1 || power > anchor.MaxValidatorPower {
		return nil, nil, fmt.Errorf("ledger: power %d (want 1 to %d)", power, anchor.MaxValidatorPower)
	}
	if _, err := os.Stat(filepath.Join(dir, cfg.DefaultConfigDir, cfg.DefaultConfigFileName)); err == nil {
		return nil, nil, fmt.Errorf("%w: %s", ErrHomeExists, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, CommitteeKeyFile)); err == nil {
		return nil, nil, fmt.Errorf("%w: %s exists", ErrHomeExists, filepath.Join(dir, CommitteeKeyFile))
	}
	ps := ports{
		p2p:  orDefault(opts.P2PPort, DefaultP2PPort),
		rpc:  orDefault(opts.RPCPort, DefaultRPCPort),
		prom: orDefault(opts.PrometheusPort, DefaultPrometheusPort),
	}
	host := opts.ListenHost
	if host == "" {
		host = "127.0.0.1"
	}
	ext := opts.ExternalAddress
	if ext == "" {
		ext = net.JoinHostPort(host, strconv.Itoa(ps.p2p))
	}
	if err := checkHostPort(ext); err != nil {
		return nil, nil, fmt.Errorf("ledger: external address: %w", err)
	}
	c := cfg.DefaultConfig()
	c.SetRoot(dir)
	for _, sub := range []string{cfg.DefaultConfigDir, cfg.DefaultDataDir, "keys"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, nil, fmt.Errorf("ledger: %w", err)
		}
	}
	ConsortiumDefaults(c)
	c.Moniker = opts.Org
	c.P2P.ListenAddress = "tcp://" + net.JoinHostPort(host, strconv.Itoa(ps.p2p))
	c.P2P.ExternalAddress = ext
	rpcHost := opts.RPCListenHost
	if rpcHost == "" {
		rpcHost = "127.0.0.1"
	}
	if err := checkHostPort(net.JoinHostPort(rpcHost, strconv.Itoa(ps.rpc))); err != nil || strings.ContainsAny(rpcHost, "/ ") {
		return nil, nil, fmt.Errorf("ledger: RPC listen host %q: want an IP address or a host name", rpcHost)
	}
	c.RPC.ListenAddress = "tcp://" + net.JoinHostPort(rpcHost, strconv.Itoa(ps.rpc))
	c.Instrumentation.PrometheusListenAddr = fmt.Sprintf("127.0.0.1:%d", ps.prom)
	c.Instrumentation.Prometheus = !opts.NoPrometheus
	if err := c.ValidateBasic(); err != nil {
		return nil, nil, fmt.Errorf("ledger: config: %w", err)
	}
	pv := privval.GenFilePV(c.PrivValidatorKeyFile(), c.PrivValidatorStateFile())
	pv.Save()
	nk, err := p2p.LoadOrGenNodeKey(c.NodeKeyFile())
	if err != nil {
		return nil, nil, fmt.Errorf("ledger: node key: %w", err)
	}
	m := &MemberFile{
		Version: MemberVersion, Org: opts.Org,
		Validator:     MemberValidator{PubKey: pv.Key.PubKey.Bytes(), Power: power},
		NodeID:        string(nk.ID()),
		P2PAddress:    ext,
		RegulatorKeys: [][]byte{},
	}
	home := &Home{
		Dir: dir, NodeID: m.NodeID, P2PAddr: ext,
		RPCURL:       fmt.Sprintf("http://127.0.0.1:%d", ps.rpc),
		CommitteeKey: filepath.Join(dir, CommitteeKeyFile),
	}
	if ip := net.ParseIP(rpcHost); ip == nil || !ip.IsUnspecified() {
		home.RPCURL = "http://" + net.JoinHostPort(rpcHost, strconv.Itoa(ps.rpc))
	}
	if !opts.NoPrometheus {
		home.PrometheusURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", ps.prom)
	}
	if m.CommitteeKey, err = writeKeyPair(home.CommitteeKey); err != nil {
		return nil, nil, err
	}
	if opts.Regulator {
		home.RegulatorKey = filepath.Join(dir, RegulatorKeyFile)
		der, err := writeKeyPair(home.RegulatorKey)
		if err != nil {
			return nil, nil, err
		}
		m.RegulatorKeys = append(m.RegulatorKeys, der)
	}
	cfg.WriteConfigFile(filepath.Join(dir, cfg.DefaultConfigDir, cfg.DefaultConfigFileName), c)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, MemberFileName), append(b, '\n'), 0o644); err != nil {
		return nil, nil, fmt.Errorf("ledger: member file: %w", err)
	}
	return home, m, nil
}

// writeKeyPair makes an SM2 key at path (0600) with its public key beside
// it (*.pub.pem) and returns the public key's SPKI DER.
func writeKeyPair(path string) ([]byte, error) {
	k, err := device.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("ledger: key: %w", err)
	}
	if err := device.WritePrivateKeyFile(path, k); err != nil {
		return nil, err
	}
	if err := device.WritePublicKeyFile(strings.TrimSuffix(path, ".pem")+".pub.pem", &k.PublicKey); err != nil {
		return nil, err
	}
	return device.MarshalPublicKeyDER(&k.PublicKey)
}

func anchorText(name, s string) error {
	if s == "" {
		return fmt.Errorf("ledger: %s is required", name)
	}
	if len(s) > anchor.MaxTextLen {
		return fmt.Errorf("ledger: %s longer than %d bytes", name, anchor.MaxTextLen)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("ledger: %s holds control characters", name)
		}
	}
	return nil
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port must be 1 to 65535", s)
	}
	return nil
}

// ReadMemberFile reads and checks a member file: strict JSON, a 32-byte
// ed25519 validator key, a power in range, a 40-hex node ID, a host:port
// address and parseable SM2 keys. Every problem names the file and member.
func ReadMemberFile(path string) (*MemberFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ledger: member file: %w", err)
	}
	var m MemberFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("ledger: member file %s: %w", path, err)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("ledger: member file %s: "+format, append([]any{path}, a...)...)
	}
	switch {
	case m.Version != MemberVersion:
		return nil, bad("version %d (want %d)", m.Version, MemberVersion)
	case anchorText("org", m.Org) != nil:
		return nil, bad("%v", anchorText("org", m.Org))
	case len(m.Validator.PubKey) != ed25519.PubKeySize:
		return nil, bad("validator.pub_key is %d bytes (want a 32-byte ed25519 key)", len(m.Validator.PubKey))
	case m.Validator.Power < 1 || m.Validator.Power > anchor.MaxValidatorPower:
		return nil, bad("validator.power %d (want 1 to %d)", m.Validator.Power, anchor.MaxValidatorPower)
	case len(m.NodeID) != 40 || strings.Trim(m.NodeID, "0123456789abcdef") != "":
		return nil, bad("node_id %q (want 40 lowercase hex digits)", m.NodeID)
	}
	if err := checkHostPort(m.P2PAddress); err != nil {
		return nil, bad("p2p_address: %v", err)
	}
	if _, err := device.ParsePublicKeyDER(m.CommitteeKey); err != nil {
		return nil, bad("committee_key: %v", err)
	}
	for i, k := range m.RegulatorKeys {
		if _, err := device.ParsePublicKeyDER(k); err != nil {
			return nil, bad("regulator_keys[%d]: %v", i, err)
		}
	}
	return &m, nil
}

// Peer is the member's persistent-peer entry, id@host:port.
func (m *MemberFile) Peer() string { return m.NodeID + "@" + m.P2PAddress }

// AssembleGenesis builds genesis from member files only: every member's
// validator (its org as the name), a committee of every member's committee
// key with threshold k, the regulators every member listed, and the
// genesis gateways. It returns the persistent_peers line of all members.
func AssembleGenesis(members []*MemberFile, chainID string, k int, gateways []anchor.GenesisGateway, genesisTime time.Time) (*types.GenesisDoc, string, error) {
	if len(members) == 0 {
		return nil, "", errors.New("ledger: genesis needs at least one member file")
	}
	if chainID == "" {
		return nil, "", errors.New("ledger: genesis needs a chain ID")
	}
	if k < 1 || k > len(members) {
		return nil, "", fmt.Errorf("ledger: committee threshold %d with %d members (want 1 ≤ K ≤ %d)", k, len(members), len(members))
	}
	orgs, vals, nodes := map[string]bool{}, map[string]bool{}, map[string]bool{}
	st := anchor.GenesisState{Committee: anchor.Committee{Threshold: k}, Regulators: [][]byte{}, Gateways: gateways}
	if st.Gateways == nil {
		st.Gateways = []anchor.GenesisGateway{}
	}
	gen := &types.GenesisDoc{
		GenesisTime: genesisTime.UTC().Truncate(time.Second), ChainID: chainID, InitialHeight: 1,
		ConsensusParams: types.DefaultConsensusParams(),
	}
	regSeen := map[string]bool{}
	var peers []string
	for _, m := range members {
		switch {
		case orgs[m.Org]:
			return nil, "", fmt.Errorf("ledger: two member files for org %q", m.Org)
		case vals[string(m.Validator.PubKey)]:
			return nil, "", fmt.Errorf("ledger: org %q reuses another member's validator key", m.Org)
		case nodes[m.NodeID]:
			return nil, "", fmt.Errorf("ledger: org %q reuses another member's node ID", m.Org)
		}
		orgs[m.Org], vals[string(m.Validator.PubKey)], nodes[m.NodeID] = true, true, true
		pub := ed25519.PubKey(m.Validator.PubKey)
		gen.Validators = append(gen.Validators, types.GenesisValidator{Address: pub.Address(), PubKey: pub, Power: m.Validator.Power, Name: m.Org})
		st.Committee.Members = append(st.Committee.Members, m.CommitteeKey)
		for _, r := range m.RegulatorKeys {
			if !regSeen[string(r)] {
				regSeen[string(r)] = true
				st.Regulators = append(st.Regulators, r)
			}
		}
		peers = append(peers, m.Peer())
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, "", err
	}
	if _, err := anchor.ParseGenesisState(raw); err != nil {
		return nil, "", fmt.Errorf("ledger: %w", err)
	}
	gen.AppState = raw
	if err := gen.ValidateAndComplete(); err != nil {
		return nil, "", fmt.Errorf("ledger: genesis: %w", err)
	}
	sort.Strings(peers)
	return gen, strings.Join(peers, ","), nil
}

// GenesisFileHash is the SHA-256 of a genesis file's bytes, lowercase hex:
// members compare it out of band before they start.
func GenesisFileHash(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// InstallGenesis copies the genesis file into home and sets the home's
// persistent peers to peers (id@host:port, comma-separated) without the
// home's own node. It returns the genesis file's hash.
func InstallGenesis(home, genesisPath, peers string) (string, error) {
	conf, err := LoadConfig(home)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(genesisPath)
	if err != nil {
		return "", fmt.Errorf("ledger: genesis: %w", err)
	}
	gen, err := types.GenesisDocFromJSON(b)
	if err != nil {
		return "", fmt.Errorf("ledger: genesis %s: %w", genesisPath, err)
	}
	if _, err := anchor.ParseGenesisState(gen.AppState); err != nil {
		return "", fmt.Errorf("ledger: genesis %s: %w", genesisPath, err)
	}
	nk, err := p2p.LoadNodeKey(conf.NodeKeyFile())
	if err != nil {
		return "", fmt.Errorf("ledger: node key: %w", err)
	}
	var keep []string
	for _, p := range strings.Split(peers, ",") {
		p = strings.TrimSpace(p)
		if p == "" || strings.HasPrefix(p, string(nk.ID())+"@") {
			continue
		}
		if _, err := p2p.NewNetAddressString(p); err != nil {
			return "", fmt.Errorf("ledger: peer %q: %w", p, err)
		}
		keep = append(keep, p)
	}
	if err := os.WriteFile(conf.GenesisFile(), b, 0o644); err != nil {
		return "", fmt.Errorf("ledger: genesis: %w", err)
	}
	conf.P2P.PersistentPeers = strings.Join(keep, ",")
	cfg.WriteConfigFile(filepath.Join(home, cfg.DefaultConfigDir, cfg.DefaultConfigFileName), conf)
	return GenesisFileHash(b), nil
}
