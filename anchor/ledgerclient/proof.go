package ledgerclient

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	ctypes "github.com/cometbft/cometbft/rpc/core/types"
	"github.com/cometbft/cometbft/types"

	"github.com/edgeanchor/edgeanchor/anchor/evidence"
)

// indexLag is how long ProveAnchor waits for the node's tx index to find a
// tx before it says ErrNotFound.
const indexLag = 3 * time.Second

// ProveAnchor builds the AnchorProof of a committed tx (given its bytes). It
// waits (up to CommitTimeout) for the next block, whose header carries the
// tx's result hash. It returns ErrNotFound if the tx did not commit.
func (c *Client) ProveAnchor(ctx context.Context, tx []byte) (*evidence.AnchorProof, error) {
	hash := types.Tx(tx).Hash()
	var res *ctypes.ResultTx
	// The node indexes a block's txs shortly after committing it: a tx
	// whose commit was just seen may take a moment to be found.
	for deadline := time.Now().Add(indexLag); ; {
		err := c.call(ctx, "tx", func(ctx context.Context) error {
			var e error
			res, e = c.rpc.Tx(ctx, hash, true)
			return e
		})
		if err == nil {
			break
		}
		if !strings.Contains(rpcErrorData(err), "not found") {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: tx %X", ErrNotFound, hash)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(c.opts.PollInterval):
		}
	}
	if !bytes.Equal(res.Tx, tx) {
		return nil, fmt.Errorf("ledgerclient: node returned other bytes for tx %X", hash)
	}
	h := res.Height
	if err := c.waitHeight(ctx, h+1); err != nil {
		return nil, err
	}
	sh, err := c.signedHeader(ctx, h)
	if err != nil {
		return nil, err
	}
	vals, err := c.validatorSet(ctx, h)
	if err != nil {
		return nil, err
	}
	next, err := c.signedHeader(ctx, h+1)
	if err != nil {
		return nil, err
	}
	var nextVals *types.ValidatorSet
	if !bytes.Equal(next.ValidatorsHash, vals.Hash()) {
		if nextVals, err = c.validatorSet(ctx, h+1); err != nil {
			return nil, err
		}
	}
	var rr *ctypes.ResultBlockResults
	err = c.call(ctx, "block_results", func(ctx context.Context) error {
		var e error
		rr, e = c.rpc.BlockResults(ctx, &h)
		return e
	})
	if err != nil {
		return nil, err
	}
	results := types.NewResults(rr.TxsResults)
	if !bytes.Equal(results.Hash(), next.LastResultsHash) {
		return nil, fmt.Errorf("ledgerclient: block_results of %d hash to %X, next header says %X", h, results.Hash(), next.LastResultsHash)
	}
	if int(res.Index) >= len(results) {
		return nil, fmt.Errorf("ledgerclient: tx index %d beyond %d results", res.Index, len(results))
	}
	r := results[res.Index]
	p := &evidence.AnchorProof{
		ChainID: sh.ChainID, Height: h, Index: res.Index, Tx: tx, TxProof: res.Proof.Proof,
		Header: sh, Validators: vals, NextHeader: next, NextValidators: nextVals,
		Result:      abci.ExecTxResult{Code: r.Code, Data: r.Data, GasWanted: r.GasWanted, GasUsed: r.GasUsed},
		ResultProof: results.ProveResult(int(res.Index)),
	}
	return p, nil
}

// waitHeight polls until the latest height is at least h (bounded by
// CommitTimeout).
func (c *Client) waitHeight(ctx context.Context, h int64) error {
	deadline := time.Now().Add(c.opts.CommitTimeout)
	for {
		latest, err := c.Height(ctx)
		if err != nil {
			return err
		}
		if latest >= h {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: height %d not reached (at %d)", ErrCommitTimeout, h, latest)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(c.opts.PollInterval):
		}
	}
}

// ProveTxHash is ProveAnchor for a committed tx known only by its CometBFT
// hash (hex): the gateway uses it for a device's RegisterDevice tx, whose
// hash the ledger's device record names. ErrNotFound if it never committed.
func (c *Client) ProveTxHash(ctx context.Context, txHash string) (*evidence.AnchorProof, error) {
	h, err := hex.DecodeString(txHash)
	if err != nil || len(h) != 32 {
		return nil, fmt.Errorf("ledgerclient: tx hash %q: want 64 hex digits", txHash)
	}
	var res *ctypes.ResultTx
	err = c.call(ctx, "tx", func(ctx context.Context) error {
		var e error
		res, e = c.rpc.Tx(ctx, h, false)
		return e
	})
	if err != nil {
		if strings.Contains(rpcErrorData(err), "not found") {
			return nil, fmt.Errorf("%w: tx %s", ErrNotFound, txHash)
		}
		return nil, err
	}
	return c.ProveAnchor(ctx, res.Tx)
}

// ExportTrust builds a header-mode trust from a node's RPC: the signed header
// and validator set at height (0 = the latest height), checked to be
// consistent. Whoever runs it trusts that node at that moment.
func ExportTrust(ctx context.Context, rpcURL string, height int64) (*evidence.Trust, error) {
	c, err := NewClient(rpcURL, ClientOptions{})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ExportTrust(ctx, height)
}

// ExportTrust is ExportTrust over an existing client.
func (c *Client) ExportTrust(ctx context.Context, height int64) (*evidence.Trust, error) {
	if height <= 0 {
		h, err := c.Height(ctx)
		if err != nil {
			return nil, err
		}
		height = h
	}
	sh, err := c.signedHeader(ctx, height)
	if err != nil {
		return nil, err
	}
	vals, err := c.validatorSet(ctx, height)
	if err != nil {
		return nil, err
	}
	t := &evidence.Trust{
		Version:        evidence.TrustVersion,
		Mode:           evidence.TrustModeHeader,
		ChainID:        sh.ChainID,
		Height:         sh.Height,
		HeaderHash:     sh.Hash(),
		Header:         sh,
		Validators:     vals,
		TrustingPeriod: evidence.DefaultTrustingPeriod,
		Exported:       time.Now().UTC(),
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return t, nil
}
