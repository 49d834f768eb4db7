package listener

import (
	"fmt"
	"testing"
	"time"
)

// TestSourceLimiterFailures: a source's failures beyond its own budget do
// not spend the global one, and a spent global budget holds back only the
// sources that have failed recently.
func TestSourceLimiterFailures(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := newSourceLimiter(RateLimit{Rate: 1, Burst: 3}, RateLimit{Rate: 2, Burst: 6}, now)
	// One source fails 100 times: only its 3 reach the global budget.
	for range 100 {
		if l.check("10.0.0.1", now) == "" {
			l.failed("10.0.0.1", now)
		}
	}
	if got := l.check("10.0.0.1", now); got != ScopeSource {
		t.Fatalf("flooding source: %q, want %q", got, ScopeSource)
	}
	if l.all.tokens != 3 {
		t.Fatalf("global tokens %g after one source's flood, want 3 (its burst spent, no more)", l.all.tokens)
	}
	// Two more sources spend the rest of the global budget.
	for i := 2; i <= 3; i++ {
		src := fmt.Sprintf("10.0.0.%d", i)
		for range 2 {
			l.failed(src, now)
		}
	}
	if l.all.tokens >= 1 {
		t.Fatalf("global tokens %g, want spent", l.all.tokens)
	}
	if got := l.check("10.0.0.2", now); got != ScopeGlobal {
		t.Fatalf("source with failures while the global budget is spent: %q, want %q", got, ScopeGlobal)
	}
	if got := l.check("10.0.0.9", now); got != "" {
		t.Fatalf("source without failures: %q, want allowed", got)
	}
	// Time refills both.
	later := now.Add(10 * time.Second)
	if got := l.check("10.0.0.1", later); got != "" {
		t.Fatalf("after 10 s: %q, want allowed", got)
	}
}

// TestSourceLimiterAttempts: per-source first; a refused attempt spends
// nothing; idle sources are forgotten.
func TestSourceLimiterAttempts(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := newSourceLimiter(RateLimit{Rate: 1, Burst: 2}, RateLimit{Rate: 10, Burst: 5}, now)
	var got []string
	for range 4 {
		got = append(got, l.take("a", now))
	}
	if want := []string{"", "", ScopeSource, ScopeSource}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("source a: %q, want %q", got, want)
	}
	if l.all.tokens != 3 {
		t.Fatalf("global tokens %g, want 3", l.all.tokens)
	}
	for _, src := range []string{"b", "b", "c"} {
		if s := l.take(src, now); s != "" {
			t.Fatalf("%s: %q", src, s)
		}
	}
	if s := l.take("d", now); s != ScopeGlobal {
		t.Fatalf("d with the global budget spent: %q, want %q", s, ScopeGlobal)
	}
	l.mu.Lock()
	l.sweep(now.Add(time.Minute))
	n := len(l.sources)
	l.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d sources kept after they refilled, want 0", n)
	}
	if (*sourceLimiter)(nil).take("x", now) != "" || (*sourceLimiter)(nil).check("x", now) != "" {
		t.Fatal("a nil limiter must allow")
	}
}
