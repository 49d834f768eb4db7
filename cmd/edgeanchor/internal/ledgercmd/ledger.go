package ledgercmd

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/ledger"
)

func init() { register(newLedgerCmd) }

// ledgerSubcommands holds subcommands of `edgeanchor ledger` that live in
// other files: such a file adds itself from its own init, e.g.
//
//	func init() { ledgerSubcommands = append(ledgerSubcommands, newLedgerExportTrustCmd) }
//
// so that adding one touches only that file.
var ledgerSubcommands []func() *cobra.Command

func newLedgerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "Run and set up the consortium ledger (CometBFT validator with the edgeanchor application)",
		Long: `ledger makes validator homes and runs a validator: a CometBFT v0.38 node with
the edgeanchor application in-process (docs/ledger.md).`,
	}
	cmd.AddCommand(newLedgerInitCmd(), newLedgerTestnetCmd(), newLedgerStartCmd())
	for _, c := range ledgerSubcommands {
		cmd.AddCommand(c())
	}
	return cmd
}

// genesisGateways reads the repeatable --gateway-pub/--gateway-site/
// --gateway-name flags, matched by position (no names: each is its site).
func genesisGateways(pubs, sites, names []string) ([]anchor.GenesisGateway, error) {
	if len(pubs) != len(sites) || (len(names) != 0 && len(names) != len(pubs)) {
		return nil, usageErr(errors.New("give one --gateway-site per --gateway-pub, and one --gateway-name each or none"))
	}
	var out []anchor.GenesisGateway
	for i, p := range pubs {
		pub, err := device.ReadPublicKeyFile(p)
		if err != nil {
			return nil, failedOrIO(fmt.Errorf("--gateway-pub: %w", err))
		}
		name := sites[i]
		if len(names) > 0 && names[i] != "" {
			name = names[i]
		}
		gg, err := ledger.GenesisGatewayFromKey(pub, sites[i], name)
		if err != nil {
			return nil, checkFailed(err)
		}
		out = append(out, gg)
	}
	return out, nil
}

func addGatewayFlags(cmd *cobra.Command, pubs, sites, names *[]string) {
	f := cmd.Flags()
	f.StringArrayVar(pubs, "gateway-pub", nil, "public key PEM of a gateway that is a member from genesis (repeatable)")
	f.StringArrayVar(sites, "gateway-site", nil, "site of that gateway (one per --gateway-pub)")
	f.StringArrayVar(names, "gateway-name", nil, "name of that gateway (one per --gateway-pub, or none: the site)")
}

func newLedgerInitCmd() *cobra.Command {
	var (
		home                     string
		opts                     ledger.HomeOptions
		gwPubs, gwSites, gwNames []string
		member                   ledger.MemberOptions // --org: a consortium member's home (ledger_genesis.go)
	)
	cmd := &cobra.Command{
		Use:   "init --home DIR [--gateway-pub PEM --gateway-site S [--gateway-name N]]...",
		Short: "Make a single-validator ledger home with dev committee and regulator keys",
		Long: `init makes DIR with a CometBFT config (consortium defaults, 127.0.0.1 ports),
a validator key, a node key, and dev SM2 keys (0600) for the committee
(DIR/keys/committee.pem: the whole committee, threshold 1, so its proposals
take effect alone) and the regulator (DIR/keys/regulator.pem, may revoke any
device). --gateway-pub names a
gateway that is a consortium member from the first block. It refuses a DIR
that already holds a home.

With --org NAME it makes one organisation's home of a multi-party
consortium instead: validator and node keys, DIR/keys/committee.pem (and
DIR/keys/regulator.pem with --regulator), no genesis, and the public member
file DIR/member.json to send to the coordinator (ledger genesis assemble).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if home == "" {
				return usageErr(errors.New("ledger init: --home is required"))
			}
			if member.Org != "" {
				if len(gwPubs) > 0 {
					return usageErr(errors.New("ledger init --org: genesis gateways go to ledger genesis assemble"))
				}
				member.P2PPort, member.RPCPort, member.PrometheusPort = opts.P2PPort, opts.RPCPort, opts.PrometheusPort
				return runMemberInit(cmd, home, member)
			}
			gws, err := genesisGateways(gwPubs, gwSites, gwNames)
			if err != nil {
				return err
			}
			opts.Gateways = gws
			h, err := ledger.InitHome(home, opts)
			if err != nil {
				return checkFailed(err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "ledger home %s (node %s)\n", h.Dir, h.NodeID)
			fmt.Fprintf(out, "  rpc        %s\n  p2p        %s\n", h.RPCURL, h.P2PAddr)
			if h.PrometheusURL != "" {
				fmt.Fprintf(out, "  prometheus %s\n", h.PrometheusURL)
			}
			fmt.Fprintf(out, "  committee key  %s\n  regulator key  %s\n", h.CommitteeKey, h.RegulatorKey)
			for _, g := range opts.Gateways {
				fmt.Fprintf(out, "  genesis gateway %s (site %s)\n", g.DID, g.Site)
			}
			fmt.Fprintf(out, "start it with: edgeanchor ledger start --home %s\n", h.Dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&home, "home", "", "directory to create")
	f.StringVar(&opts.ChainID, "chain-id", ledger.DefaultChainID, "chain ID")
	f.StringVar(&opts.Moniker, "moniker", "validator0", "validator name")
	f.IntVar(&opts.P2PPort, "p2p-port", ledger.DefaultP2PPort, "p2p port on 127.0.0.1")
	f.IntVar(&opts.RPCPort, "rpc-port", ledger.DefaultRPCPort, "RPC port on 127.0.0.1")
	f.IntVar(&opts.PrometheusPort, "prometheus-port", ledger.DefaultPrometheusPort, "Prometheus metrics port on 127.0.0.1")
	addGatewayFlags(cmd, &gwPubs, &gwSites, &gwNames)
	f.StringVar(&member.Org, "org", "", "make a consortium member's home instead: no genesis, a public DIR/member.json for ledger genesis assemble")
	f.BoolVar(&member.Regulator, "regulator", false, "with --org: the organisation is a regulator (also make DIR/keys/regulator.pem)")
	f.Int64Var(&member.Power, "power", ledger.DefaultPower, "with --org: the validator's voting power")
	f.StringVar(&member.ListenHost, "listen-host", "127.0.0.1", "with --org: address the p2p listener binds")
	f.StringVar(&member.ExternalAddress, "external-address", "", "with --org: host:port the other members dial (default listen-host:p2p-port)")
	f.StringVar(&member.RPCListenHost, "rpc-listen-host", "127.0.0.1", "with --org: address the RPC listener binds (0.0.0.0 to serve gateways on other hosts; firewall it to them)")
	return cmd
}

func newLedgerTestnetCmd() *cobra.Command {
	var (
		out                      string
		n, base                  int
		opts                     ledger.HomeOptions
		gwPubs, gwSites, gwNames []string
	)
	cmd := &cobra.Command{
		Use:   "testnet --validators N --out DIR --base-port P [--gateway-pub PEM --gateway-site S [--gateway-name N]]...",
		Short: "Make N validator homes on 127.0.0.1 sharing one genesis",
		Long: `testnet makes DIR/node0 … DIR/node{N-1}, one validator each (equal voting
power), with one genesis, one set of dev committee and regulator keys
(DIR/keys/), and every node dialling the others as persistent peers. Node k
listens on p2p P+10k, RPC P+10k+1 and Prometheus P+10k+2. Start each with
` + "`edgeanchor ledger start --home DIR/nodeK`" + `; the chain advances once more than
2/3 of the voting power is up (3 of 4).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageErr(errors.New("ledger testnet: --out is required"))
			}
			gws, err := genesisGateways(gwPubs, gwSites, gwNames)
			if err != nil {
				return err
			}
			opts.Gateways = gws
			homes, err := ledger.Testnet(out, n, base, opts)
			if err != nil {
				return checkFailed(err)
			}
			w := cmd.OutOrStdout()
			for _, h := range homes {
				fmt.Fprintf(w, "%s  node %s  p2p %s  rpc %s  metrics %s\n", h.Dir, h.NodeID, h.P2PAddr, h.RPCURL, h.PrometheusURL)
			}
			fmt.Fprintf(w, "committee key %s\nregulator key %s\n", homes[0].CommitteeKey, homes[0].RegulatorKey)
			for _, g := range opts.Gateways {
				fmt.Fprintf(w, "genesis gateway %s (site %s)\n", g.DID, g.Site)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "output directory")
	f.IntVar(&n, "validators", 4, "number of validators")
	f.IntVar(&base, "base-port", ledger.DefaultP2PPort, "first port (node k uses P+10k … P+10k+2)")
	f.StringVar(&opts.ChainID, "chain-id", ledger.DefaultChainID, "chain ID")
	addGatewayFlags(cmd, &gwPubs, &gwSites, &gwNames)
	return cmd
}

func newLedgerStartCmd() *cobra.Command {
	var home, logLevel string
	cmd := &cobra.Command{
		Use:   "start --home DIR",
		Short: "Run the validator in DIR until SIGINT or SIGTERM",
		Long: `start runs the CometBFT node of DIR with the edgeanchor application
in-process. Logs go to stderr (CometBFT's own at debug level, its errors
always). Metrics: CometBFT's cometbft_… and the application's
edgeanchor_ledger_… on the Prometheus listener of DIR/config/config.toml.
A running node holds DIR/node.lock (with its pid); a second start of the same
home is refused, naming that pid.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if home == "" {
				return usageErr(errors.New("ledger start: --home is required"))
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usageErr(fmt.Errorf("ledger start: --log-level: %w", err))
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// CometBFT serves the default registry on its Prometheus listener,
			// so the application's metrics go there too.
			node, err := ledger.StartNode(ctx, home, ledger.NodeOptions{Logger: log, Registerer: prometheus.DefaultRegisterer})
			if err != nil {
				if errors.Is(err, ledger.ErrNoHome) || errors.Is(err, ledger.ErrRunning) {
					return ioErr(err)
				}
				return err
			}
			<-ctx.Done()
			log.Info("ledger stopping")
			return node.Stop()
		},
	}
	cmd.Flags().StringVar(&home, "home", "", "validator home (made by ledger init or ledger testnet)")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
