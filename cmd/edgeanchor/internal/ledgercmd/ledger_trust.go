package ledgercmd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/internal/safetext"
)

func init() { ledgerSubcommands = append(ledgerSubcommands, newLedgerExportTrustCmd) }

// newLedgerExportTrustCmd is `edgeanchor ledger export-trust`, registered
// under the ledger command.
func newLedgerExportTrustCmd() *cobra.Command {
	var home, rpc, out string
	var height int64
	cmd := &cobra.Command{
		Use:   "export-trust (--home DIR | --rpc URL) --out TRUST.json",
		Short: "Write the trust file a regulator keeps to verify anchor proofs offline",
		Long: `export-trust writes the trust file (docs/ledger.md, "Client, trust and proofs").

With --rpc it asks a running node for the signed header and validator set at
--height (default: the latest) and checks that +2/3 of the set signed it:
"header" mode, which pins the chain's history up to that height.

With --home it reads HOME/config/genesis.json and needs no running node: the
chain id and the genesis validator set ("genesis" mode). A header is then
accepted when +2/3 of that set signed it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (home == "") == (rpc == "") {
				return usageErr(errors.New("ledger export-trust: give exactly one of --home and --rpc"))
			}
			if out == "" {
				return usageErr(errors.New("ledger export-trust: --out is required"))
			}
			var (
				t   *evidence.Trust
				err error
			)
			if home != "" {
				if height != 0 {
					return usageErr(errors.New("ledger export-trust: --height needs --rpc"))
				}
				t, err = evidence.ExportTrustFromHome(home)
			} else {
				ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
				defer cancel()
				t, err = ledgerclient.ExportTrust(ctx, rpc, height)
			}
			if err != nil {
				return err
			}
			if err := evidence.WriteTrustFile(out, t); err != nil {
				return err
			}
			n := t.Validators.Size()
			fmt.Fprintln(cmd.OutOrStdout(), safetext.Sprintf("wrote %s: chain %s, %s mode, height %d, %d %s",
				out, t.ChainID, t.Mode, t.Height, n, plural(n, "validator", "validators")))
			return nil
		},
	}
	cmd.Flags().StringVar(&home, "home", "", "node home directory (genesis mode, no node needed)")
	cmd.Flags().StringVar(&rpc, "rpc", "", "CometBFT RPC URL of a node you trust, e.g. http://127.0.0.1:26657")
	cmd.Flags().Int64Var(&height, "height", 0, "with --rpc: height to trust (0 = latest)")
	cmd.Flags().StringVar(&out, "out", "", "trust file to write")
	return cmd
}
