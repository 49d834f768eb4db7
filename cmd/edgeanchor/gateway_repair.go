package main

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/gateway"
)

func newGatewayRepairCmd() *cobra.Command {
	var config, dataDir string
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Repair a damaged record store: keep every intact record, report the gseqs lost",
		Long: `Repair the record store of a stopped gateway ({data_dir}/records) after the
gateway refused to start with "record store damaged".

It first copies the store to records.damaged-TIME beside it (kept: the
evidence as it was), then drops table files that cannot be read, reads back
from the value logs every record and batch whose key was lost with them,
deletes the records whose values are gone, rebuilds the device indexes and the
batch chain, and prints what it kept and the gseq ranges it lost. Devices
whose store-and-forward spools still hold the lost readings can resend them;
"edgeanchor audit" lists what is missing against the ledger. See
docs/operations.md, "A damaged record store".`,
		Args: cobra.NoArgs,
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
			}
			if dir == "" {
				return usageErr(errors.New("--data-dir or --config is required"))
			}
			store := filepath.Join(dir, "records")
			rep, err := gateway.RepairStore(store, time.Now(), slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn})))
			if err != nil {
				return checkFailed(err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "repaired record store %s\n", rep.Dir)
			fmt.Fprintf(out, "damaged copy kept in %s\n", rep.Backup)
			if len(rep.DroppedTables) > 0 {
				fmt.Fprintf(out, "unreadable table files dropped: %s\n", strings.Join(rep.DroppedTables, ", "))
			}
			fmt.Fprintf(out, "records kept: %d (%d read back from the value logs), highest gseq known %d\n",
				rep.Records, rep.FromValueLog, rep.Highest)
			if rep.Batches == 0 {
				fmt.Fprint(out, "batches kept: none")
			} else {
				fmt.Fprintf(out, "batches kept: 1..%d (anchored: %d)", rep.Batches, rep.Anchored)
			}
			if len(rep.DroppedBatch) > 0 {
				fmt.Fprintf(out, "; dropped batches: %v", rep.DroppedBatch)
			}
			fmt.Fprintln(out)
			if len(rep.Lost) == 0 {
				fmt.Fprintln(out, "lost gseqs: none")
				return nil
			}
			ranges := make([]string, len(rep.Lost))
			for i, l := range rep.Lost {
				ranges[i] = l.String()
			}
			fmt.Fprintf(out, "lost gseqs: %s (%d records)\n", strings.Join(ranges, ", "), rep.LostCount())
			fmt.Fprintln(out, "devices whose spools still hold these readings can resend them; run edgeanchor audit to list what the ledger anchored")
			return nil
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "gateway YAML configuration (for data_dir)")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the gateway's data directory (the store is {data-dir}/records); wins over --config")
	return cmd
}
