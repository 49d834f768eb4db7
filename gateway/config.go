package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/gateway/batch"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// ErrConfig means the gateway configuration is invalid; the wrapped message
// names the field and the bound. Fix the file or the flag and start again.
var ErrConfig = errors.New("gateway: invalid config")

// Config is the gateway's configuration: one YAML file, overridable by flags.
// Durations are Go durations ("120s", "1s").
type Config struct {
	// DataDir holds the Badger record store ({data_dir}/records) and the
	// enrollment tokens.
	DataDir string `yaml:"data_dir"`
	// KeyPath is the gateway's SM2 private key (PKCS#8 PEM, mode 0600).
	KeyPath string `yaml:"key_path"`
	// Site is the site this gateway serves; devices of other sites are refused.
	Site string `yaml:"site"`
	// Name is a human name for the gateway (informational).
	Name string `yaml:"name"`
	// LedgerRPC is the CometBFT RPC URL of a consortium validator.
	LedgerRPC string `yaml:"ledger_rpc"`

	MQTT MQTTConfig `yaml:"mqtt"`
	HTTP HTTPConfig `yaml:"http"`

	// Limits protect the gateway from floods and oversized input.
	Limits LimitsConfig `yaml:"limits"`

	// CredentialWindow bounds |now - unix| of a connect credential and how
	// long a nonce is remembered.
	CredentialWindow time.Duration `yaml:"credential_window"`

	// FutureTolerance: a record whose envelope timestamp is more than this
	// ahead of the gateway's clock is refused as future_timestamp. Old
	// timestamps are accepted (readings spooled while offline).
	FutureTolerance time.Duration `yaml:"future_tolerance"`

	// Batch tells the batcher when to cut a batch: after BatchInterval or
	// BatchSize records, whichever comes first.
	BatchInterval time.Duration `yaml:"batch_interval"`
	BatchSize     int           `yaml:"batch_size"`

	// Store tunes Badger for a small box.
	Store StoreConfig `yaml:"store"`

	// MemoryLimitMB is the Go runtime's soft memory limit for the gateway
	// process (debug.SetMemoryLimit), applied by Run unless GOMEMLIMIT is
	// set; 0 leaves the runtime alone. The GC works harder near it instead
	// of letting the heap double.
	MemoryLimitMB int `yaml:"memory_limit_mb"`
	// GCPercent is the Go GC's target heap growth (debug.SetGCPercent),
	// applied by Run unless GOGC is set; 0 leaves the runtime's 100. Under
	// load a verified message allocates a few KiB, so collecting half as
	// often saves a few percent of CPU; the memory limit still bounds the
	// heap.
	GCPercent int `yaml:"gc_percent"`

	// Accounts are site applications that read verified records.
	Accounts []AccountConfig `yaml:"accounts"`
}

// MQTTConfig lists the broker's listeners. An empty address turns a
// listener off; TLS is on only when both certificate files are given.
type MQTTConfig struct {
	TCP     string `yaml:"tcp"`
	WS      string `yaml:"ws"`
	TLS     string `yaml:"tls"`
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// ConnectTimeout: a connection that has not sent its CONNECT (TLS
	// handshake included) this long after it was accepted is closed
	// (0: broker.DefaultConnectTimeout).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// FDHeadroom is how many file descriptors below RLIMIT_NOFILE are kept
	// for Badger's files, HTTP and the ledger client: the connection limit
	// is capped at RLIMIT_NOFILE minus this (and a margin of 64)
	// (0: broker.DefaultFDHeadroom).
	FDHeadroom int `yaml:"fd_headroom"`
}

// HTTPConfig is the HTTP API (/healthz, /readyz, /metrics, /v1/...).
type HTTPConfig struct {
	Addr string `yaml:"addr"`
	// AdminTokenFile holds the bearer token of the admin API (mode 0600).
	AdminTokenFile string `yaml:"admin_token_file"`
	// MaxPage bounds the records one /v1/devices/{did}/records answer holds.
	MaxPage int `yaml:"max_page"`
}

// LimitsConfig bounds what one device or the whole broker may do.
type LimitsConfig struct {
	// MaxPayload is the largest publish payload accepted (bytes).
	MaxPayload int `yaml:"max_payload"`
	// DeviceRate is the sustained messages per second one device may
	// publish (token bucket of DeviceBurst); 0 turns the limit off.
	DeviceRate  float64 `yaml:"device_rate"`
	DeviceBurst int     `yaml:"device_burst"`
	// MaxConnections bounds open MQTT connections (devices and
	// applications), those still waiting to send CONNECT included.
	MaxConnections int `yaml:"max_connections"`
	// MaxInFlight bounds publishes inside the ingest pipeline at once.
	MaxInFlight int `yaml:"max_inflight"`
	// SubscriberInflight bounds the unacknowledged messages queued for one
	// subscriber (a site application); past it republished records to that
	// subscriber are dropped and counted (edgeanchor_republish_dropped_total).
	SubscriberInflight int `yaml:"subscriber_inflight"`
	// ClientWriteQueue bounds the messages waiting to be written to one
	// client's connection (receipts to a device, records to a site
	// application). mochi allocates it for every client up front, 8 bytes a
	// slot; past it messages to that client are dropped and counted.
	ClientWriteQueue int `yaml:"client_write_queue"`
	// V3RefusalsBeforeDisconnect: an MQTT 3.1.1 client, which cannot be told
	// why a publish was refused, is disconnected at this many refusals.
	V3RefusalsBeforeDisconnect int `yaml:"v3_refusals_before_disconnect"`
	// Connect*: token buckets on new MQTT connections, per source address
	// (ConnectSource*) and in all (Connect*); AuthFailure*: the same on
	// CONNECTs refused by authentication. A source is checked first, so it
	// cannot spend more than its own share of the global budget. Rate 0
	// turns a limit off.
	ConnectSourceRate      float64 `yaml:"connect_source_rate"`
	ConnectSourceBurst     int     `yaml:"connect_source_burst"`
	ConnectRate            float64 `yaml:"connect_rate"`
	ConnectBurst           int     `yaml:"connect_burst"`
	AuthFailureSourceRate  float64 `yaml:"auth_failure_source_rate"`
	AuthFailureSourceBurst int     `yaml:"auth_failure_source_burst"`
	AuthFailureRate        float64 `yaml:"auth_failure_rate"`
	AuthFailureBurst       int     `yaml:"auth_failure_burst"`
}

// StoreConfig is the store's section (store.* keys), defined with the
// record store in package gateway/store.
type StoreConfig = store.Config

// AccountConfig is a site application account: read-only access to the
// topic patterns listed (which must lie under ea/v1/site/). PasswordHash is
// a bcrypt hash (`edgeanchor gateway passwd`, or `htpasswd -nbB u p`).
type AccountConfig struct {
	Username     string   `yaml:"username"`
	PasswordHash string   `yaml:"password_hash"`
	Topics       []string `yaml:"topics"`
}

// DefaultConfig returns the configuration used when the file is silent.
func DefaultConfig() Config {
	return Config{
		DataDir:   "./var/gateway",
		KeyPath:   "./var/gateway/gateway.key",
		Site:      "site-a",
		LedgerRPC: "http://127.0.0.1:26657",
		MQTT: MQTTConfig{
			TCP: "127.0.0.1:1883",
			WS:  "127.0.0.1:8083",
			TLS: "127.0.0.1:8883",

			ConnectTimeout: broker.DefaultConnectTimeout,
			FDHeadroom:     broker.DefaultFDHeadroom,
		},
		HTTP: HTTPConfig{Addr: "127.0.0.1:8480", MaxPage: 500},
		Limits: LimitsConfig{
			MaxPayload:                 16 << 10,
			DeviceRate:                 100,
			DeviceBurst:                200,
			MaxConnections:             5000,
			MaxInFlight:                4096,
			V3RefusalsBeforeDisconnect: 1,
			SubscriberInflight:         8192,
			ClientWriteQueue:           256,

			ConnectSourceRate:      100,
			ConnectSourceBurst:     1000,
			ConnectRate:            1000,
			ConnectBurst:           5000,
			AuthFailureSourceRate:  5,
			AuthFailureSourceBurst: 50,
			AuthFailureRate:        100,
			AuthFailureBurst:       500,
		},
		CredentialWindow: 120 * time.Second,
		FutureTolerance:  DefaultFutureTolerance,
		BatchInterval:    batch.DefaultInterval,
		BatchSize:        batch.DefaultMaxRecords, // issue 6: 10,000
		MemoryLimitMB:    160,
		GCPercent:        200,
		Store:            store.DefaultConfig(),
	}
}

// LoadConfig reads a YAML file over DefaultConfig. Unknown keys are errors.
// It does not validate: apply flag overrides first, then call Validate.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	f, err := os.Open(path)
	if err != nil {
		return cfg, fmt.Errorf("gateway: read config: %w", err)
	}
	defer f.Close()
	// The file is read as a node tree first, so that an unknown key or a
	// value of the wrong type is named by its key path and line rather
	// than by the decoder's Go type names.
	var doc yaml.Node
	if err := yaml.NewDecoder(f).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return cfg, nil
		}
		return cfg, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	if err := checkConfigNode(&doc, reflect.TypeOf(cfg), ""); err != nil {
		return cfg, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	if err := doc.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	return cfg, nil
}

var configSitePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Validate checks every field and names the first bad one and its bound.
func (c *Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	switch {
	case c.DataDir == "":
		return bad("data_dir must be set")
	case c.KeyPath == "":
		return bad("key_path must be set")
	case !configSitePattern.MatchString(c.Site):
		return bad("site (%q) must match %s", c.Site, configSitePattern)
	case !validLedgerRPC(c.LedgerRPC):
		return bad("ledger_rpc (%q) must be a URL http://host:port or https://host:port", c.LedgerRPC)
	case c.MQTT.TCP == "" && c.MQTT.WS == "" && (c.MQTT.TLSCert == "" || c.MQTT.TLS == ""):
		return bad("mqtt: at least one of tcp, ws or tls (with tls_cert and tls_key) must be set")
	case (c.MQTT.TLSCert == "") != (c.MQTT.TLSKey == ""):
		return bad("mqtt.tls_cert and mqtt.tls_key must be given together")
	case c.HTTP.Addr == "":
		return bad("http.addr must be set")
	case c.HTTP.MaxPage < 1 || c.HTTP.MaxPage > 10_000:
		return bad("http.max_page (%d) must be within [1, 10000]", c.HTTP.MaxPage)
	case c.Limits.MaxPayload < 256 || c.Limits.MaxPayload > 1<<20:
		return bad("limits.max_payload (%d) must be within [256, 1048576] bytes", c.Limits.MaxPayload)
	case c.Limits.DeviceRate < 0:
		return bad("limits.device_rate (%g) cannot be negative", c.Limits.DeviceRate)
	case c.Limits.DeviceRate > 0 && c.Limits.DeviceBurst < 1:
		return bad("limits.device_burst (%d) must be at least 1 when device_rate is set", c.Limits.DeviceBurst)
	case c.Limits.MaxConnections < 1:
		return bad("limits.max_connections (%d) must be at least 1", c.Limits.MaxConnections)
	case c.Limits.MaxInFlight < 1 || c.Limits.MaxInFlight > 1<<20:
		return bad("limits.max_inflight (%d) must be within [1, 1048576]", c.Limits.MaxInFlight)
	case c.Limits.SubscriberInflight < 1 || c.Limits.SubscriberInflight > 65535:
		return bad("limits.subscriber_inflight (%d) must be within [1, 65535]", c.Limits.SubscriberInflight)
	case c.Limits.ClientWriteQueue < 16 || c.Limits.ClientWriteQueue > 65536:
		return bad("limits.client_write_queue (%d) must be within [16, 65536]", c.Limits.ClientWriteQueue)
	case c.Limits.V3RefusalsBeforeDisconnect < 1:
		return bad("limits.v3_refusals_before_disconnect (%d) must be at least 1", c.Limits.V3RefusalsBeforeDisconnect)
	case c.MQTT.ConnectTimeout != 0 && (c.MQTT.ConnectTimeout < time.Second || c.MQTT.ConnectTimeout > 5*time.Minute):
		return bad("mqtt.connect_timeout (%s) must be 0 (the default, 5s) or within [1s, 5m]", c.MQTT.ConnectTimeout)
	case c.MQTT.FDHeadroom != 0 && (c.MQTT.FDHeadroom < 64 || c.MQTT.FDHeadroom > 1<<20):
		return bad("mqtt.fd_headroom (%d) must be 0 (the default, 512) or within [64, 1048576]", c.MQTT.FDHeadroom)
	case c.FutureTolerance < time.Second || c.FutureTolerance > 24*time.Hour:
		return bad("future_tolerance (%s) must be within [1s, 24h]", c.FutureTolerance)
	case c.CredentialWindow < 5*time.Second || c.CredentialWindow > time.Hour:
		return bad("credential_window (%s) must be within [5s, 1h]", c.CredentialWindow)
	case c.BatchInterval < 10*time.Millisecond || c.BatchInterval > time.Hour:
		return bad("batch_interval (%s) must be within [10ms, 1h]", c.BatchInterval)
	case c.BatchSize < 1 || c.BatchSize > 1_000_000:
		return bad("batch_size (%d) must be within [1, 1000000]", c.BatchSize)
	case c.MemoryLimitMB != 0 && (c.MemoryLimitMB < 64 || c.MemoryLimitMB > 1<<20):
		return bad("memory_limit_mb (%d) must be 0 or within [64, 1048576]", c.MemoryLimitMB)
	case c.GCPercent != 0 && (c.GCPercent < 25 || c.GCPercent > 10_000):
		return bad("gc_percent (%d) must be 0 or within [25, 10000]", c.GCPercent)
	case c.Store.MemTableMB < 4 || c.Store.MemTableMB > 256:
		return bad("store.memtable_mb (%d) must be within [4, 256]", c.Store.MemTableMB)
	case c.Store.BlockCacheMB < 0 || c.Store.BlockCacheMB > 4096:
		return bad("store.block_cache_mb (%d) must be within [0, 4096]", c.Store.BlockCacheMB)
	case c.Store.IndexCacheMB < 0 || c.Store.IndexCacheMB > 4096:
		return bad("store.index_cache_mb (%d) must be within [0, 4096]", c.Store.IndexCacheMB)
	case c.Store.ValueLogFileMB < 8 || c.Store.ValueLogFileMB > 2047:
		return bad("store.value_log_file_mb (%d) must be within [8, 2047]", c.Store.ValueLogFileMB)
	case c.Store.MaxGroupRecords < 1 || c.Store.MaxGroupRecords > 65_536:
		return bad("store.max_group_records (%d) must be within [1, 65536]", c.Store.MaxGroupRecords)
	case c.Store.GroupLinger < 0 || c.Store.GroupLinger > 100*time.Millisecond:
		return bad("store.group_linger (%s) must be within [0, 100ms]", c.Store.GroupLinger)
	case c.Store.MinFreeMB != 0 && (c.Store.MinFreeMB < c.Store.ValueLogFileMB+2*c.Store.MemTableMB || c.Store.MinFreeMB > 1<<24):
		return bad("store.min_free_mb (%d) must be 0 (off) or within [value_log_file_mb + 2 × memtable_mb = %d, 16777216]",
			c.Store.MinFreeMB, c.Store.ValueLogFileMB+2*c.Store.MemTableMB)
	case c.Store.MaxOpenGaps < 1 || c.Store.MaxOpenGaps > 1024:
		return bad("store.max_open_gaps (%d) must be within [1, 1024]", c.Store.MaxOpenGaps)
	}
	if err := c.Limits.validateConnectLimits(); err != nil {
		return bad("%v", err)
	}
	seen := map[string]bool{}
	for i, a := range c.Accounts {
		if a.Username == "" || strings.HasPrefix(a.Username, "did:") {
			return bad("accounts[%d].username (%q) must be set and must not start with did:", i, a.Username)
		}
		if seen[a.Username] {
			return bad("accounts[%d].username (%q) is listed twice", i, a.Username)
		}
		seen[a.Username] = true
		if !broker.IsPasswordHash(a.PasswordHash) {
			return bad("accounts[%d].password_hash must be a bcrypt hash ($2a$/$2b$/$2y$)", i)
		}
		if len(a.Topics) == 0 {
			return bad("accounts[%d].topics must list at least one pattern", i)
		}
		for j, p := range a.Topics {
			if err := broker.ValidateAccountPattern(p); err != nil {
				return bad("accounts[%d].topics[%d] (%q): %v", i, j, p, err)
			}
		}
	}
	return nil
}

// validLedgerRPC reports whether u is an http or https URL with a host and
// nothing after the path.
func validLedgerRPC(u string) bool {
	p, err := url.Parse(u)
	return err == nil && (p.Scheme == "http" || p.Scheme == "https") && p.Host != "" &&
		p.RawQuery == "" && p.Fragment == "" && p.User == nil
}

// Redacted returns the effective configuration as YAML with secrets
// (password hashes) replaced, for printing at start.
func (c Config) Redacted() string {
	cp := c
	cp.Accounts = make([]AccountConfig, len(c.Accounts))
	for i, a := range c.Accounts {
		a.PasswordHash = "<redacted>"
		a.Topics = append([]string(nil), a.Topics...)
		cp.Accounts[i] = a
	}
	out, err := yaml.Marshal(cp)
	if err != nil {
		return fmt.Sprintf("<config: %v>", err)
	}
	return string(out)
}
