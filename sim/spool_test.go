package sim

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestSpoolBoundDropsOldestAndCounts(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 5)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for seq := uint64(1); seq <= 8; seq++ {
		n, err := s.Put(seq, fmt.Appendf(nil, "env-%d", seq))
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if got, want := s.Pending(0, 100), []uint64{4, 5, 6, 7, 8}; !slices.Equal(got, want) {
		t.Fatalf("pending %v, want %v", got, want)
	}
	if total != 3 || s.Dropped() != 3 {
		t.Fatalf("dropped %d (Put said %d), want 3", s.Dropped(), total)
	}
	if _, err := s.Get(2); err == nil {
		t.Fatal("dropped reading still readable")
	}
	if b, err := s.Get(4); err != nil || string(b) != "env-4" {
		t.Fatalf("Get(4) = %q, %v", b, err)
	}
	if err := s.Delete(4); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(4); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := s.Put(8, []byte("again")); err == nil {
		t.Fatal("Put accepted a sequence number that is not increasing")
	}

	// A crash mid-write leaves a temporary file; reopening ignores it and
	// keeps the readings and the drop counter.
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d.env.tmp", 9)), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenSpool(dir, 5)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s2.Pending(0, 100), []uint64{5, 6, 7, 8}; !slices.Equal(got, want) {
		t.Fatalf("after reopen pending %v, want %v", got, want)
	}
	if s2.Dropped() != 3 {
		t.Fatalf("after reopen dropped %d, want 3", s2.Dropped())
	}
	if got := s2.Pending(6, 1); !slices.Equal(got, []uint64{7}) {
		t.Fatalf("Pending(6, 1) = %v", got)
	}
	if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%020d.env.tmp", 9))); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%020d.env", 5)))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("spooled reading has mode %v, want 0600", fi.Mode().Perm())
	}
}
