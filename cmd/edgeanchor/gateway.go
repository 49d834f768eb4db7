package main

import (
	"context"
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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway"
)

func init() { register(newGatewayCmd) }

// gatewayFlags are the flags that override the config file.
type gatewayFlags struct {
	config, dataDir, key, site, name, ledger           string
	mqttTCP, mqttWS, mqttTLS, tlsCert, tlsKey, http    string
	adminToken, logLevel, logFormat                    string
	maxPayload, maxConn, maxInFlight, deviceBurst, v3N int
	deviceRate                                         float64
	minFreeMB                                          int
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
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "", "YAML configuration file")
	fl.StringVar(&f.dataDir, "data-dir", d.DataDir, "data directory (record store, tokens)")
	fl.StringVar(&f.key, "key", d.KeyPath, "gateway SM2 private key (PEM, 0600)")
	fl.StringVar(&f.site, "site", d.Site, "site this gateway serves")
	fl.StringVar(&f.name, "name", d.Name, "gateway name (informational)")
	fl.StringVar(&f.ledger, "ledger-rpc", d.LedgerRPC, "CometBFT RPC URL of a consortium validator")
	fl.StringVar(&f.mqttTCP, "mqtt-tcp", d.MQTT.TCP, "MQTT TCP listen address (empty: off)")
	fl.StringVar(&f.mqttWS, "mqtt-ws", d.MQTT.WS, "MQTT over WebSocket listen address (empty: off)")
	fl.StringVar(&f.mqttTLS, "mqtt-tls", d.MQTT.TLS, "MQTT TLS listen address (on only with --tls-cert and --tls-key)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "TLS certificate (PEM)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "TLS private key (PEM)")
	fl.StringVar(&f.http, "http", d.HTTP.Addr, "HTTP API and /metrics listen address")
	fl.StringVar(&f.adminToken, "admin-token-file", "", "file holding the admin API bearer token")
	fl.IntVar(&f.maxPayload, "max-payload", d.Limits.MaxPayload, "largest accepted publish payload, bytes")
	fl.Float64Var(&f.deviceRate, "device-rate", d.Limits.DeviceRate, "messages per second one device may publish (0: unlimited)")
	fl.IntVar(&f.deviceBurst, "device-burst", d.Limits.DeviceBurst, "burst of the per-device rate limit")
	fl.IntVar(&f.maxConn, "max-connections", d.Limits.MaxConnections, "most MQTT clients connected at once")
	fl.IntVar(&f.maxInFlight, "max-inflight", d.Limits.MaxInFlight, "most publishes inside the ingest pipeline at once")
	fl.IntVar(&f.v3N, "v3-refusals", d.Limits.V3RefusalsBeforeDisconnect, "refused publishes before an MQTT 3.1.1 client is disconnected")
	fl.IntVar(&f.minFreeMB, "min-free-mb", d.Store.MinFreeMB, "free MiB on the store's disk below which writes are refused (store.min_free_mb; 0: off)")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.logFormat, "log-format", "text", "text or json")
	cmd.AddCommand(newGatewayInitCmd(), newGatewayPasswdCmd())
	cmd.AddCommand(newGatewayRepairCmd())
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
	set := cmd.Flags().Changed
	for name, apply := range map[string]func(){
		"data-dir": func() { cfg.DataDir = f.dataDir }, "key": func() { cfg.KeyPath = f.key },
		"site": func() { cfg.Site = f.site }, "name": func() { cfg.Name = f.name },
		"ledger-rpc": func() { cfg.LedgerRPC = f.ledger }, "mqtt-tcp": func() { cfg.MQTT.TCP = f.mqttTCP },
		"mqtt-ws": func() { cfg.MQTT.WS = f.mqttWS }, "mqtt-tls": func() { cfg.MQTT.TLS = f.mqttTLS },
		"tls-cert": func() { cfg.MQTT.TLSCert = f.tlsCert }, "tls-key": func() { cfg.MQTT.TLSKey = f.tlsKey },
		"http": func() { cfg.HTTP.Addr = f.http }, "admin-token-file": func() { cfg.HTTP.AdminTokenFile = f.adminToken },
		"max-payload": func() { cfg.Limits.MaxPayload = f.maxPayload }, "device-rate": func() { cfg.Limits.DeviceRate = f.deviceRate },
		"device-burst": func() { cfg.Limits.DeviceBurst = f.deviceBurst }, "max-connections": func() { cfg.Limits.MaxConnections = f.maxConn },
		"max-inflight": func() { cfg.Limits.MaxInFlight = f.maxInFlight }, "v3-refusals": func() { cfg.Limits.V3RefusalsBeforeDisconnect = f.v3N },
		"min-free-mb": func() { cfg.Store.MinFreeMB = f.minFreeMB },
	} {
		if set(name) {
			apply()
		}
	}
	return cfg, cfg.Validate()
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--log-level %q: want debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, &exitError{code: 2, err: fmt.Errorf("--log-format %q: want text or json", format)}
}

func runGateway(cmd *cobra.Command, f gatewayFlags) error {
	cfg, err := loadGatewayConfig(cmd, f)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	log, err := newLogger(cmd.ErrOrStderr(), f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "# effective configuration\n%s", cfg.Redacted())

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ledger, err := anchor.NewClient(cfg.LedgerRPC, anchor.ClientOptions{Logger: log.With("component", "ledger")})
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	defer ledger.Close()

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g, err := gateway.New(cfg, gateway.Deps{
		Logger: log, Registerer: reg, Gatherer: reg,
		LedgerPing: func(ctx context.Context) error { _, err := ledger.Height(ctx); return err },
	})
	if err != nil {
		return err
	}
	if _, _, err := gateway.AttachLedgerIdentity(g, ledger); err != nil {
		_ = g.Close()
		return err
	}
	if _, err := gateway.EnableAnchoring(g, ledger); err != nil {
		_ = g.Close()
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
				return &exitError{code: 2, err: errors.New("--dir is required")}
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
				return &exitError{code: 1, err: fmt.Errorf("%s exists; not overwriting", cfgPath)}
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
				return &exitError{code: 2, err: err}
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
				return &exitError{code: 1, err: errors.New("password must have at least 8 characters")}
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
