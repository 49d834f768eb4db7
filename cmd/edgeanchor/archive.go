package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway"
	"github.com/edgeanchor/edgeanchor/gateway/archive"
	"github.com/edgeanchor/edgeanchor/internal/safetext"
)

func init() {
	register(newArchiveCmd) // and gateway archive: newGatewayCmd adds newGatewayArchiveCmd
}

// parseCutoff reads --before: a date (2026-06-01, midnight UTC) or an RFC
// 3339 time.
func parseCutoff(s string) (time.Time, error) {
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--before %q: want a date (2026-06-01) or an RFC 3339 time", s)
	}
	return t, nil
}

func newGatewayArchiveCmd() *cobra.Command {
	var config, dataDir, before, out, ledgerURL, trustPath string
	var keep bool
	cmd := &cobra.Command{
		Use:   "archive --data-dir DIR --before DATE --out FILE --trust TRUST [--ledger URL]",
		Short: "Move the anchored batches older than a date from a stopped gateway's store into an archive file",
		Long: `Archive the old records of a stopped gateway (docs/operations.md, "Retention").

The anchored batches whose time window ends before --before (a date, midnight
UTC, or an RFC 3339 time) are written to --out with everything their proof
bundles need: the records, the signed batch headers, each batch's anchor proof
and each device's registration proof, fetched from the ledger (--ledger, or
the configuration's ledger_rpc). The newest anchored batch always stays in the
store. The file is then read back and every record's bundle is verified
against --trust; only then are the records and batch headers deleted from the
store, which keeps the archive's name, gseq and batch range: the gateway
answers a proof request for an archived record with 410 and that name, and
"edgeanchor archive proof" makes the bundle from the file.

A crash at any point leaves the store as it was, or (once the deletion has
started) a deletion that the next start of the gateway or of this command
finishes. With --keep the archive is written and verified and nothing is
deleted. Exit 1 when there is nothing to archive or the archive does not
verify (nothing is deleted then); 2 for usage and I/O errors (the store in
use, the ledger unreachable, --out exists).`,
		Example: `  edgeanchor gateway archive --config gateway.yaml --before 2026-06-01 --out site-a-2026-05.ea --trust trust.json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := dataDir
			if config != "" {
				cfg, err := gateway.LoadConfig(config)
				if err != nil {
					return usageErr(err)
				}
				if dir == "" {
					dir = cfg.DataDir
				}
				if ledgerURL == "" {
					ledgerURL = cfg.LedgerRPC
				}
			}
			switch {
			case dir == "":
				return usageErr(errors.New("archive: --data-dir or --config is required"))
			case before == "" || out == "" || trustPath == "":
				return usageErr(errors.New("archive: --before, --out and --trust are required"))
			case ledgerURL == "":
				return usageErr(errors.New("archive: --ledger (or ledger_rpc in --config) is required"))
			}
			cutoff, err := parseCutoff(before)
			if err != nil {
				return usageErr(err)
			}
			info, err := gateway.CheckDataDir(dir)
			if err != nil {
				return ioErr(err)
			}
			if info.Gateway == "" {
				return ioErr(fmt.Errorf("archive: %s has no %s: start the gateway once", dir, gateway.DataDirInfoFile))
			}
			if _, err := os.Stat(out); err == nil {
				return usageErr(fmt.Errorf("archive: %s exists; an archive is never overwritten", out))
			}
			trust, err := evidence.ReadTrustFile(trustPath)
			if err != nil {
				return ioErr(err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 24*time.Hour)
			defer cancel()
			c, err := ledgerclient.NewClient(ledgerURL, ledgerclient.ClientOptions{Retries: 3})
			if err != nil {
				return usageErr(fmt.Errorf("archive: --ledger: %w", err))
			}
			defer c.Close()
			// The batches' own signer's key is looked up by archive.Create
			// (a predecessor's, for batches signed before a key rotation).
			if _, err := c.Gateway(ctx, info.Gateway); err != nil {
				return failedOrIO(fmt.Errorf("archive: gateway %s on the ledger: %w", info.Gateway, err))
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			start := time.Now()
			a, err := archive.Create(ctx, filepath.Join(dir, "records"), archive.Options{
				Before: cutoff, Out: out, Ledger: c, Trust: trust, Logger: log, KeepRecords: keep,
			})
			if err != nil {
				if errors.Is(err, archive.ErrNothingToArchive) {
					return checkFailed(err)
				}
				return failedOrIO(err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintln(w, safetext.Sprintf("archived gseq %d..%d (%d records, batches %d..%d, %d devices) into %s",
				a.FirstGSeq, a.LastGSeq, a.Records, a.FirstBatch, a.LastBatch, a.Devices, out))
			fmt.Fprintf(w, "every record's bundle verified from the archive (sm3 %s) in %s\n", a.SM3, time.Since(start).Round(time.Millisecond))
			if keep {
				fmt.Fprintln(w, "--keep: nothing deleted from the store")
			} else {
				fmt.Fprintln(w, "deleted from the store; keep the archive file (and a copy): proofs of these records now come from it")
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&config, "config", "", "gateway YAML configuration (for data_dir and ledger_rpc)")
	fl.StringVar(&dataDir, "data-dir", "", "the gateway's data directory; wins over --config")
	fl.StringVar(&before, "before", "", "archive the batches that end before this date (2026-06-01) or RFC 3339 time")
	fl.StringVar(&out, "out", "", "the archive file to write (must not exist)")
	fl.StringVar(&ledgerURL, "ledger", "", "CometBFT RPC URL (default: ledger_rpc of --config)")
	fl.StringVar(&trustPath, "trust", "", "trust file: every archived record's bundle must verify under it")
	fl.BoolVar(&keep, "keep", false, "write and verify the archive, delete nothing")
	return cmd
}

func newArchiveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "archive",
		Short: "Read a gateway's archive file: a record's proof bundle, or verify the whole file",
	}
	cmd.AddCommand(newArchiveProofCmd(), newArchiveVerifyCmd())
	return cmd
}

func newArchiveProofCmd() *cobra.Command {
	var path, did, out string
	var gseq, seq uint64
	cmd := &cobra.Command{
		Use:   "proof --archive FILE (--gseq N | --did DID --seq N) [--out BUNDLE]",
		Short: "Write the proof bundle of an archived record, made from the archive file alone",
		Long: `Write the proof bundle (docs/proof-bundle.md) of one record of an archive made
by "edgeanchor gateway archive", from the file alone: no gateway and no
ledger are asked. "edgeanchor verify" checks it as any other bundle.
Exit 1 when the record is not in the archive or the archive is malformed;
2 for usage and I/O errors.`,
		Example: `  edgeanchor archive proof --archive site-a-2026-05.ea --gseq 4 --out rec.json
  edgeanchor verify rec.json --trust trust.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" || (gseq == 0) == (did == "") || (did != "" && seq == 0) {
				return usageErr(errors.New("archive proof: want --archive and either --gseq or --did with --seq"))
			}
			var b *evidence.Bundle
			var err error
			if gseq > 0 {
				b, err = archive.Bundle(path, gseq)
			} else {
				d, perr := device.ParseDID(did)
				if perr != nil {
					return usageErr(fmt.Errorf("archive proof: --did: %w", perr))
				}
				b, err = archive.DeviceBundle(path, d, seq)
			}
			if err != nil {
				return failedOrIO(err)
			}
			enc, err := b.Encode()
			if err != nil {
				return checkFailed(err)
			}
			if out == "" {
				_, err = cmd.OutOrStdout().Write(append(enc, '\n'))
				return err
			}
			if err := os.WriteFile(out, enc, 0o644); err != nil {
				return ioErr(err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), safetext.Sprintf("wrote the bundle of gseq %d (device %s seq %d) to %s",
				b.Record.GSeq, b.Record.DID, b.Record.Seq, out))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&path, "archive", "", "archive file")
	fl.Uint64Var(&gseq, "gseq", 0, "the record's gseq")
	fl.StringVar(&did, "did", "", "the record's device DID (with --seq)")
	fl.Uint64Var(&seq, "seq", 0, "the record's device seq (with --did)")
	fl.StringVar(&out, "out", "", "bundle file to write (default: stdout)")
	return cmd
}

func newArchiveVerifyCmd() *cobra.Command {
	var path, trustPath string
	var workers int
	cmd := &cobra.Command{
		Use:   "verify --archive FILE --trust TRUST",
		Short: "Verify every record's proof bundle of an archive file, offline",
		Long: `Read a whole archive file: its batch chain, every batch's Merkle root, its
end line's SM3 of the file, and every record's proof bundle made from it,
verified against the trust file as "edgeanchor verify" does. Exit 1 at the
first failure (named), 2 for usage and I/O errors.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" || trustPath == "" {
				return usageErr(errors.New("archive verify: --archive and --trust are required"))
			}
			trust, err := evidence.ReadTrustFile(trustPath)
			if err != nil {
				return ioErr(err)
			}
			start := time.Now()
			sum, err := archive.Verify(path, trust, workers)
			if err != nil {
				fmt.Fprintln(cmd.OutOrStdout(), "✗ "+safetext.Escape(err.Error()))
				return failedOrIO(err)
			}
			el := time.Since(start)
			fmt.Fprintln(cmd.OutOrStdout(), safetext.Sprintf("✓ archive of gateway %s: gseq %d..%d, %d batches, %d records, %d devices, sm3 %s; every bundle verified in %s (%s records/s)",
				sum.Gateway, sum.FirstGSeq, sum.LastGSeq, sum.Batches, sum.Records, sum.Devices, sum.SM3, el.Round(time.Millisecond),
				strconv.FormatFloat(float64(sum.Records)/el.Seconds(), 'f', 0, 64)))
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "archive", "", "archive file")
	cmd.Flags().StringVar(&trustPath, "trust", "", "trust file (edgeanchor ledger export-trust)")
	cmd.Flags().IntVar(&workers, "workers", 0, "bundles verified in parallel (default: the CPUs)")
	return cmd
}
