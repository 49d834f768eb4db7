package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"
)

// CheckLevel says what a failing readiness check means for /readyz.
type CheckLevel int

const (
	// Critical: while the check fails the gateway cannot serve devices
	// (nothing can be stored or no device can connect); /readyz answers
	// 503 and a load balancer should send devices elsewhere.
	Critical CheckLevel = iota
	// Degraded: devices are still served and their readings stored, but a
	// part of the gateway is down (the ledger: anchoring and enrollment
	// wait); /readyz answers 200 with status "degraded".
	Degraded
)

// Readiness states in the /readyz body ("status").
const (
	StatusReady    = "ready"
	StatusDegraded = "degraded"
	StatusNotReady = "not_ready"
)

// Health keeps the readiness of the gateway's parts current in the
// background, so that /readyz answers at once from the last results
// instead of probing (a ledger that does not answer would hold the probe
// for seconds). Each check runs in its own goroutine every Interval with a
// Timeout; a check whose last answer is older than Timeout+2*Interval
// (it ignored its ctx and hangs) counts as failing.
type Health struct {
	// Interval between two runs of one check; Timeout bounds one run.
	Interval, Timeout time.Duration

	mu     sync.Mutex
	checks []*healthCheck
	ctx    context.Context // set while Run runs
	wg     *sync.WaitGroup
}

type healthCheck struct {
	name  string
	level CheckLevel
	fn    func(ctx context.Context) error

	mu   sync.Mutex
	done bool // a first result is in
	err  error
	at   time.Time
}

// NewHealth returns a Health probing every interval with timeout per run.
func NewHealth(interval, timeout time.Duration) *Health {
	return &Health{Interval: interval, Timeout: timeout}
}

// Add registers a check. fn must return quickly (it may block up to its
// ctx's deadline) and nil while the part is fine; its error text is shown
// in /readyz, so it should say what is wrong ("listener not accepting:
// accept4: too many open files"). It may be called before or during Run.
// The name "status" is reserved.
func (h *Health) Add(name string, level CheckLevel, fn func(ctx context.Context) error) {
	c := &healthCheck{name: name, level: level, fn: fn}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks = append(h.checks, c)
	if h.ctx != nil {
		h.wg.Add(1)
		go h.loop(h.ctx, c, h.wg)
	}
}

// Start probes every check in the background until ctx ends, waits up to
// first for every check's first result (the cheap ones answer at once; a
// slow one shows "not checked yet" meanwhile), and returns a function that
// waits for the probing goroutines to end after ctx.
func (h *Health) Start(ctx context.Context, first time.Duration) (wait func()) {
	var wg sync.WaitGroup
	h.mu.Lock()
	h.ctx, h.wg = ctx, &wg
	for _, c := range h.checks {
		wg.Add(1)
		go h.loop(ctx, c, &wg)
	}
	h.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		h.mu.Lock()
		h.ctx = nil
		h.mu.Unlock()
	})
	deadline := time.Now().Add(first)
	for !h.allChecked() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	return func() {
		<-ctx.Done()
		stop()
		h.mu.Lock()
		h.ctx = nil
		h.mu.Unlock()
		wg.Wait()
	}
}

func (h *Health) allChecked() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.checks {
		c.mu.Lock()
		done := c.done
		c.mu.Unlock()
		if !done {
			return false
		}
	}
	return true
}

// loop runs c every h.Interval while it passes. A failing check is run
// again sooner, after a pause growing from 10 ms to h.Interval, so that a
// part that comes up (the identity cache's first load at start, a ledger
// that returns) is reported ready within milliseconds, not a whole interval
// later.
func (h *Health) loop(ctx context.Context, c *healthCheck, wg *sync.WaitGroup) {
	defer wg.Done()
	t := time.NewTimer(h.Interval)
	defer t.Stop()
	retry := 10 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, h.Timeout)
		err := c.fn(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		c.done, c.err, c.at = true, err, time.Now()
		c.mu.Unlock()
		pause := h.Interval
		if err != nil {
			pause, retry = min(retry, h.Interval), min(2*retry, h.Interval)
		} else {
			retry = 10 * time.Millisecond
		}
		t.Reset(pause)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Report is the readiness of the gateway at one moment.
type Report struct {
	Status string
	// Parts maps each check to "ok" or to what is wrong.
	Parts map[string]string
	// Failing names the failing checks, sorted.
	Failing []string
}

// Code is the HTTP status of /readyz for r: 503 when not ready, else 200.
func (r Report) Code() int {
	if r.Status == StatusNotReady {
		return http.StatusServiceUnavailable
	}
	return http.StatusOK
}

// Report returns the last results, without running any check.
func (h *Health) Report(now time.Time) Report {
	h.mu.Lock()
	checks := append([]*healthCheck(nil), h.checks...)
	h.mu.Unlock()
	r := Report{Status: StatusReady, Parts: make(map[string]string, len(checks))}
	stale := h.Timeout + 2*h.Interval
	for _, c := range checks {
		c.mu.Lock()
		done, err, at := c.done, c.err, c.at
		c.mu.Unlock()
		switch {
		case !done:
			err = errors.New("not checked yet")
		case now.Sub(at) > stale:
			err = fmt.Errorf("no answer for %s (last: %v)", now.Sub(at).Round(time.Second), errText(err))
		}
		if err == nil {
			r.Parts[c.name] = "ok"
			continue
		}
		r.Parts[c.name] = err.Error()
		r.Failing = append(r.Failing, c.name)
		if c.level == Critical {
			r.Status = StatusNotReady
		} else if r.Status == StatusReady {
			r.Status = StatusDegraded
		}
	}
	sort.Strings(r.Failing)
	return r
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
