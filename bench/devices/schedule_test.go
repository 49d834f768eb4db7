package devices

import (
	"testing"
	"time"
)

// TestScheduleTaken: a device takes reading k at t0 + offset + k*interval,
// none at or after stop, and never more than it has signed.
func TestScheduleTaken(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s := schedule{t0: t0, interval: 10 * time.Second, stop: t0.Add(60 * time.Second)}
	off := 3 * time.Second
	for _, c := range []struct {
		at   time.Duration
		m    int
		want int
	}{
		{0, 10, 0},
		{3*time.Second - 1, 10, 0},
		{3 * time.Second, 10, 1},
		{12 * time.Second, 10, 1},
		{13 * time.Second, 10, 2},
		{59 * time.Second, 10, 6},
		{time.Hour, 10, 6}, // stop: 3, 13, …, 53
		{time.Hour, 4, 4},  // only 4 signed
	} {
		if got := s.taken(off, t0.Add(c.at), c.m); got != c.want {
			t.Errorf("taken at +%s with %d signed = %d, want %d", c.at, c.m, got, c.want)
		}
	}
	if got, want := s.at(off, 2), t0.Add(23*time.Second); !got.Equal(want) {
		t.Errorf("at(2) = %s, want %s", got, want)
	}
}

// TestSourceAddrsDistinct: the first 60,000 devices each get their own
// loopback address, none of them a .0 or .255.
func TestSourceAddrsDistinct(t *testing.T) {
	seen := map[string]int{}
	for i := range 60000 {
		a := sourceAddr(i)
		ip := a.IP.To4()
		if ip == nil || ip[0] != 127 || ip[3] == 0 || ip[3] == 255 || ip[2] == 0 || ip[1] == 0 {
			t.Fatalf("device %d: source address %s", i, a.IP)
		}
		if j, ok := seen[a.IP.String()]; ok {
			t.Fatalf("devices %d and %d share %s", j, i, a.IP)
		}
		seen[a.IP.String()] = i
	}
}
