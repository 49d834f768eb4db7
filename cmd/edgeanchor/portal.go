package main

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/portal"
)

func init() { register(newPortalCmd) }

func newPortalCmd() *cobra.Command {
	cfg := portal.DefaultConfig()
	var configPath string
	var gateways []string
	cmd := &cobra.Command{
		Use:   "portal --ledger URL --trust TRUST.json [--gateway DID=URL ...] [--listen 127.0.0.1:8490]",
		Short: "Serve the regulator's web portal: consortium, gateways' chains, bundle verification, audits, charts",
		Long: `portal serves a web application for regulators on their own machine
(docs/portal.md): the consortium's validators and member gateways, each
gateway's chain of batch headers (every signature and link checked by the
portal), proof-bundle verification (in the portal's process, against the
trust file), audits with downloadable reports, and charts. Every asset is in
the binary: it makes no request outside the machines it is pointed at.

It listens on 127.0.0.1:8490 by default, and refuses any address other than
a loopback one unless it has TLS (--tls-cert, --tls-key) and accounts
(--accounts, lines "user:bcrypt-hash"; 'edgeanchor portal passwd USER'
makes one). With accounts every page needs a login.

Flags override the YAML file given with --config (keys: listen, ledger,
trust, gateways: [{did, url}], tls_cert, tls_key, accounts, page_size,
refresh, login_failures, login_backoff, wage_zone, wage_due_days,
wage_floor_fen).

Exit status: 0 stopped by a signal; 2 bad configuration or I/O error.`,
		Example: `  edgeanchor portal --ledger http://127.0.0.1:26657 --trust trust.json \
      --gateway did:ea:…=http://127.0.0.1:8480`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath != "" {
				data, err := os.ReadFile(configPath)
				if err != nil {
					return ioErr(fmt.Errorf("portal: --config: %w", err))
				}
				file := portal.DefaultConfig()
				dec := yaml.NewDecoder(strings.NewReader(string(data)))
				dec.KnownFields(true)
				if err := dec.Decode(&file); err != nil {
					return usageErr(fmt.Errorf("portal: --config %s: %w", configPath, err))
				}
				// Flags given on the command line win over the file.
				fl := cmd.Flags()
				merge := func(name string, dst *string, v string) {
					if !fl.Changed(name) {
						*dst = v
					}
				}
				merge("listen", &cfg.Listen, file.Listen)
				merge("ledger", &cfg.LedgerRPC, file.LedgerRPC)
				merge("trust", &cfg.TrustPath, file.TrustPath)
				merge("tls-cert", &cfg.TLSCert, file.TLSCert)
				merge("tls-key", &cfg.TLSKey, file.TLSKey)
				merge("accounts", &cfg.AccountsPath, file.AccountsPath)
				if !fl.Changed("page-size") {
					cfg.PageSize = file.PageSize
				}
				if !fl.Changed("refresh") {
					cfg.Refresh = file.Refresh
				}
				merge("wage-zone", &cfg.WageZone, file.WageZone)
				if !fl.Changed("wage-due-days") {
					cfg.WageDueDays = file.WageDueDays
				}
				if !fl.Changed("wage-floor-fen") {
					cfg.WageFloorFen = file.WageFloorFen
				}
				cfg.LoginFailures, cfg.LoginBackoff = file.LoginFailures, file.LoginBackoff
				cfg.Gateways = file.Gateways
			}
			for _, g := range gateways {
				did, u, ok := strings.Cut(g, "=")
				if !ok {
					return usageErr(fmt.Errorf("portal: --gateway %q: want DID=URL", g))
				}
				cfg.Gateways = append(cfg.Gateways, portal.GatewayAPI{DID: device.DID(did), URL: u})
			}
			if err := cfg.Validate(); err != nil {
				return usageErr(err)
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			s, err := portal.New(cfg, portal.Deps{Logger: log})
			if err != nil {
				return ioErr(err)
			}
			defer s.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				return ioErr(fmt.Errorf("portal: listen: %w", err))
			}
			scheme := "http"
			if cfg.TLSCert != "" {
				scheme = "https"
			}
			log.Info("portal listening", "listen", ln.Addr().String(), "ledger", cfg.LedgerRPC, "trust", cfg.TrustPath,
				"gateways", len(cfg.Gateways), "tls", cfg.TLSCert != "", "accounts", cfg.AccountsPath != "")
			fmt.Fprintf(cmd.OutOrStdout(), "portal: %s://%s/\n", scheme, ln.Addr())
			if err := s.Serve(ctx, ln); err != nil {
				return ioErr(err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML config file (flags override it)")
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "address to serve on (non-loopback needs --tls-cert, --tls-key and --accounts)")
	f.StringVar(&cfg.LedgerRPC, "ledger", "", "CometBFT RPC URL of a ledger node")
	f.StringVar(&cfg.TrustPath, "trust", "", "trust file (edgeanchor ledger export-trust)")
	f.StringArrayVar(&gateways, "gateway", nil, "a gateway's record API: DID=URL (repeat for each gateway)")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate (PEM)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "TLS private key (PEM)")
	f.StringVar(&cfg.AccountsPath, "accounts", "", `accounts file, lines "user:bcrypt-hash" (every page then needs a login)`)
	f.IntVar(&cfg.PageSize, "page-size", cfg.PageSize, "rows per page of a paged list (1..500)")
	f.DurationVar(&cfg.Refresh, "refresh", cfg.Refresh, "auto-refresh interval of the Consortium page")
	f.StringVar(&cfg.WageZone, "wage-zone", cfg.WageZone, "Wages page default: the sites' time zone (IANA name or ±hh:mm)")
	f.IntVar(&cfg.WageDueDays, "wage-due-days", cfg.WageDueDays, "Wages page default: wages are due this many days after the period's end (1..366)")
	f.Int64Var(&cfg.WageFloorFen, "wage-floor-fen", cfg.WageFloorFen, "Wages page default: the daily floor in fen (0: none)")
	cmd.AddCommand(newPortalPasswdCmd())
	return cmd
}

func newPortalPasswdCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "passwd USER",
		Short: "Read a password on stdin and print the accounts-file line for USER",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			user := args[0]
			if user == "" || strings.ContainsAny(user, ":\n\r") {
				return usageErr(errors.New("portal passwd: USER must be non-empty, without ':' or line breaks"))
			}
			line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
			if err != nil && line == "" {
				return ioErr(fmt.Errorf("portal passwd: read the password from stdin: %w", err))
			}
			pass := strings.TrimRight(line, "\r\n")
			if len(pass) < 8 || len(pass) > 72 {
				return usageErr(errors.New("portal passwd: the password must have 8 to 72 bytes"))
			}
			h, err := bcrypt.GenerateFromPassword([]byte(pass), 12)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s:%s\n", user, h)
			return nil
		},
	}
}
