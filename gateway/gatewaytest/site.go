// Package gatewaytest starts a real site for tests above the gateway: a
// single-node ledger (ledger/ledgertest) whose genesis consortium holds the
// site's gateway, devices registered on it, and an in-process gateway built
// by the one constructor gateway.New with that ledger (anchoring on, the
// devices in a static registry). Batches are cut by the test (Cut). Used
// only by tests.
package gatewaytest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway"
	"github.com/edgeanchor/edgeanchor/gateway/batch"
	"github.com/edgeanchor/edgeanchor/gateway/store"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// Options tune Start.
type Options struct {
	// Site is the gateway's site (default "site-a").
	Site string
	// Devices are the kinds of the devices registered on the ledger by
	// the gateway, in order (Site.Devices).
	Devices []string
	// Members are further consortium members from genesis (no gateway runs
	// them; the test anchors for them itself).
	Members []*ledgertest.Gateway
	// Logger receives the ledger's and the gateway's logs (nil: none).
	Logger *slog.Logger
	// Setup registers more on the ledger before the gateway starts (nil:
	// nothing).
	Setup func(ctx context.Context, s *Site)
}

// Site is the ledger, the devices and the gateway. The gateway's batch
// interval is an hour: the test cuts batches (Cut).
type Site struct {
	t        testing.TB
	log      *slog.Logger
	LGW      *ledgertest.Gateway // the gateway's key and site on the ledger
	Node     *ledgertest.Node
	Client   *ledgerclient.Client
	Registry *broker.StaticRegistry // the devices, given to the gateway
	Devices  []*device.KeySigner
	Seqs     []uint64 // the last seq sent by each device (Next)
	Config   gateway.Config
	G        *gateway.Gateway // the running gateway (nil while stopped)
	An       *batch.Anchoring // G's batcher, anchorer and proofs
	Prom     *prometheus.Registry
	cancel   context.CancelFunc
	done     chan error
}

// Start starts the ledger, registers the devices and starts the gateway;
// everything stops at t.Cleanup.
func Start(t testing.TB, o Options) *Site {
	t.Helper()
	if o.Site == "" {
		o.Site = "site-a"
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lgw := ledgertest.NewGateway(t, o.Site)
	node := ledgertest.Start(t, ledgertest.Options{Gateways: append([]*ledgertest.Gateway{lgw}, o.Members...), Logger: log})
	client, err := ledgerclient.NewClient(node.RPC, ledgerclient.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	s := &Site{t: t, log: log, LGW: lgw, Node: node, Client: client, Registry: broker.NewStaticRegistry()}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, kind := range o.Devices {
		key, tx := lgw.NewDevice(t, kind)
		if _, err := client.Submit(ctx, tx); err != nil {
			t.Fatalf("gatewaytest: register a %s device: %v", kind, err)
		}
		s.Registry.Put(broker.DeviceInfo{DID: key.DID(), Pub: key.Public(), Kind: kind, Site: o.Site})
		s.Devices = append(s.Devices, key)
		s.Seqs = append(s.Seqs, 0)
	}
	if o.Setup != nil {
		o.Setup(ctx, s)
	}
	s.Config = gateway.DefaultConfig()
	s.Config.DataDir = t.TempDir()
	s.Config.KeyPath = "unused" // the key is given (Deps.Signer)
	s.Config.MQTT = gateway.MQTTConfig{TCP: "127.0.0.1:0"}
	s.Config.HTTP.Addr = "127.0.0.1:0"
	s.Config.LedgerRPC = node.RPC
	s.Config.BatchInterval = time.Hour // batches are cut by the test
	s.StartGateway()
	t.Cleanup(s.StopGateway)
	return s
}

// StartGateway builds the gateway on s.Config (its data directory kept
// from a previous run) and runs it until StopGateway.
func (s *Site) StartGateway() {
	s.t.Helper()
	s.Prom = prometheus.NewRegistry()
	g, err := gateway.New(s.Config, gateway.Deps{Logger: s.log, Registerer: s.Prom, Gatherer: s.Prom,
		Signer: s.LGW.Signer, Registry: s.Registry, Ledger: s.Client})
	if err != nil {
		s.t.Fatal(err)
	}
	s.G, s.An = g, g.Anchoring()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan error, 1)
	go func() { s.done <- g.Run(ctx) }()
	testutil.WaitFor(s.t, 30*time.Second, "gateway HTTP API", func() error {
		return testutil.WaitHTTP(time.Second, "http://"+g.HTTPAddr()+"/healthz")
	})
}

// StopGateway stops the gateway and waits until Run has returned (the
// store closed); Run's error fails the test. It does nothing when the
// gateway is stopped.
func (s *Site) StopGateway() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	if err := <-s.done; err != nil {
		s.t.Errorf("gateway Run: %v", err)
	}
}

// Next seals device i's next reading (its seq advanced by 1+skip) taken
// at at, and returns it as the store takes it after ingest's checks.
func (s *Site) Next(i int, skip uint64, at time.Time, kind string, data any) store.Pending {
	s.t.Helper()
	s.Seqs[i] += 1 + skip
	d := s.Devices[i]
	body, err := device.NewBody(d.DID(), s.Seqs[i], at, kind, data)
	if err != nil {
		s.t.Fatal(err)
	}
	env, err := device.Seal(d, body)
	if err != nil {
		s.t.Fatal(err)
	}
	return store.Pending{DID: d.DID(), Seq: s.Seqs[i], Kind: kind, Envelope: env, EnvHash: anchor.SM3(env)}
}

// Append stores p through the gateway's store and returns its record.
func (s *Site) Append(p store.Pending) *store.Record {
	s.t.Helper()
	rec, err := s.G.Store().Append(context.Background(), p)
	if err != nil {
		s.t.Fatal(err)
	}
	return rec
}

// Cut cuts batches of every stored record not yet batched (at least one
// batch) and waits until the last is anchored; it returns that batch as
// stored after its anchor.
func (s *Site) Cut() *batch.Batch {
	s.t.Helper()
	s.An.Batcher.Notify()
	var last *batch.Batch
	for {
		sb, err := s.An.Batcher.CutNow()
		if errors.Is(err, batch.ErrNotFound) {
			break
		}
		if err != nil {
			s.t.Fatal(err)
		}
		last = sb
	}
	if last == nil {
		s.t.Fatal("gatewaytest: no batch to cut")
	}
	s.An.Anchorer.Wake()
	var got *batch.Batch
	testutil.WaitFor(s.t, 60*time.Second, fmt.Sprintf("batch %d anchored", last.Seq), func() (err error) {
		if got, err = s.An.Batches.Get(last.Seq); err == nil && got.Anchor == nil {
			s.An.Anchorer.Wake()
			err = errors.New("no anchor yet")
		}
		return err
	})
	return got
}
