package sim

import (
	"testing"
	"time"
)

// TestBackoffFullJitter: delays stay within a ceiling that starts at Min and
// doubles up to Max, are spread over the whole window (some below a quarter
// of it, not only between half and all of it), and Reset starts over.
func TestBackoffFullJitter(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for i, ceiling := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		ceiling *= time.Millisecond
		if d := b.Next(); d < 0 || d > ceiling {
			t.Fatalf("delay %d = %s, want within [0, %s]", i, d, ceiling)
		}
	}
	const n = 4000
	var low, high int
	var sum time.Duration
	for range n {
		d := b.Next()
		if d < 0 || d > b.Max {
			t.Fatalf("delay %s at the ceiling, want within [0, %s]", d, b.Max)
		}
		sum += d
		switch {
		case d < b.Max/4:
			low++
		case d > 3*b.Max/4:
			high++
		}
	}
	// Uniform on [0, Max]: about a quarter of the draws in each outer quarter.
	if low < n/8 || high < n/8 {
		t.Errorf("%d draws below Max/4 and %d above 3Max/4 of %d: not spread over the whole window", low, high, n)
	}
	if mean := sum / n; mean < 400*time.Millisecond || mean > 600*time.Millisecond {
		t.Errorf("mean delay %s, want about Max/2 (500ms)", mean)
	}
	b.Reset()
	if d := b.Next(); d > b.Min {
		t.Errorf("first delay after Reset %s, want at most Min %s", d, b.Min)
	}
}
