package jobs

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

// step is a test run's parameters: it reports progress, then waits for
// release (nil: it does not wait) or the end of its ctx.
type step struct {
	release chan struct{}
	result  string
	err     error
}

func run(ctx context.Context, p step, progress Progress) (string, error) {
	progress("walk", 3, 10)
	if p.release != nil {
		select {
		case <-p.release:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return p.result, p.err
}

func finished(t *testing.T, j *Job[step, string]) Outcome[string] {
	t.Helper()
	testutil.WaitUntil(t, 30*time.Second, "run "+j.ID+" finished", func() bool { return j.Status().Finished })
	return j.Outcome()
}

// TestRunningBound: no more runs at once than the bound; a finished run
// frees its slot.
func TestRunningBound(t *testing.T) {
	r := New(Limits{What: "tests", Keep: 10, Running: 2}, run)
	a, b := step{release: make(chan struct{})}, step{release: make(chan struct{})}
	ja, err := r.Start(context.Background(), "a", a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(context.Background(), "b", b); err != nil {
		t.Fatal(err)
	}
	_, err = r.Start(context.Background(), "c", step{})
	if err == nil || err.Error() != "2 tests are running: wait for one to finish" {
		t.Fatalf("third run at once: %v, want refused naming the bound", err)
	}
	if r.Get("c") != nil || r.Len() != 2 {
		t.Fatalf("a refused run is kept (%d runs)", r.Len())
	}
	close(a.release)
	finished(t, ja)
	jc, err := r.Start(context.Background(), "c", step{})
	if err != nil {
		t.Fatalf("after a run finished: %v", err)
	}
	finished(t, jc)
	if _, err := r.Start(context.Background(), "a", step{}); err == nil || !strings.Contains(err.Error(), `"a" exists`) {
		t.Fatalf("a second run a: %v", err)
	}
	close(b.release)
	r.Wait()
}

// TestEvictsOldestFinished: past Keep runs the oldest finished one goes;
// a running one is kept however old.
func TestEvictsOldestFinished(t *testing.T) {
	r := New(Limits{What: "tests", Keep: 3, Running: 3}, run)
	hold := step{release: make(chan struct{})}
	if _, err := r.Start(context.Background(), "running", hold); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"b", "c", "d", "e"} {
		j, err := r.Start(context.Background(), id, step{result: id})
		if err != nil {
			t.Fatal(err)
		}
		finished(t, j)
	}
	if r.Len() != 3 {
		t.Fatalf("%d runs kept, want 3", r.Len())
	}
	for id, kept := range map[string]bool{"running": true, "b": false, "c": false, "d": true, "e": true} {
		if (r.Get(id) != nil) != kept {
			t.Errorf("run %s kept: %v, want %v", id, !kept, kept)
		}
	}
	if o := r.Get("e").Outcome(); o.Result != "e" {
		t.Errorf("run e result %q", o.Result)
	}
	close(hold.release)
	r.Wait()
}

// TestStatusAndOutcome: progress shows while a run runs; its result,
// error and duration once it finished.
func TestStatusAndOutcome(t *testing.T) {
	r := New(Limits{What: "tests", Keep: 10, Running: 2}, run)
	p := step{release: make(chan struct{}), result: "done"}
	j, err := r.Start(context.Background(), "a", p)
	if err != nil {
		t.Fatal(err)
	}
	want := Status{Phase: "walk", Done: 3, Total: 10}
	testutil.WaitUntil(t, 30*time.Second, "progress shown", func() bool { return j.Status() == want })
	if o := j.Outcome(); o.Finished || o.Result != "" || o.Took != 0 {
		t.Fatalf("running: %+v", o)
	}
	close(p.release)
	o := finished(t, j)
	if o.Result != "done" || o.Err != nil || o.Took <= 0 || o.Ended.Before(j.Started) || o.Done != 3 {
		t.Fatalf("finished: %+v", o)
	}
	bad := errors.New("no ledger")
	jb, err := r.Start(context.Background(), "b", step{err: bad})
	if err != nil {
		t.Fatal(err)
	}
	if o := finished(t, jb); !errors.Is(o.Err, bad) {
		t.Fatalf("failed run: %+v", o)
	}
}

// TestTimeLimit: a run longer than Timeout ends with its ctx; without a
// Timeout a run has no deadline.
func TestTimeLimit(t *testing.T) {
	r := New(Limits{What: "tests", Keep: 10, Running: 2, Timeout: 50 * time.Millisecond}, run)
	j, err := r.Start(context.Background(), "a", step{release: make(chan struct{})})
	if err != nil {
		t.Fatal(err)
	}
	if o := finished(t, j); !errors.Is(o.Err, context.DeadlineExceeded) {
		t.Fatalf("run past its time: %v, want the deadline", o.Err)
	}
	noLimit := New(Limits{What: "tests", Keep: 10, Running: 2}, func(ctx context.Context, _ step, _ Progress) (string, error) {
		if d, ok := ctx.Deadline(); ok {
			return "", errors.New("deadline " + d.String())
		}
		return "none", nil
	})
	jn, err := noLimit.Start(context.Background(), "a", step{})
	if err != nil {
		t.Fatal(err)
	}
	if o := finished(t, jn); o.Err != nil || o.Result != "none" {
		t.Fatalf("run without a time limit: %+v", o)
	}
}

// TestWaitForAll: Wait returns once every run ended (here by the
// cancelled ctx they run under).
func TestWaitForAll(t *testing.T) {
	r := New(Limits{What: "tests", Keep: 10, Running: 2}, run)
	ctx, cancel := context.WithCancel(context.Background())
	var js []*Job[step, string]
	for _, id := range []string{"a", "b"} {
		j, err := r.Start(ctx, id, step{release: make(chan struct{})})
		if err != nil {
			t.Fatal(err)
		}
		js = append(js, j)
	}
	cancel()
	waited := make(chan struct{})
	go func() { r.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return after the runs' ctx ended")
	}
	for _, j := range js {
		if o := j.Outcome(); !o.Finished || !errors.Is(o.Err, context.Canceled) {
			t.Errorf("run %s after Wait: %+v", j.ID, o)
		}
	}
}
