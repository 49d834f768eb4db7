package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/cmd/edgeanchor/internal/ledgercmd"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway"
)

func init() { register(newGatewayCmd) }

// gatewayFlags are the command's own flags; the configuration's scalar keys
// have theirs in gatewayConfigFlags, bound into cfg.
type gatewayFlags struct {
	config, logLevel, logFormat string
	// cfg holds the values of the config-key flags (DefaultConfig until a
	// flag is set); only the flags the user set are applied over the file.
	cfg *gateway.Config
}

// gatewayConfigFlag names the flag of one scalar configuration key.
type gatewayConfigFlag struct{ key, flag, usage string }

// gatewayConfigFlags gives every scalar key of gateway.Config a flag that wins
// over the file (docs/operations.md); the flag's type and default come from
// the key's field in gateway.DefaultConfig. A new key gets its row here;
// TestGatewayFlagsCoverConfig fails for a key without one.
var gatewayConfigFlags = []gatewayConfigFlag{
	{"data_dir", "data-dir", "data directory (record store, tokens)"},
	{"key_path", "key", "gateway SM2 private key (PEM, 0600)"},
	{"site", "site", "site this gateway serves"},
	{"name", "name", "gateway name (informational)"},
	{"ledger_rpc", "ledger-rpc", "CometBFT RPC URL of a consortium validator"},
	{"mqtt.tcp", "mqtt-tcp", "MQTT TCP listen address (empty: off)"},
	{"mqtt.ws", "mqtt-ws", "MQTT over WebSocket listen address (empty: off)"},
	{"mqtt.tls", "mqtt-tls", "MQTT TLS listen address (on only with --tls-cert and --tls-key)"},
	{"mqtt.tls_cert", "tls-cert", "TLS certificate (PEM)"},
	{"mqtt.tls_key", "tls-key", "TLS private key (PEM)"},
	{"http.addr", "http", "HTTP API and /metrics listen address"},
	{"http.admin_token_file", "admin-token-file", "file holding the admin API bearer token"},
	{"http.max_page", "http-max-page", "most records in one /v1/devices/{did}/records answer"},
	{"limits.max_payload", "max-payload", "largest accepted publish payload, bytes"},
	{"limits.device_rate", "device-rate", "messages per second one device may publish (0: unlimited)"},
	{"limits.device_burst", "device-burst", "burst of the per-device rate limit"},
	{"limits.max_connections", "max-connections", "most MQTT clients connected at once"},
	{"limits.max_inflight", "max-inflight", "most publishes inside the ingest pipeline at once"},
	{"limits.subscriber_inflight", "subscriber-inflight", "unacknowledged messages queued for one subscriber (site application)"},
	{"limits.client_write_queue", "client-write-queue", "messages waiting to be written to one client before further ones are dropped"},
	{"limits.v3_refusals_before_disconnect", "v3-refusals", "refused publishes before an MQTT 3.1.1 client is disconnected"},
	{"credential_window", "credential-window", "allowed clock skew of a connect credential, and nonce memory"},
	{"batch_interval", "batch-interval", "cut a batch at least this often"},
	{"batch_size", "batch-size", "or when it has this many records"},
	{"store.memtable_mb", "store-memtable-mb", "Badger memtable size, MB"},
	{"store.block_cache_mb", "store-block-cache-mb", "Badger block cache, MB"},
	{"store.index_cache_mb", "store-index-cache-mb", "Badger index cache, MB"},
	{"store.value_log_file_mb", "store-value-log-file-mb", "Badger value log file size, MB"},
	{"store.max_group_records", "store-max-group-records", "records per group-commit write"},
	{"store.group_linger", "store-group-linger", "wait up to this long for more records before a group commit"},
	{"memory_limit_mb", "memory-limit-mb", "Go runtime soft memory limit, MB (0: none; GOMEMLIMIT wins)"},
	{"gc_percent", "gc-percent", "Go GC target heap growth (0: the runtime's 100; GOGC wins)"},
	{"mqtt.connect_timeout", "mqtt-connect-timeout", "close an MQTT connection that has not sent CONNECT within this"},
	{"mqtt.fd_headroom", "mqtt-fd-headroom", "file descriptors kept below RLIMIT_NOFILE for the rest of the process"},
	{"limits.connect_source_rate", "connect-source-rate", "new MQTT connections per second from one source address (0: unlimited)"},
	{"limits.connect_source_burst", "connect-source-burst", "burst of the per-source connection limit"},
	{"limits.connect_rate", "connect-rate", "new MQTT connections per second in all (0: unlimited)"},
	{"limits.connect_burst", "connect-burst", "burst of the global connection limit"},
	{"limits.auth_failure_source_rate", "auth-failure-source-rate", "failed CONNECT authentications per second from one source address (0: unlimited)"},
	{"limits.auth_failure_source_burst", "auth-failure-source-burst", "burst of the per-source failed-authentication limit"},
	{"limits.auth_failure_rate", "auth-failure-rate", "failed CONNECT authentications per second in all (0: unlimited)"},
	{"limits.auth_failure_burst", "auth-failure-burst", "burst of the global failed-authentication limit"},
	{"future_tolerance", "future-tolerance", "refuse records dated more than this ahead of the gateway's clock"},
	{"store.min_free_mb", "min-free-mb", "free MiB on the store's disk below which writes are refused (0: off)"},
	{"store.max_open_gaps", "store-max-open-gaps", "open sequence gaps kept per device, the seqs a late fill may still store"},
}

// bindGatewayConfigFlags defines the flag of each row of gatewayConfigFlags
// on cmd, bound to the key's field in cfg.
func bindGatewayConfigFlags(cmd *cobra.Command, cfg *gateway.Config) {
	fs := cmd.Flags()
	for _, r := range gatewayConfigFlags {
		v, ok := gateway.ConfigField(cfg, r.key)
		if !ok {
			panic("gatewayConfigFlags: gateway.Config has no key " + r.key)
		}
		switch p := v.Addr().Interface().(type) {
		case *string:
			fs.StringVar(p, r.flag, *p, r.usage)
		case *int:
			fs.IntVar(p, r.flag, *p, r.usage)
		case *float64:
			fs.Float64Var(p, r.flag, *p, r.usage)
		case *time.Duration:
			fs.DurationVar(p, r.flag, *p, r.usage)
		case *bool:
			fs.BoolVar(p, r.flag, *p, r.usage)
		default:
			panic(fmt.Sprintf("gatewayConfigFlags: %s is a %T, which has no flag type", r.key, p))
		}
	}
}

// applyGatewayConfigFlags copies into cfg the value of every config-key
// flag the user set.
func applyGatewayConfigFlags(cmd *cobra.Command, from, cfg *gateway.Config) {
	for _, r := range gatewayConfigFlags {
		if !cmd.Flags().Changed(r.flag) {
			continue
		}
		src, _ := gateway.ConfigField(from, r.key)
		dst, _ := gateway.ConfigField(cfg, r.key)
		dst.Set(src)
	}
}

func newGatewayCmd() *cobra.Command {
	var f gatewayFlags
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run the edge gateway: MQTT broker, verified durable ingest, receipts, batches, anchors, HTTP API",
		Long: `Run the edge gateway of one site.

The configuration comes from --config (YAML; see "edgeanchor gateway init"),
then the flags below override it. The effective configuration is printed to
stderr at start, with secrets redacted. SIGINT or SIGTERM stops the gateway
in order: HTTP API, broker, services, record store.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runGateway(cmd, f) },
	}
	d := gateway.DefaultConfig()
	f.cfg = &d
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "", "YAML configuration file")
	bindGatewayConfigFlags(cmd, f.cfg)
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.logFormat, "log-format", "text", "text or json")
	cmd.AddCommand(newGatewayInitCmd(), newGatewayPasswdCmd(), newGatewayRepairCmd())
	cmd.AddCommand(newGatewayArchiveCmd()) // archive.go
	for _, c := range ledgercmd.GatewayCommands() {
		cmd.AddCommand(c())
	}
	return cmd
}

// loadGatewayConfig reads the file (if any) and applies the flags the user
// set, then validates.
func loadGatewayConfig(cmd *cobra.Command, f gatewayFlags) (gateway.Config, error) {
	cfg := gateway.DefaultConfig()
	if f.config != "" {
		var err error
		if cfg, err = gateway.LoadConfig(f.config); err != nil {
			return cfg, err
		}
	}
	applyGatewayConfigFlags(cmd, f.cfg, &cfg)
	return cfg, cfg.Validate()
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErr(fmt.Errorf("--log-level %q: want debug, info, warn or error", level))
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageErr(fmt.Errorf("--log-format %q: want text or json", format))
}

func runGateway(cmd *cobra.Command, f gatewayFlags) error {
	cfg, err := loadGatewayConfig(cmd, f)
	if err != nil {
		return usageErr(err)
	}
	log, err := newLogger(cmd.ErrOrStderr(), f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "# effective configuration\n%s", cfg.Redacted())

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ledger, err := ledgerclient.NewClient(cfg.LedgerRPC, ledgerclient.ClientOptions{Logger: log.With("component", "ledger")})
	if err != nil {
		return usageErr(err)
	}
	defer ledger.Close()

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g, err := gateway.New(cfg, gateway.Deps{Logger: log, Registerer: reg, Gatherer: reg, Ledger: ledger})
	if err != nil {
		return err
	}
	return g.Run(ctx)
}

func newGatewayInitCmd() *cobra.Command {
	var dir, site string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a gateway key (0600) and a sample gateway.yaml in --dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usageErr(errors.New("--dir is required"))
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			keyPath := filepath.Join(abs, "gateway.key")
			cfgPath := filepath.Join(abs, "gateway.yaml")
			if _, err := os.Stat(cfgPath); err == nil {
				return checkFailed(fmt.Errorf("%s exists; not overwriting", cfgPath))
			}
			priv, err := device.GenerateKey()
			if err != nil {
				return err
			}
			if err := device.WritePrivateKeyFile(keyPath, priv); err != nil {
				return err
			}
			cfg := gateway.DefaultConfig()
			cfg.DataDir = filepath.Join(abs, "data")
			cfg.KeyPath = keyPath
			cfg.Site = site
			if err := cfg.Validate(); err != nil {
				return usageErr(err)
			}
			sample := "# edgeanchor gateway configuration (docs/protocol.md, docs/operations.md)\n" + cfg.Redacted() +
				"# accounts:\n#   - username: dashboard\n#     password_hash: \"$2a$10$...\"   # edgeanchor gateway passwd\n" +
				"#     topics: [\"ea/v1/site/" + site + "/records/#\"]\n"
			sample = strings.Replace(sample, "accounts: []\n", "", 1)
			if err := os.WriteFile(cfgPath, []byte(sample), 0o600); err != nil {
				return err
			}
			der, err := device.MarshalPublicKeyDER(&priv.PublicKey)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "did: %s\npub: %s\nkey: %s\nconfig: %s\n", device.DIDFromPublicKey(&priv.PublicKey),
				base64.StdEncoding.EncodeToString(der), keyPath, cfgPath)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for gateway.key, gateway.yaml and data/")
	cmd.Flags().StringVar(&site, "site", "site-a", "site the gateway serves")
	return cmd
}

func newGatewayPasswdCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "passwd",
		Short: "Read an application account password from stdin and print its bcrypt hash for gateway.yaml",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1024))
			if err != nil {
				return err
			}
			pw := strings.TrimRight(string(b), "\r\n")
			if len(pw) < 8 {
				return checkFailed(errors.New("password must have at least 8 characters"))
			}
			h, err := broker.HashPassword(pw)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), h)
			return nil
		},
	}
}
