// Command ledgernode runs one ledger validator from its home until SIGINT or
// SIGTERM, as `edgeanchor ledger start --home DIR` does: CometBFT with the
// edgeanchor application in-process, logs on stderr, the application's
// metrics on the home's Prometheus listener. It is the node process of
// ledgertest's clusters, so that the ledger's test helpers build nothing
// above the ledger. Used only by tests and benchmarks.
//
//	ledgernode --home DIR
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/ledger"
)

func main() {
	home := flag.String("home", "", "validator home (made by ledger.Testnet or ledger.InitHome)")
	flag.Parse()
	if *home == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: ledgernode --home DIR")
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// CometBFT serves the default registry on its Prometheus listener, so
	// the application's metrics go there too.
	node, err := ledger.StartNode(ctx, *home, ledger.NodeOptions{Logger: log, Registerer: prometheus.DefaultRegisterer})
	if err != nil {
		fmt.Fprintf(os.Stderr, "ledgernode: %v\n", err)
		os.Exit(1)
	}
	<-ctx.Done()
	log.Info("ledger stopping")
	if err := node.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "ledgernode: %v\n", err)
		os.Exit(1)
	}
}
