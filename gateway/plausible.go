package gateway

import (
	"fmt"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/refusal"
)

// DefaultFutureTolerance is future_tolerance's default: how far ahead of
// the gateway's clock a record's timestamp may be.
const DefaultFutureTolerance = 5 * time.Minute

// SetClock sets the clock the timestamp plausibility rule reads and its
// tolerance; call before the gateway runs. Defaults: time.Now and
// DefaultFutureTolerance.
func (g *Ingest) SetClock(now func() time.Time, futureTolerance time.Duration) {
	g.now, g.futureTolerance = now, futureTolerance
}

// checkPlausibleTime refuses a body dated beyond the tolerance ahead of
// the gateway's clock.
func (g *Ingest) checkPlausibleTime(b *device.Body, kind string) error {
	now, tol := time.Now, DefaultFutureTolerance
	if g.now != nil {
		now = g.now
	}
	if g.futureTolerance > 0 {
		tol = g.futureTolerance
	}
	n := now()
	ts := b.Time()
	if ahead := ts.Sub(n); ahead > tol {
		return refuse(refusal.FutureTimestamp, kind, fmt.Errorf("ts %s is %s ahead of the gateway's clock %s (future_tolerance %s)",
			b.TS, ahead.Round(time.Second), n.UTC().Format(time.RFC3339), tol))
	}
	return nil
}
