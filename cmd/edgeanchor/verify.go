package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/anchor"
)

func init() { register(newVerifyCmd) }

func newVerifyCmd() *cobra.Command {
	var trustPath, ledgerURL string
	cmd := &cobra.Command{
		Use:   "verify BUNDLE --trust TRUST.json [--ledger URL]",
		Short: "Verify a record's proof bundle offline, step by step",
		Long: `verify checks one record's proof bundle (docs/proof-bundle.md) against a
trusted validator set, offline: the device's signature, the device's key
registered on the ledger, the gateway's receipt, the Merkle path to the batch
root, the gateway's header signature, and the anchor transaction in a block
signed by 2/3+ of the trusted validators with result code 0. It prints each
step with ✓ or ✗ and exits 1 at the first failure.

With --ledger it also asks a live node whether the device was revoked since
and whether the gateway's header chain on the ledger still holds the batch.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if trustPath == "" {
				return &exitError{code: 2, err: errors.New("verify: --trust is required")}
			}
			return runVerify(cmd.Context(), cmd.OutOrStdout(), args[0], trustPath, ledgerURL)
		},
	}
	cmd.Flags().StringVar(&trustPath, "trust", "", "trust file (edgeanchor ledger trust export)")
	cmd.Flags().StringVar(&ledgerURL, "ledger", "", "also check the live chain at this CometBFT RPC URL")
	return cmd
}

func runVerify(ctx context.Context, out io.Writer, bundlePath, trustPath, ledgerURL string) error {
	fail := func(step string, err error) error {
		fmt.Fprintf(out, "✗ %s: %v\n", step, err)
		return &exitError{code: 1, err: fmt.Errorf("verify: %s: %w", step, err)}
	}
	trust, err := anchor.ReadTrustFile(trustPath)
	if err != nil {
		return fail("trust file", err)
	}
	b, err := anchor.ReadBundleFile(bundlePath)
	if err != nil {
		return fail("bundle file", err)
	}
	fmt.Fprintf(out, "bundle %s: record gseq %d of gateway %s (device %s seq %d)\n",
		bundlePath, b.Record.GSeq, b.Record.Gateway, b.Record.DID, b.Record.Seq)
	fmt.Fprintf(out, "trust: chain %s, %s mode, %d validators\n", trust.ChainID, trust.Mode, trust.Validators.Size())
	n := 0
	v, err := b.Verify(trust, func(step, detail string, err error) {
		n++
		if err != nil {
			fmt.Fprintf(out, "✗ %d. %s: %v\n", n, step, err)
			return
		}
		fmt.Fprintf(out, "✓ %d. %s: %s\n", n, step, detail)
	})
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("verify: %w", err)}
	}
	if ledgerURL != "" {
		if err := verifyLive(ctx, out, v, ledgerURL); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "OK: record %s seq %d is anchored in batch %d at height %d\n",
		v.Record.DID, v.Record.Seq, v.Header.Seq, v.AnchorHeight)
	return nil
}

// verifyLive asks a live node what has happened since the bundle was made.
func verifyLive(ctx context.Context, out io.Writer, v *anchor.Verified, url string) error {
	fail := func(step string, err error) error {
		fmt.Fprintf(out, "✗ %s: %v\n", step, err)
		return &exitError{code: 1, err: fmt.Errorf("verify: %s: %w", step, err)}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := anchor.NewClient(url, anchor.ClientOptions{Retries: 1})
	if err != nil {
		return fail("live: ledger", err)
	}
	defer c.Close()
	const stepDevice = "live: device status"
	d, err := c.Device(ctx, v.Record.DID)
	if err != nil {
		return fail(stepDevice, err)
	}
	switch {
	case d.Status == "revoked" && d.RevokedHeight <= v.AnchorHeight:
		return fail(stepDevice, fmt.Errorf("revoked at height %d, before the anchor at %d (%s)", d.RevokedHeight, v.AnchorHeight, d.RevokeReason))
	case d.Status == "revoked":
		fmt.Fprintf(out, "! %s: revoked at height %d (%s), after this record was anchored at %d\n", stepDevice, d.RevokedHeight, d.RevokeReason, v.AnchorHeight)
	default:
		fmt.Fprintf(out, "✓ %s: %s, registered at height %d\n", stepDevice, d.Status, d.Height)
	}
	const stepBatch = "live: batch on the ledger"
	br, err := c.Batch(ctx, v.Header.Gateway, v.Header.Seq)
	if err != nil {
		return fail(stepBatch, err)
	}
	if br.Hash != v.HeaderHash || br.Height != v.AnchorHeight {
		return fail(stepBatch, fmt.Errorf("ledger holds header %s at height %d, bundle %s at %d", br.Hash, br.Height, v.HeaderHash, v.AnchorHeight))
	}
	fmt.Fprintf(out, "✓ %s: batch %d hash %s at height %d\n", stepBatch, v.Header.Seq, br.Hash, br.Height)
	last, err := c.LastBatch(ctx, v.Header.Gateway)
	if err != nil {
		return fail("live: newer headers", err)
	}
	lh, err := anchor.ParseHeader(last.Header)
	if err != nil {
		return fail("live: newer headers", err)
	}
	fmt.Fprintf(out, "✓ live: newer headers: the gateway's chain is at batch %d (%d after this one), height %d\n", lh.Seq, lh.Seq-v.Header.Seq, last.Height)
	return nil
}
