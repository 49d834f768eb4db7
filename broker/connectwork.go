package broker

import (
	"context"
	"errors"
	"runtime"
)

// errClosing refuses a CONNECT that arrives while the broker stops.
var errClosing = errors.New("broker: closing")

// connectWork runs the CPU-heavy part of a device's CONNECT (the SM2
// verification of its connect credential) on a few long-lived goroutines,
// at most half the cores at once: after a restart, with thousands of
// devices connecting, the publishes of the devices already connected keep
// being answered while the CONNECTs queue here (and behind the connect rate
// limits of broker/listener).
type connectWork struct {
	jobs chan func()
}

// connectWorkers is how many goroutines verify CONNECTs: half the cores,
// at least one.
func connectWorkers() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// startConnectWork starts n workers that stop when ctx ends; each adds
// itself to b.wg.
func (b *Broker) startConnectWork(ctx context.Context, n int) {
	b.connectWork = &connectWork{jobs: make(chan func())}
	for range n {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case f := <-b.connectWork.jobs:
					f()
				}
			}
		}()
	}
}

// onWorker runs f on a connect worker and waits for it; it returns
// errClosing, without running f, when the broker stops first.
func (b *Broker) onWorker(f func()) error {
	if b.connectWork == nil { // not started: run here (tests of the hook alone)
		f()
		return nil
	}
	done := make(chan struct{})
	select {
	case b.connectWork.jobs <- func() { defer close(done); f() }:
	case <-b.ctx.Done():
		return errClosing
	}
	<-done // a worker that took f runs it to the end
	return nil
}
