package batch

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// paddedEnv is a real record store in a temporary directory, opened with
// the batch log's claims, and device a writing to it.
type paddedEnv struct {
	dir string
	gw  *device.KeySigner
	st  *store.Store
	a   device.DID
}

func newPaddedEnv(t *testing.T) *paddedEnv {
	t.Helper()
	e := &paddedEnv{dir: t.TempDir(), gw: testKey(t), a: "did:ea:0000000000000000000000000000000a"}
	st, err := store.Open(e.dir, store.Options{Signer: e.gw, Claims: Claims()})
	if err != nil {
		t.Fatal(err)
	}
	e.st = st
	return e
}

// paddedPending is a message of ~700 bytes (its record goes to the value
// log).
func paddedPending(did device.DID, seq uint64) store.Pending {
	env := []byte(fmt.Sprintf(`{"v":1,"did":%q,"seq":%d}`, did, seq) + strings.Repeat(" ", 600))
	return store.Pending{DID: did, Seq: seq, Kind: device.KindDust, Envelope: env, EnvHash: anchor.Hash{}}
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

// Issue 12, item 7: store.Repair with the batch log's Repairer (what
// gateway.RepairStore runs) on each damaged store keeps every record
// still intact (a cut table loses keys, not values: those records are
// read back from the value log), lists exactly the gseqs it lost, keeps a
// copy of the damaged store, and leaves a store that opens, serves what
// was kept and takes the lost readings again when devices resend them.
func TestRepairStoreWithBatches(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ext  string
		cut  int64
		lost func(*store.RepairReport) bool
	}{
		{"value log cut 100 bytes", ".vlog", 100, func(r *store.RepairReport) bool {
			return len(r.Lost) == 1 && r.Lost[0] == store.GSeqRange{From: 400, To: 400}
		}},
		{"value log cut 64 KiB", ".vlog", 64 << 10, func(r *store.RepairReport) bool {
			return len(r.Lost) == 1 && r.Lost[0].To == 400 && r.Lost[0].From > 301 && r.Lost[0].From < 360
		}},
		{"table cut 100 bytes", ".sst", 100, func(r *store.RepairReport) bool {
			return len(r.Lost) == 0 && r.FromValueLog > 0 && len(r.DroppedTables) == 1
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newPaddedEnv(t)
			add := func(from, to int) {
				for g := from; g <= to; g++ {
					p := paddedPending(e.a, uint64(g))
					if _, err := e.st.Append(context.Background(), p); err != nil {
						t.Fatal(err)
					}
				}
			}
			add(1, 300)
			blog := NewLog(e.st.DB(), keyPrefix)
			b, err := NewBatcher(e.st, blog, BatcherConfig{Interval: time.Hour, MaxRecords: 10000, Signer: e.gw,
				Log: slog.New(slog.DiscardHandler), Metrics: NewMetrics(prometheus.NewRegistry())})
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

			br := NewRepairer()
			rep, err := store.Repair(e.dir, time.Now(), nil, br)
			if err != nil {
				t.Fatalf("repair: %v", err)
			}
			t.Logf("repair: records %d (from value log %d), lost %v, batches %d, dropped tables %v, dropped batches %v",
				rep.Records, rep.FromValueLog, rep.Lost, br.Report.Batches, rep.DroppedTables, br.Report.DroppedBatch)
			if !tc.lost(rep) || rep.Records+rep.LostCount() != 400 || rep.Highest != 400 || br.Report.Batches != 1 {
				t.Fatalf("report %+v, batches %+v", rep, br.Report)
			}
			if _, err := os.Stat(filepath.Join(rep.Backup, "MANIFEST")); err != nil {
				t.Fatalf("no copy of the damaged store: %v", err)
			}
			st, err := store.Open(e.dir, store.Options{Signer: e.gw, Claims: Claims()})
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
			if _, err := NewLog(st.DB(), keyPrefix).Get(1); err != nil {
				t.Fatalf("batch 1: %v", err)
			}
			// The device resends what was lost: taken again, after gseq 400
			// for the numbers a batch covers, else from the first lost one.
			first := uint64(401)
			if len(rep.Lost) > 0 {
				first = rep.Lost[0].From
			}
			p := paddedPending(e.a, first)
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
