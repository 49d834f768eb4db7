package ledgercmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	"github.com/cometbft/cometbft/types"
	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/internal/safetext"
)

func init() { ledgerSubcommands = append(ledgerSubcommands, newLedgerTrustCmd) }

// newLedgerTrustCmd is `edgeanchor ledger trust`, whose `update` appends
// the checkpoints that make a trust file follow the validator set.
func newLedgerTrustCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trust",
		Short: "Keep a trust file in step with the consortium's validator set",
	}
	cmd.AddCommand(newLedgerTrustUpdateCmd())
	return cmd
}

func newLedgerTrustUpdateCmd() *cobra.Command {
	var trustPath, rpc string
	cmd := &cobra.Command{
		Use:   "update --trust TRUST.json --rpc URL",
		Short: "Append a verified checkpoint for every validator set change since the trust file's last one",
		Long: `update asks a node for every validator set change after the trust file's last
checkpoint (or its genesis set or trusted header) and appends one checkpoint
per change: the signed header at the first height of the new set and that
set. Each checkpoint is verified from the one before it before it is kept
(+1/3 of the previous set's power and +2/3 of the new set signed the header),
so the node need not be trusted: a node that lies makes the update fail, and
the file is only ever extended by verified steps. The file is rewritten only
when a checkpoint was added.

Exit 0: up to date (checkpoints added or none needed); 1: the node's answers
do not verify or do not explain the chain's current set (nothing written);
2: usage or I/O error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if trustPath == "" || rpc == "" {
				return usageErr(errors.New("ledger trust update: --trust and --rpc are required"))
			}
			t, err := evidence.ReadTrustFile(trustPath)
			if err != nil {
				return failedOrIO(err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			added, latest, err := updateTrust(ctx, t, rpc)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			printCheckpoints(w, t, len(t.Checkpoints)-added)
			if added == 0 {
				fmt.Fprintln(w, safetext.Sprintf("%s is up to date at height %d: the validator set has not changed since height %d",
					trustPath, latest, t.LastHeight()))
				return nil
			}
			if err := writeTrustAtomic(trustPath, t); err != nil {
				return ioErr(err)
			}
			fmt.Fprintln(w, safetext.Sprintf("wrote %s: %d %s added, up to date at height %d",
				trustPath, added, plural(added, "checkpoint", "checkpoints"), latest))
			return nil
		},
	}
	cmd.Flags().StringVar(&trustPath, "trust", "", "trust file to bring up to date (rewritten in place)")
	cmd.Flags().StringVar(&rpc, "rpc", "", "CometBFT RPC URL of a node of the chain, e.g. http://127.0.0.1:26657")
	return cmd
}

// printCheckpoints lists the checkpoints from index from on.
func printCheckpoints(w io.Writer, t *evidence.Trust, from int) {
	for i := from; i < len(t.Checkpoints); i++ {
		c := t.Checkpoints[i]
		n := c.Validators.Size()
		fmt.Fprintln(w, safetext.Sprintf("checkpoint %d: from height %d, %d %s (set %X), header %X, verified from the set before it",
			i+1, c.Height, n, plural(n, "validator", "validators"), c.Validators.Hash(), c.HeaderHash))
	}
}

// validatorKinds are the proposal kinds that change the validator set.
var validatorKinds = map[string]bool{
	anchor.KindAddValidator: true, anchor.KindRemoveValidator: true, anchor.KindSetValidatorPower: true,
}

// updateTrust appends to t a checkpoint for every validator set change the
// chain at rpc made after t's last one, each verified by
// Trust.AppendCheckpoint. The changes are found from the ledger's executed
// validator proposals (CometBFT applies a change made by block e from
// block e+2); each is confirmed by the headers (the set named by block c-1
// is t's last set, block c names another), and the latest header must name
// t's last set once the checkpoints are added. It returns how many it
// added and the latest height. t is left as it was on error.
func updateTrust(ctx context.Context, t *evidence.Trust, rpc string) (added int, latest int64, err error) {
	cli, err := rpchttp.New(rpc, "/websocket")
	if err != nil {
		return 0, 0, usageErr(fmt.Errorf("ledger trust update: --rpc: %w", err))
	}
	st, err := cli.Status(ctx)
	if err != nil {
		return 0, 0, ioErr(fmt.Errorf("ledger trust update: node status: %w", err))
	}
	if st.NodeInfo.Network != t.ChainID {
		return 0, 0, checkFailed(fmt.Errorf("ledger trust update: the node is of chain %q, the trust file of chain %q", st.NodeInfo.Network, t.ChainID))
	}
	latest = st.SyncInfo.LatestBlockHeight
	q, err := cli.ABCIQuery(ctx, "/proposals", nil)
	if err != nil {
		return 0, 0, ioErr(fmt.Errorf("ledger trust update: query /proposals: %w", err))
	}
	if q.Response.Code != 0 {
		return 0, 0, checkFailed(fmt.Errorf("ledger trust update: query /proposals: code %d: %s", q.Response.Code, q.Response.Log))
	}
	var props []anchor.ProposalRecord
	if err := json.Unmarshal(q.Response.Value, &props); err != nil {
		return 0, 0, checkFailed(fmt.Errorf("ledger trust update: the node's /proposals answer: %w", err))
	}
	seen := map[int64]bool{}
	var candidates []int64
	for _, p := range props {
		if !validatorKinds[p.Kind] || p.Status != "executed" || p.ExecutedHeight <= 0 {
			continue
		}
		c := p.ExecutedHeight + 2
		if c <= t.LastHeight() || c > latest || seen[c] {
			continue
		}
		seen[c] = true
		candidates = append(candidates, c)
	}
	sort.Slice(candidates, func(i, j int) bool { return candidates[i] < candidates[j] })

	work := *t
	work.Checkpoints = append([]evidence.Checkpoint(nil), t.Checkpoints...)
	for _, c := range candidates {
		sh, err := commitAt(ctx, cli, c)
		if err != nil {
			return 0, 0, err
		}
		last := work.LastValidators().Hash()
		if bytes.Equal(sh.ValidatorsHash, last) {
			continue // changes that cancelled out
		}
		before, err := commitAt(ctx, cli, c-1)
		if err != nil {
			return 0, 0, err
		}
		if c-1 > work.LastHeight() && !bytes.Equal(before.ValidatorsHash, last) {
			return 0, 0, checkFailed(fmt.Errorf("ledger trust update: block %d names validator set %X, not the trust file's set from height %d (%X), and no executed validator proposal says when it changed",
				c-1, before.ValidatorsHash, work.LastHeight(), last))
		}
		vals, err := validatorsAt(ctx, cli, c)
		if err != nil {
			return 0, 0, err
		}
		if err := work.AppendCheckpoint(sh, vals); err != nil {
			return 0, 0, checkFailed(fmt.Errorf("ledger trust update: the node's block %d: %w", c, err))
		}
	}
	if latest > work.LastHeight() {
		sh, err := commitAt(ctx, cli, latest)
		if err != nil {
			return 0, 0, err
		}
		if last := work.LastValidators().Hash(); !bytes.Equal(sh.ValidatorsHash, last) {
			return 0, 0, checkFailed(fmt.Errorf("ledger trust update: the latest block %d names validator set %X, not the trust file's set from height %d (%X), and no executed validator proposal says when it changed",
				latest, sh.ValidatorsHash, work.LastHeight(), last))
		}
	}
	added = len(work.Checkpoints) - len(t.Checkpoints)
	*t = work
	return added, latest, nil
}

// commitAt is the node's signed header at height h.
func commitAt(ctx context.Context, cli *rpchttp.HTTP, h int64) (*types.SignedHeader, error) {
	res, err := cli.Commit(ctx, &h)
	if err != nil {
		return nil, ioErr(fmt.Errorf("ledger trust update: commit at %d: %w", h, err))
	}
	if res.SignedHeader.Header == nil || res.SignedHeader.Commit == nil {
		return nil, checkFailed(fmt.Errorf("ledger trust update: the node has no signed header at %d", h))
	}
	sh := res.SignedHeader
	return &sh, nil
}

// validatorsAt is the node's full validator set at height h.
func validatorsAt(ctx context.Context, cli *rpchttp.HTTP, h int64) (vs *types.ValidatorSet, err error) {
	var vals []*types.Validator
	perPage := 100
	for page := 1; page <= 100; page++ {
		res, err := cli.Validators(ctx, &h, &page, &perPage)
		if err != nil {
			return nil, ioErr(fmt.Errorf("ledger trust update: validators at %d: %w", h, err))
		}
		vals = append(vals, res.Validators...)
		if len(vals) >= res.Total || res.Count == 0 {
			break
		}
	}
	defer func() { // types.NewValidatorSet panics on bad input
		if r := recover(); r != nil {
			vs, err = nil, checkFailed(fmt.Errorf("ledger trust update: validators at %d: %v", h, r))
		}
	}()
	return types.NewValidatorSet(vals), nil
}

// writeTrustAtomic writes t to path through a temporary file in the same
// directory, so a crash leaves the old file or the new one.
func writeTrustAtomic(path string, t *evidence.Trust) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".trust-*.json")
	if err != nil {
		return err
	}
	name := tmp.Name()
	tmp.Close()
	defer os.Remove(name)
	if err := evidence.WriteTrustFile(name, t); err != nil {
		return err
	}
	return os.Rename(name, path)
}
