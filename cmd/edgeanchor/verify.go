package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/internal/safetext"
)

func init() { register(newVerifyCmd) }

func newVerifyCmd() *cobra.Command {
	var trustPath, ledgerURL string
	cmd := &cobra.Command{
		Use:   "verify BUNDLE --trust TRUST.json [--ledger URL]",
		Short: "Verify a record's proof bundle offline, step by step",
		Long: `verify checks one record's proof bundle (docs/proof-bundle.md) against a
trusted validator set, offline: first the trust file itself (it must name
exactly the validator set of the bundle's blocks), then the device's
signature, the device's key registered on the ledger, the gateway's receipt,
the Merkle path to the batch root, the gateway's header signature, and the
anchor transaction in a block signed by 2/3+ of the trusted validators with
result code 0. It prints each step with ✓ or ✗ and stops at the first
failure. Every text taken from the bundle, the trust file or a node is
printed escaped (a line break shows as \n).

With --ledger it also asks a live node whether the device was revoked since
and whether the gateway's header chain on the ledger still holds the batch.

Exit status: 0 verified; 1 the bundle or the trust file does not verify (or
is malformed), or the live ledger contradicts it; 2 usage or I/O error (a
file that cannot be read, a node that cannot be reached).`,
		Example: `  edgeanchor ledger export-trust --home ./var/ledger --out trust.json   # once, from a source you trust
  edgeanchor verify rec.json --trust trust.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if trustPath == "" {
				return usageErr(errors.New("verify: --trust is required"))
			}
			return runVerify(cmd.Context(), cmd.OutOrStdout(), args[0], trustPath, ledgerURL)
		},
	}
	cmd.Flags().StringVar(&trustPath, "trust", "", "trust file (edgeanchor ledger export-trust)")
	cmd.Flags().StringVar(&ledgerURL, "ledger", "", "also check the live chain at this CometBFT RPC URL")
	return cmd
}

// stepNumber is the 1-based number of a verification step, 0 for the trust
// file check that comes before them.
func stepNumber(step string) int {
	for i, s := range evidence.Steps {
		if s == step {
			return i + 1
		}
	}
	return 0
}

func runVerify(ctx context.Context, out io.Writer, bundlePath, trustPath, ledgerURL string) error {
	// fail prints the failed step (escaped: a trust file's or a bundle's
	// error can quote their content) and returns exit 1, or 2 if it was an
	// I/O error.
	fail := func(step string, err error) error {
		fmt.Fprintf(out, "✗ %s: %s\n", step, safetext.Escape(err.Error()))
		return failedOrIO(fmt.Errorf("verify: %s: %w", step, err))
	}
	trust, err := evidence.ReadTrustFile(trustPath)
	if err != nil {
		return fail(evidence.StepTrustFile, err)
	}
	b, err := evidence.ReadBundleFile(bundlePath)
	if err != nil {
		return fail("bundle file", err)
	}
	fmt.Fprintln(out, safetext.Sprintf("bundle %s: record gseq %d of gateway %s (device %s seq %d)",
		bundlePath, b.Record.GSeq, b.Record.Gateway, b.Record.DID, b.Record.Seq))
	v, err := b.Verify(trust, func(step, detail string, err error) {
		mark, text := "✓", detail
		if err != nil {
			mark, text = "✗", err.Error()
		}
		if n := stepNumber(step); n > 0 {
			fmt.Fprintln(out, safetext.Sprintf("%s %d. %s: %s", mark, n, step, text))
		} else {
			fmt.Fprintln(out, safetext.Sprintf("%s %s: %s", mark, step, text))
		}
	})
	if err != nil {
		return checkFailed(fmt.Errorf("verify: %w", err))
	}
	if ledgerURL != "" {
		if err := verifyLive(ctx, out, v, ledgerURL); err != nil {
			return err
		}
	}
	fmt.Fprintln(out, safetext.Sprintf("OK: record %s seq %d is in batch %d, anchored at height %d no later than %s",
		v.Record.DID, v.Record.Seq, v.Header.Seq, v.AnchorHeight, v.AnchoredBy))
	return nil
}

// verifyLive asks a live node what has happened since the bundle was made.
func verifyLive(ctx context.Context, out io.Writer, v *evidence.Verified, url string) error {
	fail := func(step string, err error) error {
		fmt.Fprintf(out, "✗ %s: %s\n", step, safetext.Escape(err.Error()))
		return failedOrIO(fmt.Errorf("verify: %s: %w", step, err))
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := ledgerclient.NewClient(url, ledgerclient.ClientOptions{Retries: 1})
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
		fmt.Fprintln(out, safetext.Sprintf("! %s: revoked at height %d (%s), after this record was anchored at %d", stepDevice, d.RevokedHeight, d.RevokeReason, v.AnchorHeight))
	default:
		fmt.Fprintln(out, safetext.Sprintf("✓ %s: %s, registered at height %d", stepDevice, d.Status, d.Height))
	}
	const stepBatch = "live: batch on the ledger"
	br, err := c.Batch(ctx, v.Header.Gateway, v.Header.Seq)
	if err != nil {
		return fail(stepBatch, err)
	}
	if br.Hash != v.HeaderHash || br.Height != v.AnchorHeight {
		return fail(stepBatch, fmt.Errorf("ledger holds header %s at height %d, bundle %s at %d", br.Hash, br.Height, v.HeaderHash, v.AnchorHeight))
	}
	fmt.Fprintln(out, safetext.Sprintf("✓ %s: batch %d hash %s at height %d", stepBatch, v.Header.Seq, br.Hash, br.Height))
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
