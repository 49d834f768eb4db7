package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/safetext"
	"github.com/edgeanchor/edgeanchor/wages"
)

func init() {
	register(newWagesCmd)
	register(newVerifyPackCmd)
}

func newWagesCmd() *cobra.Command {
	var gw, api, trustPath, period, zone, due, format, saltFile, idsFile, packWorker, packOut string
	var dueDays int
	var floor int64
	cmd := &cobra.Command{
		Use:   "wages --gateway DID --api URL --trust TRUST.json --period YYYY-MM",
		Short: "Wage report of a site and pay period from anchored payroll records",
		Long: `wages reads the gateway's anchored log from the last batch anchored before the
period starts through its newest anchored batch, verifies every batch's anchor
against the trust file and every record (receipt, Merkle root, device
signature under the key registered on the ledger), and reports per worker
reference: days attended (site-local dates, in --zone, with an "in" record
anchored by the due date), the wage records for the period with the ledger's
"anchored no later than" time, and a status: paid_on_time, paid_late,
unpaid_at_due_date, below_floor, paid_without_attendance, cannot_conclude
(docs/wages.md). Where the log is not complete through the due date every
worker is cannot_conclude and the report names the missing batch or record.

--salt-file and --ids name the site's salt and the inspector's list of
"ID,name" lines: names are shown next to the references they hash to. Both
stay on this machine: nothing of them is sent or logged.

Exit status: 0 report made (whatever it finds), 1 the log is not complete
through the due date, 2 usage or I/O.`,
		Example: `  edgeanchor wages --gateway did:ea:… --api http://127.0.0.1:8480 --trust trust.json --period 2026-10 --floor-fen 20000
  edgeanchor wages … --format csv > 2026-10.csv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var missing []string
			for _, r := range []struct{ v, flag string }{{gw, "--gateway"}, {api, "--api"}, {trustPath, "--trust"}, {period, "--period"}} {
				if r.v == "" {
					missing = append(missing, r.flag)
				}
			}
			if len(missing) > 0 {
				return usageErr(fmt.Errorf("wages: %s required (see wages --help)", strings.Join(missing, ", ")))
			}
			did, err := device.ParseDID(gw)
			if err != nil {
				return usageErr(fmt.Errorf("wages: --gateway: %w", err))
			}
			loc, err := wages.ParseZone(zone)
			if err != nil {
				return usageErr(fmt.Errorf("wages: --zone %q: %w", zone, err))
			}
			o := wages.Options{Gateway: did, Period: period, Zone: loc, DueDays: dueDays, FloorFen: floor}
			if due != "" {
				if o.Due, err = time.Parse(time.RFC3339Nano, due); err != nil {
					return usageErr(fmt.Errorf("wages: --due: want RFC 3339: %w", err))
				}
			}
			if format != "table" && format != "json" && format != "csv" {
				return usageErr(fmt.Errorf("wages: --format %q: want table, json or csv", format))
			}
			if _, _, _, err := o.Window(); err != nil {
				return usageErr(err)
			}
			if o.Trust, err = evidence.ReadTrustFile(trustPath); err != nil {
				return ioErr(fmt.Errorf("wages: --trust: %w", err))
			}
			var names map[string]string
			if (saltFile == "") != (idsFile == "") {
				return usageErr(errors.New("wages: --salt-file and --ids go together"))
			}
			if (packWorker == "") != (packOut == "") {
				return usageErr(errors.New("wages: --pack-worker and --pack-out go together"))
			}
			if saltFile != "" {
				salt, err := os.ReadFile(saltFile)
				if err != nil {
					return ioErr(fmt.Errorf("wages: --salt-file: %w", err))
				}
				f, err := os.Open(idsFile)
				if err != nil {
					return ioErr(fmt.Errorf("wages: --ids: %w", err))
				}
				saltBytes, err := hex.DecodeString(strings.TrimSpace(string(salt)))
				if err != nil {
					f.Close()
					return usageErr(fmt.Errorf("wages: --salt-file: want the salt in hex: %w", err))
				}
				names, err = wages.Names(saltBytes, f)
				f.Close()
				if err != nil {
					return usageErr(fmt.Errorf("wages: --ids: %w", err))
				}
			}
			ev, err := wages.Collect(cmd.Context(), &wages.Gateway{API: api}, o)
			if err != nil {
				return ioErr(err)
			}
			rep, err := wages.Build(ev, o, names)
			if err != nil {
				return usageErr(err)
			}
			if packWorker != "" {
				p, err := wages.MakePack(ev, o, packWorker)
				if err != nil {
					return checkFailed(err)
				}
				b, err := p.Encode()
				if err != nil {
					return ioErr(err)
				}
				if err := os.WriteFile(packOut, b, 0o600); err != nil {
					return ioErr(fmt.Errorf("wages: --pack-out: %w", err))
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "evidence pack of %d bytes written to %s\n", len(b), packOut)
				return nil
			}
			out := cmd.OutOrStdout()
			switch format {
			case "json":
				err = rep.WriteJSON(out)
			case "csv":
				err = rep.WriteCSV(out)
			default:
				err = rep.WriteTable(out)
			}
			if err != nil {
				return ioErr(err)
			}
			if !rep.Complete {
				return checkFailed(fmt.Errorf("wages: the anchored log is not complete through the due date (%d item(s) missing)", len(rep.Missing)))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&gw, "gateway", "", "the site's gateway DID")
	f.StringVar(&api, "api", "", "gateway HTTP API base URL (http://host:8480)")
	f.StringVar(&trustPath, "trust", "", "trust file (ledger export-trust) every record is verified against")
	f.StringVar(&period, "period", "", "pay period, YYYY-MM")
	f.StringVar(&zone, "zone", "Asia/Shanghai", "the site's time zone (IANA name or ±hh:mm): days attended are its local dates")
	f.IntVar(&dueDays, "due-days", wages.DefaultDueDays, "wages are due at 00:00 site time this many days after the period's last day")
	f.StringVar(&due, "due", "", "the due date itself (RFC 3339; overrides --due-days)")
	f.Int64Var(&floor, "floor-fen", 0, "daily floor in fen: paid less than this per day attended is below_floor (0: no floor)")
	f.StringVar(&format, "format", "table", "table, json or csv")
	f.StringVar(&saltFile, "salt-file", "", "file holding the site's salt in hex (local only; with --ids)")
	f.StringVar(&idsFile, "ids", "", `"ID,name" lines whose references get names (local only; with --salt-file)`)
	f.StringVar(&packWorker, "pack-worker", "", "write the evidence pack of this worker reference (with --pack-out) instead of the report")
	f.StringVar(&packOut, "pack-out", "", "evidence pack file to write (mode 0600)")
	return cmd
}

func newVerifyPackCmd() *cobra.Command {
	var trustPath string
	cmd := &cobra.Command{
		Use:   "verify-pack PACK.json --trust TRUST.json",
		Short: "Verify a wage evidence pack offline and print what it proves",
		Long: `verify-pack checks a wage evidence pack (edgeanchor wages --pack-worker)
offline against the trust file, step by step: the pack's form, the trust
file, every batch header anchored in a block signed by the trusted
validators, the header chain from before the period through the first batch
anchored after the due date, every record of those batches (receipts,
recomputed Merkle roots), every device's sequence without gaps, and the
worker's records under their devices' registered keys. It prints the
conclusion ("worker R attended 22 days in 2026-10; no wage record for
2026-10 was anchored by …"). Exit status: 0 verified, 1 a step failed
(named), 2 usage or I/O.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if trustPath == "" {
				return usageErr(errors.New("verify-pack: --trust is required"))
			}
			trust, err := evidence.ReadTrustFile(trustPath)
			if err != nil {
				return ioErr(fmt.Errorf("verify-pack: --trust: %w", err))
			}
			data, err := os.ReadFile(args[0])
			if err != nil {
				return ioErr(fmt.Errorf("verify-pack: %w", err))
			}
			out := cmd.OutOrStdout()
			n := 0
			res, err := wages.VerifyPack(data, trust, func(step, detail string, err error) {
				n++
				if err != nil {
					fmt.Fprintln(out, safetext.Sprintf("✗ %d. %s: %v", n, step, err))
					return
				}
				fmt.Fprintln(out, safetext.Sprintf("✓ %d. %s: %s", n, step, detail))
			})
			if err != nil {
				return checkFailed(fmt.Errorf("verify-pack: %w", err))
			}
			fmt.Fprintln(out, safetext.Sprintf("proven: %s", res.Conclusion))
			return nil
		},
	}
	cmd.Flags().StringVar(&trustPath, "trust", "", "trust file (ledger export-trust)")
	return cmd
}
