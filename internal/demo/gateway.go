package demo

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway"
)

// startGateway assembles the gateway the way `edgeanchor gateway` does
// (gateway.New with Deps.Ledger) and runs it until
// ctx ends; the channel receives Run's result. It returns once every
// listener is bound.
func startGateway(ctx context.Context, cfg gateway.Config, signer device.Signer, log *slog.Logger, reg *prometheus.Registry) (<-chan error, error) {
	client, err := ledgerclient.NewClient(cfg.LedgerRPC, ledgerclient.ClientOptions{Logger: log.With("component", "ledger")})
	if err != nil {
		return nil, err
	}
	g, err := gateway.New(cfg, gateway.Deps{Logger: log, Registerer: reg, Gatherer: reg, Signer: signer, Ledger: client})
	if err != nil {
		client.Close()
		return nil, err
	}
	done := make(chan error, 1)
	go func() {
		err := g.Run(ctx)
		client.Close()
		done <- err
	}()
	return done, nil
}
