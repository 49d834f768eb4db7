package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/gateway"
	"github.com/edgeanchor/edgeanchor/gateway/identity"
)

func init() { register(newTokenCmd) }

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage one-time enrollment tokens of a gateway",
		Long: `Enrollment tokens let a new device register through this gateway.
Each token is bound to a site and a device kind, expires, and admits one
device. Only a hash of each token is stored, in {data_dir}/tokens.json (0600);
the command works while the gateway runs (the file is locked). Run as root,
it keeps the file's owner (the gateway's user). A --data-dir must be a
gateway's data directory (one it has started in, or holding tokens).`,
	}
	cmd.AddCommand(newTokenCreateCmd(), newTokenListCmd())
	return cmd
}

// tokenDataDir resolves the data directory from --data-dir or --config. A
// directory named by --data-dir must hold a gateway (gateway.CheckDataDir),
// so that a mistyped path is refused instead of becoming a new, empty token
// store the gateway never reads; the one in --config is the gateway's own and
// may not exist yet (tokens made before the first start). The returned
// DataDirInfo is the gateway's, when it has started in that directory.
func tokenDataDir(dataDir, configPath string) (string, gateway.Config, gateway.DataDirInfo, error) {
	var info gateway.DataDirInfo
	cfg := gateway.DefaultConfig()
	if configPath != "" {
		c, err := gateway.LoadConfig(configPath)
		if err != nil {
			return "", cfg, info, failedOrIO(err)
		}
		cfg = c
	}
	if dataDir != "" {
		cfg.DataDir = dataDir
	}
	if dataDir == "" && configPath == "" {
		return "", cfg, info, usageErr(errors.New("give --data-dir or --config"))
	}
	info, err := gateway.CheckDataDir(cfg.DataDir)
	if err != nil && (dataDir != "" || !errors.Is(err, gateway.ErrNoGateway)) {
		if dataDir != "" && errors.Is(err, gateway.ErrNoGateway) {
			err = fmt.Errorf("--data-dir: %w; check the path, or give the gateway's --config", err)
		}
		return "", cfg, info, usageErr(err)
	}
	return cfg.DataDir, cfg, info, nil
}

// tokenSite picks the site of new tokens: --site, else the site of the
// gateway in the data directory, else the config's. It returns a warning
// when --site is not the site the gateway serves (such tokens are refused as
// token_wrong_site, which a test of that refusal wants).
func tokenSite(flagSite, configPath string, cfg gateway.Config, info gateway.DataDirInfo, dir string) (site, warning string, err error) {
	gwSite := info.Site
	if gwSite == "" && configPath != "" {
		gwSite = cfg.Site
	}
	switch {
	case flagSite == "" && gwSite == "":
		return "", "", fmt.Errorf("give --site: %s does not name the gateway's site (it is written there when the gateway starts) and no --config was given", dir)
	case flagSite == "":
		return gwSite, "", nil
	case gwSite != "" && flagSite != gwSite:
		return flagSite, fmt.Sprintf("warning: the gateway of %s serves site %q; it refuses devices that enroll with tokens for %q", dir, gwSite, flagSite), nil
	}
	return flagSite, "", nil
}

func newTokenCreateCmd() *cobra.Command {
	var (
		site, kind, dataDir, configPath string
		count                           int
		ttl                             time.Duration
		asJSON                          bool
	)
	cmd := &cobra.Command{
		Use:   "create --site S --kind K [--count N] [--ttl D] (--data-dir DIR | --config FILE)",
		Short: "Create enrollment tokens and print them, one per line",
		Example: `  edgeanchor token create --site site-a --kind payroll --count 10 --ttl 72h --config gateway.yaml
  edgeanchor token create --site site-a --kind env --data-dir ./var/gateway`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, cfg, info, err := tokenDataDir(dataDir, configPath)
			if err != nil {
				return err
			}
			site, warning, err := tokenSite(site, configPath, cfg, info, dir)
			if err != nil {
				return usageErr(err)
			}
			if warning != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), warning)
			}
			store, err := identity.OpenTokenStore(dir)
			if err != nil {
				return failedOrIO(err)
			}
			toks, exp, err := store.Create(identity.TokenRequest{Site: site, Kind: kind, Count: count, TTL: ttl}, time.Now())
			if errors.Is(err, identity.ErrBadTokenRequest) {
				return usageErr(err)
			}
			if err != nil {
				return failedOrIO(err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(map[string]any{"tokens": toks, "expires": exp, "site": site, "kind": kind})
			}
			for _, t := range toks {
				fmt.Fprintln(out, t)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "created %d %s token(s) for site %s, valid until %s\n", len(toks), kind, site, exp.Format(time.RFC3339))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&site, "site", "", "site the devices belong to (default: the site of the gateway in the data directory, or the config's)")
	f.StringVar(&kind, "kind", "", "device kind: payroll, survey or env")
	f.IntVar(&count, "count", 1, fmt.Sprintf("number of tokens (1-%d)", identity.MaxTokenCount))
	f.DurationVar(&ttl, "ttl", 72*time.Hour, "validity of the tokens")
	f.StringVar(&dataDir, "data-dir", "", "the gateway's data directory")
	f.StringVar(&configPath, "config", "", "the gateway's config file (for data_dir and site)")
	f.BoolVar(&asJSON, "json", false, "print JSON instead of one token per line")
	_ = cmd.MarkFlagRequired("kind")
	return cmd
}

func newTokenListCmd() *cobra.Command {
	var dataDir, configPath string
	cmd := &cobra.Command{
		Use:   "list (--data-dir DIR | --config FILE)",
		Short: "List enrollment tokens (hashes, site, kind, expiry, use) as JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, _, _, err := tokenDataDir(dataDir, configPath)
			if err != nil {
				return err
			}
			store, err := identity.OpenTokenStore(dir)
			if err != nil {
				return failedOrIO(err)
			}
			list, err := store.List()
			if err != nil {
				return failedOrIO(err)
			}
			if list == nil {
				list = []identity.TokenRecord{}
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(map[string]any{"tokens": list})
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the gateway's data directory")
	cmd.Flags().StringVar(&configPath, "config", "", "the gateway's config file")
	return cmd
}
