// Package wagestest builds a real site for wage supervision tests and
// benchmarks: a single-node ledger, an in-process gateway with anchoring,
// and simulated payroll terminals (with seeded arrears) writing through the
// gateway's store. Used only by tests.
package wagestest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/gatewaytest"
	"github.com/edgeanchor/edgeanchor/gateway/store"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/sim/profile"
)

// Site is a real site (gatewaytest: single-node ledger, payroll terminals
// registered on it, an in-process gateway with anchoring) fed by simulated
// payroll terminals through the gateway's store write path (the path MQTT
// ingest takes after verification).
type Site struct {
	*gatewaytest.Site
	t     testing.TB
	Trust *evidence.Trust
	Gens  []profile.Generator
	Salt  []byte
}

func NewSite(t testing.TB, devices int, arrears profile.Arrears, start time.Time) *Site {
	t.Helper()
	kinds := make([]string, devices)
	for i := range kinds {
		kinds[i] = "payroll"
	}
	gs := gatewaytest.Start(t, gatewaytest.Options{Devices: kinds})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	trust, err := gs.Client.ExportTrust(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	s := &Site{Site: gs, t: t, Trust: trust, Salt: []byte("site-a wage test salt")}
	for i := range devices {
		gen, err := profile.NewGenerator(profile.GenConfig{Kind: profile.KindPayroll, Seed: 17, Index: i, Site: "site-a", Salt: s.Salt, Start: start, Arrears: arrears})
		if err != nil {
			t.Fatal(err)
		}
		s.Gens = append(s.Gens, gen)
	}
	return s
}

// Feed stores each device's readings taken before until, those keep
// selects, and returns how many it stored.
func (s *Site) Feed(until time.Time, keep func(profile.Reading) bool) int {
	s.t.Helper()
	var waits []func() (*store.Record, bool, error)
	for i, gen := range s.Gens {
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
			w, err := s.G.Store().Enqueue(context.Background(), s.Next(i, 0, r.At, r.Kind, r.Data))
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
	// The first proof of a batch of thousands of records can take more
	// than one GET's 5 s on a loaded machine: ask again until it comes.
	var body []byte
	testutil.WaitFor(s.t, 60*time.Second, fmt.Sprintf("proof of gseq %d", gseq), func() (err error) {
		body, err = testutil.HTTPGet(fmt.Sprintf("%s/v1/records/%d/proof", s.API(), gseq))
		return err
	})
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
func (s *Site) SkipSeq(i int) { s.Seqs[i]++ }
