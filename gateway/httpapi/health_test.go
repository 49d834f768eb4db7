package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

// A check that ignores its ctx and hangs is reported as such once its
// last answer is stale, and never holds up a report.
func TestHealthStaleCheck(t *testing.T) {
	t.Parallel()
	h := NewHealth(10*time.Millisecond, 20*time.Millisecond)
	release := make(chan struct{})
	var calls atomic.Int64
	h.Add("stuck", Degraded, func(context.Context) error {
		if calls.Add(1) > 1 {
			<-release // ignores ctx
		}
		return nil
	})
	h.Add("fine", Critical, func(context.Context) error { return nil })
	ctx, cancel := context.WithCancel(context.Background())
	wait := h.Start(ctx, time.Second)
	defer func() { close(release); cancel(); wait() }()
	if r := h.Report(time.Now()); r.Status != StatusReady {
		t.Fatalf("first report %+v, want ready", r)
	}
	testutil.WaitUntil(t, 10*time.Second, "the stuck check to be reported", func() bool {
		r := h.Report(time.Now())
		return r.Status == StatusDegraded && strings.Contains(r.Parts["stuck"], "no answer for") &&
			r.Code() == http.StatusOK && len(r.Failing) == 1
	})
}

// A failing check is run again within milliseconds, not a whole interval
// later: a part that comes up after the gateway starts (the identity
// cache's first load) is reported ready at once. Here the interval is an
// hour, so only the quick retry can turn the report ready.
func TestHealthRetriesAFailingCheckSoon(t *testing.T) {
	h := NewHealth(time.Hour, time.Second)
	var runs atomic.Int32
	h.Add("part", Critical, func(context.Context) error {
		if runs.Add(1) <= 2 {
			return errors.New("not up yet")
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	wait := h.Start(ctx, time.Second)
	defer func() { cancel(); wait() }()
	testutil.WaitFor(t, 10*time.Second, "the check to pass on its third run", func() error {
		if r := h.Report(time.Now()); r.Status != StatusReady {
			return fmt.Errorf("status %s after %d runs", r.Status, runs.Load())
		}
		return nil
	})
}
