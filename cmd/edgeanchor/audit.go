package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/audit"
	"github.com/edgeanchor/edgeanchor/device"
)

func init() { register(newAuditCmd) }

// auditOptions configure runAudit (audit.Options with a progress bar).
type auditOptions struct {
	Gateway  device.DID
	Ledger   string // CometBFT RPC URL
	API      string // gateway HTTP API base URL
	From, To time.Time
	Out      io.Writer // report
	Progress io.Writer // progress bar (nil: none)
}

// auditFinding is one thing the audit found wrong.
type auditFinding = audit.Finding

func newAuditCmd() *cobra.Command {
	var o auditOptions
	var gw, from, to string
	cmd := &cobra.Command{
		Use:   "audit --gateway DID --ledger URL --api URL [--from T --to T]",
		Short: "Check a gateway's anchored history: header chain, records, roots, device sequences",
		Long: `audit walks the gateway's chain of batch headers on the ledger (batch 1, 2, …
until the last, checking each header's signature and its link to the one
before), fetches the records every header covers from the gateway's API,
checks each record (gateway receipt: its path to the commit group's
statement, whose signature is verified once per group; envelope hash, device
signature under the key registered on the ledger), recomputes every Merkle
root, and reports missing batches, records missing or changed, and per-device
sequence gaps and duplicates. Sequences are checked as the set of seqs each
device has among the checked records, not in gseq order: a seq refused for a
retryable reason and stored later as a late fill (docs/protocol.md) closes its
gap. --from/--to (RFC 3339) limit the record checks to batches whose time
window overlaps them (a gap filled outside that window is reported; with
--from, seqs below a device's lowest checked one are not); the chain is always
walked from batch 1. Exit 1 on any finding.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			var missing []string
			for _, r := range []struct{ v, flag string }{{gw, "--gateway"}, {o.Ledger, "--ledger"}, {o.API, "--api"}} {
				if r.v == "" {
					missing = append(missing, r.flag)
				}
			}
			switch len(missing) {
			case 0:
			case 1:
				return usageErr(fmt.Errorf("audit: %s is required (see audit --help)", missing[0]))
			default:
				return usageErr(fmt.Errorf("audit: %s are required (see audit --help)", strings.Join(missing, ", ")))
			}
			if o.Gateway, err = device.ParseDID(gw); err != nil {
				return usageErr(fmt.Errorf("audit: --gateway: %w", err))
			}
			for _, f := range []struct {
				s   string
				dst *time.Time
				n   string
			}{{from, &o.From, "--from"}, {to, &o.To, "--to"}} {
				if f.s == "" {
					continue
				}
				if *f.dst, err = time.Parse(time.RFC3339Nano, f.s); err != nil {
					return usageErr(fmt.Errorf("audit: %s: want RFC 3339: %w", f.n, err))
				}
			}
			o.Out, o.Progress = cmd.OutOrStdout(), cmd.ErrOrStderr()
			findings, err := runAudit(cmd.Context(), o)
			if err != nil {
				return failedOrIO(err)
			}
			if len(findings) > 0 {
				return checkFailed(fmt.Errorf("audit: %d finding(s)", len(findings)))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&gw, "gateway", "", "gateway DID")
	cmd.Flags().StringVar(&o.Ledger, "ledger", "", "CometBFT RPC URL of a ledger node")
	cmd.Flags().StringVar(&o.API, "api", "", "gateway HTTP API base URL (http://host:8480)")
	cmd.Flags().StringVar(&from, "from", "", "only check records of batches ending at or after this time (RFC 3339)")
	cmd.Flags().StringVar(&to, "to", "", "only check records of batches starting at or before this time (RFC 3339)")
	return cmd
}

// runAudit runs the audit (package audit) with a progress bar on
// o.Progress.
func runAudit(ctx context.Context, o auditOptions) ([]auditFinding, error) {
	ao := audit.Options{Gateway: o.Gateway, Ledger: o.Ledger, API: o.API, From: o.From, To: o.To, Out: o.Out}
	var bar *progressbar.ProgressBar
	if o.Progress != nil {
		ao.Progress = func(done, total uint64) {
			if bar == nil {
				bar = progressbar.NewOptions64(int64(total), progressbar.OptionSetWriter(o.Progress),
					progressbar.OptionSetDescription("batches"), progressbar.OptionShowCount(),
					progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
			}
			_ = bar.Set64(int64(done))
			if done == total {
				_ = bar.Finish()
			}
		}
	}
	return audit.Run(ctx, ao)
}
