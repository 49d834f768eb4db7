package ledgercmd

import (
	"context"
	"fmt"
	"time"

	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	"github.com/cometbft/cometbft/types"
	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/internal/safetext"
)

func init() { ledgerSubcommands = append(ledgerSubcommands, newLedgerStatusCmd) }

// newLedgerStatusCmd is `edgeanchor ledger status`: what a member checks on
// its own node after starting it or after a validator change (has it
// caught up, does it have peers, is it a validator, does it sign).
func newLedgerStatusCmd() *cobra.Command {
	var rpc string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status [--rpc URL]",
		Short: "Print a node's height, peers and whether its validator signs",
		Long: `status asks the node at --rpc for its chain, its latest height and whether it
is still catching up (block sync), how many peers it has, and its own
validator's voting power at that height: a validator (power above 0) is
reported with whether its signature is in the commit of that height.
Every text taken from the node is printed escaped.

Exit status: 0 answered; 2 usage, or the node cannot be reached.`,
		Example: `  edgeanchor ledger status --rpc http://127.0.0.1:26657`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if timeout < time.Second {
				return usageErr(fmt.Errorf("--timeout %s: want 1s or more", timeout))
			}
			c, err := rpchttp.NewWithTimeout(rpc, "/websocket", uint(timeout.Seconds()))
			if err != nil {
				return usageErr(fmt.Errorf("--rpc: %w", err))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return printLedgerStatus(ctx, cmd, c, rpc)
		},
	}
	cmd.Flags().StringVar(&rpc, "rpc", "http://127.0.0.1:26657", "the node's RPC URL")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the node's answers")
	return cmd
}

func printLedgerStatus(ctx context.Context, cmd *cobra.Command, c *rpchttp.HTTP, rpc string) error {
	unreachable := func(what string, err error) error {
		return ioErr(fmt.Errorf("ledger status: %s of %s: %w", what, rpc, err))
	}
	st, err := c.Status(ctx)
	if err != nil {
		return unreachable("status", err)
	}
	ni, err := c.NetInfo(ctx)
	if err != nil {
		return unreachable("peers", err)
	}
	w := cmd.OutOrStdout()
	h := st.SyncInfo.LatestBlockHeight
	fmt.Fprintln(w, safetext.Sprintf("node       %s %q", st.NodeInfo.DefaultNodeID, st.NodeInfo.Moniker))
	fmt.Fprintln(w, safetext.Sprintf("chain      %s", st.NodeInfo.Network))
	fmt.Fprintln(w, safetext.Sprintf("height     %d (%s), catching up: %s", h,
		st.SyncInfo.LatestBlockTime.UTC().Format(time.RFC3339), yesNo(st.SyncInfo.CatchingUp)))
	fmt.Fprintf(w, "peers      %d\n", ni.NPeers)
	addr := st.ValidatorInfo.Address
	if st.ValidatorInfo.VotingPower == 0 || h == 0 {
		fmt.Fprintf(w, "validator  %s: not a validator at height %d (power 0)\n", addr, h)
		return nil
	}
	com, err := c.Commit(ctx, &h)
	if err != nil {
		return unreachable("commit", err)
	}
	signed := "did not sign"
	for _, s := range com.Commit.Signatures {
		if s.BlockIDFlag == types.BlockIDFlagCommit && s.ValidatorAddress.String() == addr.String() {
			signed = "signed"
		}
	}
	fmt.Fprintf(w, "validator  %s: power %d, %s block %d\n", addr, st.ValidatorInfo.VotingPower, signed, h)
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
