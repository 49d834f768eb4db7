package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/internal/demo"
	"github.com/edgeanchor/edgeanchor/sim/profile"
)

func init() { register(newDemoCmd) }

func newDemoCmd() *cobra.Command {
	o := demo.DefaultOptions()
	var logLevel string
	cmd := &cobra.Command{
		Use:   "demo [--dir ./var]",
		Short: "Run a ledger, a gateway and a simulated device fleet on 127.0.0.1 (what `make run` runs)",
		Long: `demo starts the whole system in one process, bound to 127.0.0.1 only:

  1. a single-validator consortium ledger (made once in DIR/ledger, with the
     gateway registered in its genesis; trust file DIR/trust.json),
  2. a gateway (DIR/gateway): MQTT broker, HTTP record API, /metrics,
  3. enrollment tokens for the fleet (first start only),
  4. simulated devices (DIR/sim) that enroll, then publish signed readings,
  5. the regulator's web portal (docs/portal.md) on the ledger and the gateway.

It prints where to look and one live progress line; Ctrl-C stops everything
in reverse order. A second run reuses DIR; remove it (make clean) to start
over. Logs go to DIR/demo.log. Every port is checked before anything starts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
				return usageErr(fmt.Errorf("--log-level: %w", err))
			}
			o.Progress = cmd.ErrOrStderr()
			if f, ok := o.Progress.(*os.File); ok {
				if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
					o.Live = true
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			err := demo.Run(ctx, o)
			if errors.Is(err, demo.ErrPortTaken) {
				return checkFailed(err)
			}
			if errors.Is(err, demo.ErrOptions) {
				return usageErr(err)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "dir", o.Dir, "state directory (ledger, gateway, devices, trust file, log)")
	f.IntVar(&o.Devices, "devices", o.Devices, "simulated devices")
	f.StringVar(&o.Profile, "profile", o.Profile, "device kinds: "+strings.Join(profile.Profiles, ", "))
	f.Float64Var(&o.Rate, "rate", o.Rate, "readings per second per device")
	f.Uint64Var(&o.Seed, "seed", 0, "seed of the simulated readings (default: random, kept in DIR/sim)")
	f.IntVar(&o.MQTTPort, "mqtt-port", o.MQTTPort, "gateway MQTT port")
	f.IntVar(&o.WSPort, "ws-port", o.WSPort, "gateway MQTT-over-WebSocket port")
	f.IntVar(&o.HTTPPort, "http-port", o.HTTPPort, "gateway HTTP API and /metrics port")
	f.IntVar(&o.P2PPort, "p2p-port", o.P2PPort, "ledger p2p port (used when DIR/ledger is made)")
	f.IntVar(&o.RPCPort, "rpc-port", o.RPCPort, "ledger RPC port (used when DIR/ledger is made)")
	f.IntVar(&o.PromPort, "ledger-metrics-port", o.PromPort, "ledger Prometheus port, its own /metrics (used when DIR/ledger is made)")
	f.IntVar(&o.PortalPort, "portal-port", o.PortalPort, "the regulator's web portal port on 127.0.0.1 (0: no portal)")
	f.StringVar(&logLevel, "log-level", "info", "level of DIR/demo.log: debug, info, warn, error")
	return cmd
}
