package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// damagedStore writes n records (~1 KiB values, in the value log) to a
// real store in a temporary directory and stops it cleanly.
func damagedStore(t *testing.T, n int) (string, *repairEnv) {
	t.Helper()
	e := newRepairEnv(t, 0)
	for g := 1; g <= n; g++ {
		p := pending(e.a, uint64(g))
		p.Envelope = append(p.Envelope, []byte(strings.Repeat(" ", 600))...)
		if _, err := e.st.Append(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	e.st = nil
	return e.dir, e
}

// newestFile returns the file of dir with the highest name ending in ext
// that is not empty.
func newestFile(t *testing.T, dir, ext string) string {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(dir, "*"+ext))
	sort.Strings(paths)
	for i := len(paths) - 1; i >= 0; i-- {
		if st, err := os.Stat(paths[i]); err == nil && st.Size() > 20 {
			return paths[i]
		}
	}
	t.Fatalf("no %s file in %s", ext, dir)
	return ""
}

func cutFile(t *testing.T, path string, n int64) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() <= n {
		t.Fatalf("%s has only %d bytes", path, st.Size())
	}
	if err := os.Truncate(path, st.Size()-n); err != nil {
		t.Fatal(err)
	}
}

// Issue 12, item 7: a store cut after a clean stop (the end of the newest
// value log, or of the newest table file) gives an error that names what
// is damaged, wraps ErrDamaged, repeats no prefix, and never panics
// (a cut table used to panic inside Badger and exit 2).
func TestDamagedStoreNamesTheFile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ext  string
		cut  int64
		want []string
	}{
		{"value log cut 100 bytes", ".vlog", 100, []string{"newest record gseq 400", ".vlog (cut from"}},
		{"value log cut 64 KiB", ".vlog", 64 << 10, []string{"newest record gseq 400", ".vlog (cut from"}},
		{"table cut 100 bytes", ".sst", 100, []string{"table file ", ".sst cannot be read"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, e := damagedStore(t, 400)
			victim := newestFile(t, dir, tc.ext)
			cutFile(t, victim, tc.cut)
			st, err := Open(dir, Options{Signer: e.gw})
			if err == nil {
				_ = st.Close()
				t.Fatal("a damaged store opened without error")
			}
			msg := err.Error()
			t.Logf("error: %s", msg)
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("error does not wrap ErrDamaged: %v", err)
			}
			if tc.ext == ".sst" && !strings.Contains(msg, victim) {
				t.Fatalf("error does not name %s: %s", victim, msg)
			}
			if !strings.Contains(msg, dir) && !strings.Contains(msg, victim) {
				t.Fatalf("error names neither the store nor the file: %s", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Fatalf("error lacks %q: %s", w, msg)
				}
			}
			if strings.Count(msg, "gateway:") > 1 {
				t.Fatalf("repeated prefix: %s", msg)
			}
		})
	}
}

// Repair keeps each device's open gaps: it rebuilds the seq state from
// the seqs still stored, so a reading the device skipped before the damage
// (seq 5 here) can still be stored as a late fill after the repair instead
// of being refused as a replay.
func TestRepairStoreKeepsOpenGaps(t *testing.T) {
	t.Parallel()
	e := newRepairEnv(t, 0)
	for _, seq := range []uint64{1, 2, 3, 4, 6, 7, 8} {
		if _, err := e.st.Append(context.Background(), pending(e.a, seq)); err != nil {
			t.Fatalf("append seq %d: %v", seq, err)
		}
	}
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	e.st = nil
	if _, err := Repair(e.dir, time.Now(), nil, nil); err != nil {
		t.Fatalf("repair: %v", err)
	}
	st, err := Open(e.dir, Options{Signer: e.gw})
	if err != nil {
		t.Fatalf("the repaired store does not open: %v", err)
	}
	defer st.Close()
	r, err := st.Append(context.Background(), pending(e.a, 5))
	if err != nil {
		t.Fatalf("late fill of seq 5 after the repair: %v", err)
	}
	if r.Seq != 5 || r.GSeq != 8 {
		t.Fatalf("late fill stored as %+v, want seq 5 at gseq 8", r)
	}
	if _, err := st.Append(context.Background(), pendingOther(e.a, 3)); !errors.Is(err, ErrReplay) {
		t.Fatalf("seq 3 (stored) with other bytes after the repair: %v, want ErrReplay", err)
	}
}
