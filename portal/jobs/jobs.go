// Package jobs is a small registry of background runs for the portal's
// pages: a bound on the runs at once, the last runs kept with their
// results (finished ones dropped oldest first), progress, lookup by id,
// an optional time limit per run, and a wait for all of them.
package jobs

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Status is a run's progress as its work last reported it.
type Status struct {
	Phase    string `json:"phase"`
	Done     uint64 `json:"done"`
	Total    uint64 `json:"total"`
	Finished bool   `json:"finished"`
}

// Progress reports a run's phase and how far it got.
type Progress func(phase string, done, total uint64)

// Func is the work of a run: p are its parameters; it reports progress
// and stops when ctx ends.
type Func[P, R any] func(ctx context.Context, p P, progress Progress) (R, error)

// Job is one run; P are its parameters, R its result.
type Job[P, R any] struct {
	ID      string
	Params  P
	Started time.Time

	mu     sync.Mutex
	status Status
	result R
	err    error
	ended  time.Time
}

// Status is j's progress.
func (j *Job[P, R]) Status() Status {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.status
}

// Outcome is a run's state at one moment: its progress and, once it
// finished, its result, error and duration.
type Outcome[R any] struct {
	Status
	Result R
	Err    error
	Ended  time.Time
	Took   time.Duration
}

// Outcome is j's state now.
func (j *Job[P, R]) Outcome() Outcome[R] {
	j.mu.Lock()
	defer j.mu.Unlock()
	o := Outcome[R]{Status: j.status, Result: j.result, Err: j.err, Ended: j.ended}
	if j.status.Finished {
		o.Took = j.ended.Sub(j.Started)
	}
	return o
}

func (j *Job[P, R]) progress(phase string, done, total uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.status.Finished {
		j.status.Phase, j.status.Done, j.status.Total = phase, done, total
	}
}

func (j *Job[P, R]) finish(r R, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.result, j.err, j.ended, j.status.Finished = r, err, time.Now(), true
}

// Limits bound a Registry.
type Limits struct {
	What    string        // the runs in messages ("audits")
	Keep    int           // runs kept (finished ones dropped oldest first)
	Running int           // runs at once
	Timeout time.Duration // per run; 0: none
}

// Registry holds the runs of one kind.
type Registry[P, R any] struct {
	lim Limits
	run Func[P, R]

	mu      sync.Mutex
	m       map[string]*Job[P, R]
	running int
	wg      sync.WaitGroup
}

// New returns a registry of runs of run under lim.
func New[P, R any](lim Limits, run Func[P, R]) *Registry[P, R] {
	return &Registry[P, R]{lim: lim, run: run, m: map[string]*Job[P, R]{}}
}

// Keep is how many runs the registry keeps.
func (r *Registry[P, R]) Keep() int { return r.lim.Keep }

// Get returns the run id, or nil.
func (r *Registry[P, R]) Get(id string) *Job[P, R] {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[id]
}

// Len is the number of runs kept.
func (r *Registry[P, R]) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// Start runs p in the background under ctx as run id, or refuses when
// the bound of runs at once is reached (or id is taken).
func (r *Registry[P, R]) Start(ctx context.Context, id string, p P) (*Job[P, R], error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running >= r.lim.Running {
		return nil, fmt.Errorf("%d %s are running: wait for one to finish", r.running, r.lim.What)
	}
	if _, ok := r.m[id]; ok {
		return nil, fmt.Errorf("%s: run %q exists", r.lim.What, id)
	}
	for len(r.m) >= r.lim.Keep {
		var oldest *Job[P, R]
		for _, x := range r.m {
			if x.Status().Finished && (oldest == nil || x.Started.Before(oldest.Started)) {
				oldest = x
			}
		}
		if oldest == nil {
			break
		}
		delete(r.m, oldest.ID)
	}
	j := &Job[P, R]{ID: id, Params: p, Started: time.Now()}
	r.m[id] = j
	r.running++
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if r.lim.Timeout > 0 {
			rctx, cancel = context.WithTimeout(ctx, r.lim.Timeout)
		}
		defer cancel()
		res, err := r.run(rctx, p, j.progress)
		// Finished and the slot freed at once: whoever sees the first
		// can start another run.
		r.mu.Lock()
		j.finish(res, err)
		r.running--
		r.mu.Unlock()
	}()
	return j, nil
}

// Wait returns when every run started has finished.
func (r *Registry[P, R]) Wait() { r.wg.Wait() }
