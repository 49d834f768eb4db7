package demo

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway"
)

// startGateway assembles the gateway (ledger client, identity cache,
// enroller, batcher, anchorer) and runs it until ctx ends; the channel
// receives Run's result. Temporary: to be replaced by the assembly of
// `edgeanchor gateway` once it lands, so that the demo runs the same code.
func startGateway(ctx context.Context, cfg gateway.Config, signer device.Signer, log *slog.Logger, reg *prometheus.Registry) (<-chan error, error) {
	client, err := anchor.NewClient(cfg.LedgerRPC, anchor.ClientOptions{Logger: log.With("component", "ledger-client")})
	if err != nil {
		return nil, err
	}
	cache := gateway.NewIdentityCache(signer.DID(), client, log.With("component", "identity"))
	tokens, err := gateway.OpenTokenStore(cfg.DataDir)
	if err != nil {
		client.Close()
		return nil, err
	}
	enr := gateway.NewEnroller(gateway.EnrollerOptions{Gateway: signer, Window: cfg.CredentialWindow, Logger: log.With("component", "enroll")}, tokens, cache, client)
	g, err := gateway.New(cfg, gateway.Deps{
		Logger: log, Registerer: reg, Gatherer: reg, Signer: signer, Registry: cache, Enroller: enr.Enroll,
		LedgerPing: func(ctx context.Context) error { _, err := client.Height(ctx); return err },
	})
	if err != nil {
		client.Close()
		return nil, err
	}
	cache.OnRevoke(func(did device.DID) { g.Broker().DisconnectDevice(did, "revoked") })
	metrics := gateway.NewAnchorMetrics(reg)
	blog := gateway.NewBatchLog(g.Store().DB(), "batch/")
	srv := g.Broker().Server()
	anchorer, err := gateway.NewAnchorer(blog, g.Store(), client, gateway.AnchorerConfig{
		Gateway: signer.DID(), Log: log.With("component", "anchorer"), Metrics: metrics,
		Publish: func(topic string, payload []byte) error { return srv.Publish(topic, payload, false, 1) },
	})
	if err != nil {
		g.Close()
		client.Close()
		return nil, err
	}
	batcher, err := gateway.NewBatcher(g.Store(), blog, gateway.BatcherConfig{
		Interval: cfg.BatchInterval, MaxRecords: cfg.BatchSize, Signer: signer,
		OnBatch: func(*gateway.StoredBatch) { anchorer.Wake() },
		Log:     log.With("component", "batcher"), Metrics: metrics,
	})
	if err != nil {
		g.Close()
		client.Close()
		return nil, err
	}
	g.Go("identity", cache.Run)
	g.Go("batcher", batcher.Run)
	g.Go("anchorer", anchorer.Run)
	done := make(chan error, 1)
	go func() {
		err := g.Run(ctx)
		client.Close()
		done <- err
	}()
	return done, nil
}
