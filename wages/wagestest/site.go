// Package wagestest builds a real site for wage supervision tests and
// benchmarks: a single-node ledger, an in-process gateway with anchoring,
// and simulated payroll terminals (with seeded arrears) writing through the
// gateway's store. Used only by tests.
package wagestest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
	"github.com/edgeanchor/edgeanchor/sim/profile"
)

// Site is a real single-node ledger and an in-process gateway with
// anchoring, fed by simulated payroll terminals through the gateway's
// store write path (the path MQTT ingest takes after verification).
type Site struct {
	t      testing.TB
	LGW    *ledgertest.Gateway
	Node   *ledgertest.Node
	G      *gateway.Gateway
	An     *gateway.Anchoring
	Trust  *evidence.Trust
	devs   []*device.KeySigner
	seqs   []uint64
	Gens   []profile.Generator
	Salt   []byte
	cancel context.CancelFunc
	done   chan error
}

func NewSite(t testing.TB, devices int, arrears profile.Arrears, start time.Time) *Site {
	t.Helper()
	lgw := ledgertest.NewGateway(t, "site-a")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	node := ledgertest.Start(t, ledgertest.Options{Gateways: []*ledgertest.Gateway{lgw}, Logger: quiet})
	client, err := ledgerclient.NewClient(node.RPC, ledgerclient.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	trust, err := client.ExportTrust(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	s := &Site{t: t, LGW: lgw, Node: node, Trust: trust, Salt: []byte("site-a wage test salt")}
	reg := broker.NewStaticRegistry()
	for i := range devices {
		key, tx := lgw.NewDevice(t, "payroll")
		if _, err := client.Submit(ctx, tx); err != nil {
			t.Fatal(err)
		}
		reg.Put(broker.DeviceInfo{DID: key.DID(), Pub: key.Public(), Kind: "payroll", Site: "site-a"})
		gen, err := profile.NewGenerator(profile.GenConfig{Kind: profile.KindPayroll, Seed: 17, Index: i, Site: "site-a", Salt: s.Salt, Start: start, Arrears: arrears})
		if err != nil {
			t.Fatal(err)
		}
		s.devs, s.seqs, s.Gens = append(s.devs, key), append(s.seqs, 0), append(s.Gens, gen)
	}
	cfg := gateway.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.KeyPath = "unused"
	cfg.MQTT = gateway.MQTTConfig{TCP: "127.0.0.1:0"}
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.LedgerRPC = node.RPC
	cfg.BatchInterval = time.Hour // batches are cut by the test
	prom := prometheus.NewRegistry()
	g, err := gateway.New(cfg, gateway.Deps{Logger: quiet, Registerer: prom, Gatherer: prom, Signer: lgw.Signer, Registry: reg, Ledger: client})
	if err != nil {
		t.Fatal(err)
	}
	s.An = g.Anchoring()
	s.G = g
	rctx, rcancel := context.WithCancel(context.Background())
	s.cancel, s.done = rcancel, make(chan error, 1)
	go func() { s.done <- g.Run(rctx) }()
	t.Cleanup(func() {
		s.cancel()
		if err := <-s.done; err != nil {
			t.Errorf("gateway Run: %v", err)
		}
	})
	return s
}

// Feed stores each device's readings taken before until, those keep
// selects, and returns how many it stored.
func (s *Site) Feed(until time.Time, keep func(profile.Reading) bool) int {
	s.t.Helper()
	var waits []func() (*gateway.Record, bool, error)
	for i, gen := range s.Gens {
		d := s.devs[i]
		for {
			r := gen.Next()
			if !r.At.Before(until) {
				// Put it back for the next feed.
				s.Gens[i] = &pushback{Generator: gen, r: r}
				break
			}
			if !keep(r) {
				continue
			}
			s.seqs[i]++
			body, err := device.NewBody(d.DID(), s.seqs[i], r.At, r.Kind, r.Data)
			if err != nil {
				s.t.Fatal(err)
			}
			env, err := device.Seal(d, body)
			if err != nil {
				s.t.Fatal(err)
			}
			w, err := s.G.Store().Enqueue(context.Background(), gateway.Pending{DID: d.DID(), Seq: s.seqs[i], Kind: r.Kind, Envelope: env, EnvHash: anchor.SM3(env)})
			if err != nil {
				s.t.Fatal(err)
			}
			waits = append(waits, w)
		}
	}
	for _, w := range waits {
		if _, _, err := w(); err != nil {
			s.t.Fatal(err)
		}
	}
	return len(waits)
}

// pushback yields r before the rest of its generator's readings.
type pushback struct {
	profile.Generator
	r    profile.Reading
	used bool
}

func (p *pushback) Next() profile.Reading {
	if !p.used {
		p.used = true
		return p.r
	}
	return p.Generator.Next()
}

// Seeded reaches through pushbacks to the generator's seeded cases.
func (p *pushback) Seeded() []profile.SeededCase { return SeededOf(p.Generator) }

func SeededOf(g profile.Generator) []profile.SeededCase {
	if s, ok := g.(profile.Seeder); ok {
		return s.Seeded()
	}
	return nil
}

// Cut cuts batches of everything stored and waits until the last is
// anchored.
func (s *Site) Cut() *gateway.StoredBatch {
	s.t.Helper()
	var last *gateway.StoredBatch
	for {
		sb, err := s.An.Batcher.CutNow()
		if errors.Is(err, gateway.ErrNoBatch) {
			break
		}
		if err != nil {
			s.t.Fatal(err)
		}
		last = sb
	}
	if last == nil {
		s.t.Fatal("no batch to cut")
	}
	s.An.Anchorer.Wake()
	testutil.WaitFor(s.t, 60*time.Second, fmt.Sprintf("batch %d anchored", last.Seq), func() (err error) {
		got, err := s.An.Batches.Get(last.Seq)
		if err == nil && got.Anchor == nil {
			s.An.Anchorer.Wake()
			err = errors.New("no anchor yet")
		}
		return err
	})
	return last
}

// SeededMonth builds a site whose terminals recorded October 2026 with
// arrears seeded, the wage run anchored, then late wages anchored after
// the due date. It returns the site and the due date (the anchored-by
// time of the wage run's batch).
func SeededMonth(t testing.TB, devices int) (*Site, time.Time) {
	start := time.Date(2026, 10, 1, 0, 0, 0, 0, profile.SiteZone)
	s := NewSite(t, devices, profile.Arrears{Unpaid: 2, Late: 1, BelowFloor: 1, Ghost: 1}, start)
	all := func(profile.Reading) bool { return true }
	s.Feed(start.AddDate(0, 1, 0), all) // October, its wage run included
	b1 := s.Cut()
	due := s.AnchoredBy(b1.Last)
	// Late wages come 20 days after the run; November's attendance is not
	// needed for October's report.
	s.Feed(start.AddDate(0, 2, 0), func(r profile.Reading) bool { return r.Kind == device.KindWage })
	s.Cut()
	return s, due
}

// API is the gateway's HTTP API base URL.
func (s *Site) API() string { return "http://" + s.G.HTTPAddr() }

// AnchoredBy verifies the proof bundle of gseq against the trust and
// returns its anchored-by time.
func (s *Site) AnchoredBy(gseq uint64) time.Time {
	s.t.Helper()
	body, err := testutil.HTTPGet(fmt.Sprintf("%s/v1/records/%d/proof", s.API(), gseq))
	if err != nil {
		s.t.Fatal(err)
	}
	b, err := evidence.ParseBundle(body)
	if err != nil {
		s.t.Fatal(err)
	}
	v, err := b.Verify(s.Trust, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	by, err := anchor.ParseTime(v.AnchoredBy)
	if err != nil {
		s.t.Fatal(err)
	}
	return by
}

// The seeded month's period and the floor its below-floor cases are
// under (regular rates are 22,000 fen a day and up, below-floor ones
// 10,000).
const (
	Period   = "2026-10"
	FloorFen = 20_000
)

// SkipSeq makes device i's next stored reading jump one seq, leaving a
// gap no later record fills.
func (s *Site) SkipSeq(i int) { s.seqs[i]++ }
