// Command firmware-sim simulates a fleet of edgeanchor field devices:
// attendance terminals with the site's month-end wage run, survey
// instruments walking parcel boundaries, and dust/noise monitors. Each
// device keeps its SM2 key, sequence counter and store-and-forward spool in
// the state directory, enrolls once with a token from the tokens file, and
// publishes signed readings to the gateway's MQTT broker.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/sim"
	"github.com/edgeanchor/edgeanchor/sim/profile"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "firmware-sim:", err)
		os.Exit(1)
	}
}

type options struct {
	cfg      sim.Config
	start    string
	arrears  string
	logLevel string
	stats    time.Duration
}

func newRoot() *cobra.Command {
	o := &options{cfg: sim.DefaultConfig()}
	root := &cobra.Command{
		Use:   "firmware-sim --gateway tcp://127.0.0.1:1883 --devices 100 --profile mixed --rate 1 --tokens tokens.txt --state ./var/sim [--seed S]",
		Short: "Simulate a fleet of signing field devices against an edgeanchor gateway",
		Long: `firmware-sim runs simulated devices until interrupted (Ctrl-C).

Each device's simulated clock starts at --start (kept in the state directory)
and moves on reading by reading at --rate readings per second until it has
caught up with the wall clock; from then on it follows real time. Envelope
timestamps are the simulated reading times.

Tokens file: one token per line as 'edgeanchor token create' prints them; a
line holding only a device kind (payroll, survey, env) sets the kind of the
tokens below it, e.g.

  (echo payroll; edgeanchor token create --kind payroll --count 10 --data-dir var/gateway
   echo env;     edgeanchor token create --kind env --count 5 --data-dir var/gateway) > tokens.txt

Each token enrolls one device once; which device used which is kept in
{state}/dev-NNNN/device.json.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, log, err := o.open(cmd)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			go o.report(ctx, f, log)
			log.Info("fleet running", "devices", o.cfg.Devices, "profile", o.cfg.Profile, "gateway", o.cfg.Broker,
				"seed", f.Seed(), "start", f.Start().Format(time.RFC3339), "state", o.cfg.StateDir)
			err = f.Run(ctx)
			st := f.Stats()
			log.Info("fleet stopped", "taken", st.Taken, "acked", st.Acked, "spooled", st.Spooled, "dropped", st.Dropped, "refused", st.Refused)
			return err
		},
	}
	fl := root.PersistentFlags()
	fl.StringVar(&o.cfg.Broker, "gateway", o.cfg.Broker, "the gateway's MQTT listener")
	fl.IntVar(&o.cfg.Devices, "devices", o.cfg.Devices, "number of devices")
	fl.StringVar(&o.cfg.Profile, "profile", o.cfg.Profile, "device kinds: "+strings.Join(profile.Profiles, ", "))
	fl.Float64Var(&o.cfg.Rate, "rate", o.cfg.Rate, "readings per second per device while catching up with the wall clock")
	fl.StringVar(&o.cfg.TokensFile, "tokens", "", "enrollment tokens file (needed until every device has enrolled)")
	fl.StringVar(&o.cfg.StateDir, "state", o.cfg.StateDir, "state directory (keys, sequence counters, spools)")
	fl.Uint64Var(&o.cfg.Seed, "seed", 0, "seed for reproducible readings (default: random, kept in the state)")
	fl.StringVar(&o.cfg.Site, "site", o.cfg.Site, "site the devices register for")
	fl.StringVar(&o.start, "start", "", "simulated start time, RFC 3339 (default: 2 days before last month's end; kept in the state)")
	fl.IntVar(&o.cfg.SpoolMax, "spool-max", sim.DefaultSpoolMax, "readings kept per device while the gateway is unreachable; the oldest go first")
	fl.IntVar(&o.cfg.Window, "window", 1, "unacknowledged publishes per device")
	fl.StringVar(&o.arrears, "arrears", "", "seed wage arrears per payroll terminal and month: UNPAID,LATE,BELOW_FLOOR,GHOST worker counts (kept in the state; docs/wages.md)")
	fl.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.DurationVar(&o.stats, "stats", 10*time.Second, "interval of the progress log line (0: none)")
	root.AddCommand(o.newLoadCmd())
	return root
}

func (o *options) open(cmd *cobra.Command) (*sim.Fleet, *slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, nil, fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
	if o.start != "" {
		t, err := time.Parse(time.RFC3339, o.start)
		if err != nil {
			return nil, nil, fmt.Errorf("--start: %w", err)
		}
		o.cfg.Start = t
	}
	if o.arrears != "" {
		var a profile.Arrears
		n, err := fmt.Sscanf(o.arrears, "%d,%d,%d,%d", &a.Unpaid, &a.Late, &a.BelowFloor, &a.Ghost)
		if err != nil || n != 4 || fmt.Sprintf("%d,%d,%d,%d", a.Unpaid, a.Late, a.BelowFloor, a.Ghost) != o.arrears {
			return nil, nil, fmt.Errorf("--arrears %q: want four counts UNPAID,LATE,BELOW_FLOOR,GHOST (e.g. 2,1,1,1)", o.arrears)
		}
		o.cfg.Arrears = a
	}
	o.cfg.Logger = log
	f, err := sim.Open(o.cfg)
	if errors.Is(err, sim.ErrNoToken) && o.cfg.TokensFile == "" {
		err = fmt.Errorf("%w (give --tokens FILE)", err)
	}
	return f, log, err
}

func (o *options) report(ctx context.Context, f *sim.Fleet, log *slog.Logger) {
	if o.stats <= 0 {
		return
	}
	t := time.NewTicker(o.stats)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			st := f.Stats()
			log.Info("fleet", "online", st.Online, "taken", st.Taken, "acked", st.Acked, "spooled", st.Spooled,
				"dropped", st.Dropped, "refused", st.Refused, "connect_failures", st.ConnectFailures)
		}
	}
}

// reportLoad logs a progress line of a load run every --stats until ctx
// ends: publishes sent, acknowledged and refused of the total, and the
// acknowledged rate over the last interval.
func (o *options) reportLoad(ctx context.Context, f *sim.Fleet, log *slog.Logger, messages int) {
	if o.stats <= 0 {
		return
	}
	t := time.NewTicker(o.stats)
	defer t.Stop()
	total := uint64(messages) * uint64(o.cfg.Devices)
	var lastAcked uint64
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			pub, acked, refused := f.LoadProgress()
			rate := float64(acked-lastAcked) / now.Sub(last).Seconds()
			lastAcked, last = acked, now
			log.Info("load", "published", pub, "acked", acked, "refused", refused, "of", total,
				"msgs_per_s", fmt.Sprintf("%.0f", rate))
		}
	}
}

func (o *options) newLoadCmd() *cobra.Command {
	var (
		messages int
		rate     float64
		window   int
	)
	cmd := &cobra.Command{
		Use:   "load --messages N [--total-rate R] [--inflight W]",
		Short: "Load mode: sign N readings per device first, then publish them as fast as allowed",
		Long: `load signs --messages readings per device up front (their sequence numbers
are reserved in the state directory first), connects every device, then
publishes at --total-rate messages/s over the whole fleet (0: as fast as the
in-flight windows allow) and waits for every PUBACK. It logs progress every
--stats and prints the acknowledged rate. Load mode speaks MQTT 5, so a
publish the gateway refuses ends the run with the gateway's reason (e.g.
rate_limited, PUBACK reason code 0x97).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, log, err := o.open(cmd)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rctx, stopReport := context.WithCancel(ctx)
			reported := make(chan struct{})
			go func() {
				defer close(reported)
				o.reportLoad(rctx, f, log, messages)
			}()
			res, err := f.Load(ctx, messages, rate, window)
			stopReport()
			<-reported
			log.Info("load done", "published", res.Published, "acked", res.Acked, "connect", res.Connect,
				"elapsed", res.Elapsed, "msgs_per_s", fmt.Sprintf("%.0f", res.Rate()))
			fmt.Fprintf(cmd.OutOrStdout(), "%d acknowledged in %s: %.0f msgs/s\n", res.Acked, res.Elapsed.Round(time.Millisecond), res.Rate())
			return err
		},
	}
	cmd.Flags().IntVar(&messages, "messages", 1000, "readings per device")
	cmd.Flags().Float64Var(&rate, "total-rate", 0, "publishes per second over the fleet (0: maximum)")
	cmd.Flags().IntVar(&window, "inflight", 16, "unacknowledged publishes per device")
	return cmd
}
