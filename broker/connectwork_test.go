package broker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

// TestConnectWorkBoundsAndStops: the workers run at most n jobs at once,
// every job given runs to the end, and once the broker stops a job is
// refused with errClosing without running.
func TestConnectWorkBoundsAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{ctx: ctx}
	const n = 2
	b.startConnectWork(ctx, n)
	var running, peak, ran atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.onWorker(func() {
				cur := running.Add(1)
				for p := peak.Load(); cur > p && !peak.CompareAndSwap(p, cur); p = peak.Load() {
				}
				<-release
				running.Add(-1)
				ran.Add(1)
			}); err != nil {
				t.Errorf("onWorker: %v", err)
			}
		}()
	}
	testutil.WaitFor(t, 10*time.Second, "both workers busy", func() error {
		if running.Load() != n {
			return errors.New("not yet")
		}
		return nil
	})
	close(release)
	wg.Wait()
	if ran.Load() != 6 || peak.Load() != n {
		t.Fatalf("ran %d jobs with at most %d at once, want 6 with at most %d", ran.Load(), peak.Load(), n)
	}
	cancel()
	b.wg.Wait()
	called := false
	if err := b.onWorker(func() { called = true }); !errors.Is(err, errClosing) || called {
		t.Fatalf("after stop: err %v, job run %v; want errClosing and not run", err, called)
	}
}
