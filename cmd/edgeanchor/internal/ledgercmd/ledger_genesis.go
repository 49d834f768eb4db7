package ledgercmd

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cometbft/cometbft/types"
	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/ledger"
)

// Multi-party genesis: `ledger init --org` on each member's machine,
// `ledger genesis assemble` at a coordinator from the public member files,
// `ledger genesis show` to compare hashes out of band, `ledger genesis
// install` in each home.

func init() { ledgerSubcommands = append(ledgerSubcommands, newLedgerGenesisCmd) }

func newLedgerGenesisCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "genesis",
		Short: "Assemble, show and install a consortium genesis made from public member files",
	}
	cmd.AddCommand(newGenesisAssembleCmd(), newGenesisShowCmd(), newGenesisInstallCmd())
	return cmd
}

func newGenesisAssembleCmd() *cobra.Command {
	var (
		members                  []string
		chainID, out             string
		threshold                int
		gwPubs, gwSites, gwNames []string
	)
	cmd := &cobra.Command{
		Use:   "assemble --member A.json ... --chain-id ID --committee-threshold K --out genesis.json",
		Short: "Build genesis from member files only (no private key is read)",
		Long: `assemble reads the public member files that ` + "`ledger init --org`" + ` wrote on each
member's machine and writes genesis.json: every member's validator (named by
its org), a committee of every member's committee key with threshold K, the
regulators the members listed and the genesis gateways (--gateway-pub). It
prints the file's SHA-256 (members compare it out of band) and the
persistent peers line with the command each member runs to install it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(members) == 0 || out == "" || chainID == "" || threshold == 0 {
				return usageError("--member (one or more), --chain-id, --committee-threshold and --out are required")
			}
			var ms []*ledger.MemberFile
			for _, p := range members {
				m, err := ledger.ReadMemberFile(p)
				if err != nil {
					return usageError("%v", err)
				}
				ms = append(ms, m)
			}
			gws, err := genesisGateways(gwPubs, gwSites, gwNames)
			if err != nil {
				return err
			}
			gen, peers, err := ledger.AssembleGenesis(ms, chainID, threshold, gws, time.Now())
			if err != nil {
				return usageError("%v", err)
			}
			if _, err := os.Stat(out); err == nil {
				return usageError("%s exists; remove it or choose another --out", out)
			}
			if err := gen.SaveAs(out); err != nil {
				return ioError(err)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				return ioError(err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "genesis %s\nsha256  %s\nchain   %s, %d validators, committee threshold %d of %d\n",
				out, ledger.GenesisFileHash(b), chainID, len(gen.Validators), threshold, len(ms))
			fmt.Fprintf(w, "persistent_peers = %q\n", peers)
			fmt.Fprintf(w, "each member runs:\n  edgeanchor ledger genesis install --home DIR --genesis %s --peers %s\n", out, peers)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&members, "member", nil, "a member file (repeatable, one per organisation)")
	f.StringVar(&chainID, "chain-id", "", "chain ID")
	f.IntVar(&threshold, "committee-threshold", 0, "approvals a proposal needs (1 ≤ K ≤ members)")
	f.StringVar(&out, "out", "", "genesis file to write")
	addGatewayFlags(cmd, &gwPubs, &gwSites, &gwNames)
	return cmd
}

func newGenesisShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show GENESIS.json",
		Short: "Print a genesis file's SHA-256 and what it says, to compare out of band",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return ioError(err)
			}
			gen, err := types.GenesisDocFromJSON(b)
			if err != nil {
				return refusedError(fmt.Errorf("%s: %w", args[0], err))
			}
			st, err := anchor.ParseGenesisState(gen.AppState)
			if err != nil {
				return refusedError(fmt.Errorf("%s: %w", args[0], err))
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "sha256      %s\nchain_id    %s\ngenesis     %s\n", ledger.GenesisFileHash(b), gen.ChainID, gen.GenesisTime.UTC().Format(time.RFC3339))
			fmt.Fprintf(w, "validators  %d\n", len(gen.Validators))
			for _, v := range gen.Validators {
				fmt.Fprintf(w, "  %s  power %d  %s  %q\n", v.Address, v.Power, base64.StdEncoding.EncodeToString(v.PubKey.Bytes()), v.Name)
			}
			fmt.Fprintf(w, "committee   %d members, threshold %d\n", len(st.Committee.Members), st.Committee.Threshold)
			for _, k := range st.Committee.Members {
				fmt.Fprintf(w, "  %s\n", didOf(k))
			}
			fmt.Fprintf(w, "regulators  %d\n", len(st.Regulators))
			for _, k := range st.Regulators {
				fmt.Fprintf(w, "  %s\n", didOf(k))
			}
			fmt.Fprintf(w, "gateways    %d\n", len(st.Gateways))
			for _, g := range st.Gateways {
				fmt.Fprintf(w, "  %s  site %q  name %q\n", g.DID, g.Site, g.Name)
			}
			return nil
		},
	}
}

func didOf(der []byte) string {
	pub, err := device.ParsePublicKeyDER(der)
	if err != nil {
		return "(bad key)"
	}
	return device.DIDFromPublicKey(pub).String()
}

func newGenesisInstallCmd() *cobra.Command {
	var home, genesis, peers string
	cmd := &cobra.Command{
		Use:   "install --home DIR --genesis GENESIS.json --peers ID@HOST:PORT,...",
		Short: "Copy the assembled genesis into a member's home and set its persistent peers",
		Long: `install checks GENESIS.json, copies it to DIR/config/genesis.json and sets
p2p.persistent_peers of DIR to --peers without the home's own node. Compare
the printed SHA-256 with the other members' before starting.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if home == "" || genesis == "" {
				return usageError("--home and --genesis are required")
			}
			h, err := ledger.InstallGenesis(home, genesis, peers)
			if err != nil {
				if errors.Is(err, ledger.ErrNoHome) {
					return usageError("%v", err)
				}
				return refusedError(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "genesis installed in %s (sha256 %s)\nstart it with: edgeanchor ledger start --home %s\n", home, h, home)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&home, "home", "", "the member's home (made by ledger init --org)")
	f.StringVar(&genesis, "genesis", "", "the assembled genesis file")
	f.StringVar(&peers, "peers", "", "persistent peers, as ledger genesis assemble printed them")
	return cmd
}

// runMemberInit is `ledger init --org`: a member home and its public
// member file, no genesis.
func runMemberInit(cmd *cobra.Command, home string, opts ledger.MemberOptions) error {
	h, m, err := ledger.InitMember(home, opts)
	if err != nil {
		return refusedError(err)
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "member home %s for %q (node %s)\n", h.Dir, m.Org, h.NodeID)
	fmt.Fprintf(w, "  p2p address    %s\n  rpc            %s\n", m.P2PAddress, h.RPCURL)
	fmt.Fprintf(w, "  committee key  %s\n", h.CommitteeKey)
	if h.RegulatorKey != "" {
		fmt.Fprintf(w, "  regulator key  %s\n", h.RegulatorKey)
	}
	fmt.Fprintf(w, "public member file: %s (send it to the coordinator; it holds no private key)\n", home+"/"+ledger.MemberFileName)
	return nil
}
