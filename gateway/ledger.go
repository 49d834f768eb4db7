package gateway

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/refusal"
	"github.com/edgeanchor/edgeanchor/gateway/batch"
	"github.com/edgeanchor/edgeanchor/gateway/httpapi"
	"github.com/edgeanchor/edgeanchor/gateway/identity"
)

// IdentitySnapshotFile is the identity cache's snapshot in the data
// directory.
const IdentitySnapshotFile = "identity.json"

// attachLedgerIdentity installs on g (before Run) what ties it to the
// ledger's device registry: the identity cache as the broker's Registry
// (followed in a service, a /readyz check until it has loaded, revoked
// devices disconnected at once), the Enroller for enrollment credentials,
// and the token admin API on g's mux (bearer token from
// http.admin_token_file; none configured turns the API off).
func attachLedgerIdentity(g *Gateway, ledger *ledgerclient.Client) (*identity.Cache, *identity.Enroller, error) {
	cfg := g.Config()
	log := g.Logger()
	tokens, err := identity.OpenTokenStore(cfg.DataDir)
	if err != nil {
		return nil, nil, err
	}
	var bearer string
	if cfg.HTTP.AdminTokenFile != "" {
		b, err := os.ReadFile(cfg.HTTP.AdminTokenFile)
		if err != nil {
			return nil, nil, fmt.Errorf("gateway: admin token: %w", err)
		}
		bearer = strings.TrimSpace(string(b))
		if len(bearer) < 16 {
			return nil, nil, fmt.Errorf("%w: http.admin_token_file holds %d characters, want at least 16", ErrConfig, len(bearer))
		}
	}
	cache := identity.NewCache(g.Signer().DID(), ledger, log.With("component", "identity"))
	if err := cache.UseSnapshot(filepath.Join(cfg.DataDir, IdentitySnapshotFile)); err != nil {
		return nil, nil, err
	}
	b := g.Broker()
	cache.OnRevoke(func(did device.DID) { b.DisconnectDevice(did, refusal.Revoked) })
	b.SetRegistry(cache)
	enr := identity.NewEnroller(identity.EnrollerOptions{Gateway: g.Signer(), Window: cfg.CredentialWindow,
		Logger: log.With("component", "enroll")}, tokens, cache, ledger)
	b.SetEnroller(enr.Enroll)
	identity.NewAdmin(tokens, bearer, log.With("component", "admin")).Routes(g.Mux())
	g.Go("identity", cache.Run)
	// edgeanchor_ledger_height (docs/internals.md): the last block the cache applied.
	if err := g.Registerer().Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgeanchor_ledger_height", Help: "Latest ledger block height the gateway has followed (identity cache).",
	}, func() float64 { return float64(cache.Height()) })); err != nil {
		return nil, nil, fmt.Errorf("gateway: metrics: %w", err)
	}
	g.AddReadyCheck("identity", func(context.Context) error {
		if !cache.Loaded() {
			return errors.New("device list not yet loaded from the ledger")
		}
		return nil
	})
	return cache, enr, nil
}

// enableAnchoring wires batching, anchoring and the proof API into g before
// Run: the batcher cuts batches of g's store every Config.BatchInterval or
// Config.BatchSize records, the anchorer submits them through ledger and
// publishes the anchored receipts on each device's receipt topic, and the
// proof routes are mounted on g.Mux(). Both loops run as g's services.
func enableAnchoring(g *Gateway, ledger *ledgerclient.Client) (*batch.Anchoring, error) {
	cfg := g.Config()
	an, err := batch.NewAnchoring(g.Store(), ledger, batch.AnchoringConfig{
		Interval: cfg.BatchInterval, MaxRecords: cfg.BatchSize, Signer: g.Signer(),
		Publish: func(topic string, payload []byte) error {
			return g.Broker().Server().Publish(topic, payload, false, 1)
		},
		Log: g.Logger(), Registerer: g.Registerer(),
	})
	if err != nil {
		return nil, err
	}
	httpapi.NewProofAPI(g.Store(), an.Batches, an.Proofs, g.Logger().With("component", "proofs")).Routes(g.Mux())
	g.Go("batcher", an.Batcher.Run)
	g.Go("anchorer", an.Anchorer.Run)
	return an, nil
}
