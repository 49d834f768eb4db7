package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
// is damaged, wraps ErrStoreDamaged, repeats no prefix, and never panics
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
			st, err := OpenStore(dir, StoreOptions{Signer: e.gw, Claims: BatchClaims()})
			if err == nil {
				_ = st.Close()
				t.Fatal("a damaged store opened without error")
			}
			msg := err.Error()
			t.Logf("error: %s", msg)
			if !errors.Is(err, ErrStoreDamaged) {
				t.Fatalf("error does not wrap ErrStoreDamaged: %v", err)
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

// Issue 12, item 7: RepairStore on each damaged store keeps every record
// still intact (a cut table loses keys, not values: those records are
// read back from the value log), lists exactly the gseqs it lost, keeps a
// copy of the damaged store, and leaves a store that opens, serves what
// was kept and takes the lost readings again when devices resend them.
func TestRepairStore(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ext  string
		cut  int64
		lost func(*RepairReport) bool
	}{
		{"value log cut 100 bytes", ".vlog", 100, func(r *RepairReport) bool {
			return len(r.Lost) == 1 && r.Lost[0] == GSeqRange{400, 400}
		}},
		{"value log cut 64 KiB", ".vlog", 64 << 10, func(r *RepairReport) bool {
			return len(r.Lost) == 1 && r.Lost[0].To == 400 && r.Lost[0].From > 301 && r.Lost[0].From < 360
		}},
		{"table cut 100 bytes", ".sst", 100, func(r *RepairReport) bool {
			return len(r.Lost) == 0 && r.FromValueLog > 0 && len(r.DroppedTables) == 1
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newRepairEnv(t, 0)
			add := func(from, to int) {
				for g := from; g <= to; g++ {
					p := pending(e.a, uint64(g))
					p.Envelope = append(p.Envelope, []byte(strings.Repeat(" ", 600))...)
					if _, err := e.st.Append(context.Background(), p); err != nil {
						t.Fatal(err)
					}
				}
			}
			add(1, 300)
			blog := NewBatchLog(e.st.DB(), batchKeyPrefix)
			b, err := NewBatcher(e.st, blog, BatcherConfig{Interval: time.Hour, MaxRecords: 10000, Signer: e.gw,
				Log: slog.New(slog.DiscardHandler), Metrics: NewAnchorMetrics(prometheus.NewRegistry())})
			if err != nil {
				t.Fatal(err)
			}
			if sb, err := b.CutNow(); err != nil || sb.Last != 300 {
				t.Fatalf("cut: %v %v", sb, err)
			}
			add(301, 400)
			if err := e.st.Close(); err != nil {
				t.Fatal(err)
			}
			e.st = nil
			cutFile(t, newestFile(t, e.dir, tc.ext), tc.cut)

			rep, err := RepairStore(e.dir, time.Now(), nil)
			if err != nil {
				t.Fatalf("repair: %v", err)
			}
			t.Logf("repair: records %d (from value log %d), lost %v, batches %d, dropped tables %v, dropped batches %v",
				rep.Records, rep.FromValueLog, rep.Lost, rep.Batches, rep.DroppedTables, rep.DroppedBatch)
			if !tc.lost(rep) || rep.Records+rep.LostCount() != 400 || rep.Highest != 400 || rep.Batches != 1 {
				t.Fatalf("report %+v", rep)
			}
			if _, err := os.Stat(filepath.Join(rep.Backup, "MANIFEST")); err != nil {
				t.Fatalf("no copy of the damaged store: %v", err)
			}
			st, err := OpenStore(e.dir, StoreOptions{Signer: e.gw, Claims: BatchClaims()})
			if err != nil {
				t.Fatalf("the repaired store does not open: %v", err)
			}
			defer st.Close()
			lost := map[uint64]bool{}
			for _, l := range rep.Lost {
				for g := l.From; g <= l.To; g++ {
					lost[g] = true
				}
			}
			for g := uint64(1); g <= 400; g++ {
				r, err := st.Get(g)
				if lost[g] != (err != nil) {
					t.Fatalf("gseq %d: lost %v, read error %v", g, lost[g], err)
				}
				if err == nil && (r.GSeq != g || r.Seq != g) {
					t.Fatalf("gseq %d holds %+v", g, r)
				}
			}
			if _, err := NewBatchLog(st.DB(), batchKeyPrefix).Get(1); err != nil {
				t.Fatalf("batch 1: %v", err)
			}
			// The device resends what was lost: taken again, after gseq 400
			// for the numbers a batch covers, else from the first lost one.
			first := uint64(401)
			if len(rep.Lost) > 0 {
				first = rep.Lost[0].From
			}
			p := pending(e.a, first)
			p.Envelope = append(p.Envelope, []byte(strings.Repeat(" ", 600))...)
			r, err := st.Append(context.Background(), p)
			if err != nil {
				t.Fatalf("resend of seq %d after the repair: %v", first, err)
			}
			if r.GSeq != first || r.Seq != first {
				t.Fatalf("resend stored as %+v", r)
			}
		})
	}
}

// The context added to a store error does not repeat "gateway: " (the
// issue saw "gateway: batcher: gateway: batcher: ...").
func TestWrapErrNoRepeatedPrefix(t *testing.T) {
	inner := wrapErr(fmt.Errorf("gateway: record 5: %w", errValueUnreadable), "batch %d..%d", 1, 9)
	err := wrapErr(inner, "batcher")
	want := "gateway: batcher: batch 1..9: record 5: value unreadable: its value log is cut short or damaged"
	if err.Error() != want {
		t.Fatalf("got  %q\nwant %q", err.Error(), want)
	}
	if !errors.Is(err, errValueUnreadable) {
		t.Fatal("errors.Is lost the cause")
	}
}

// RepairStore keeps each device's open gaps: it rebuilds the seq state from
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
	if _, err := RepairStore(e.dir, time.Now(), nil); err != nil {
		t.Fatalf("repair: %v", err)
	}
	st, err := OpenStore(e.dir, StoreOptions{Signer: e.gw, Claims: BatchClaims()})
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
