package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

func storeSigner(t testing.TB) *device.KeySigner {
	t.Helper()
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return device.NewKeySigner(priv)
}

func openTestStore(t testing.TB, dir string, s device.Signer, m *Metrics) *Store {
	t.Helper()
	st, err := Open(dir, Options{Signer: s, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func pending(did device.DID, seq uint64) Pending {
	env := []byte(fmt.Sprintf(`{"v":1,"did":%q,"seq":%d}`, did, seq))
	return Pending{DID: did, Seq: seq, Kind: device.KindDust, Envelope: env, EnvHash: anchor.Hash{}}
}

// pendingOther is pending with different envelope bytes (not a resend).
func pendingOther(did device.DID, seq uint64) Pending {
	p := pending(did, seq)
	p.Envelope = append(p.Envelope, ' ')
	return p
}

// appendDup is Append that also reports whether p was a resend.
func appendDup(t testing.TB, st *Store, p Pending) (*Record, bool, error) {
	t.Helper()
	wait, err := st.Enqueue(context.Background(), p)
	if err != nil {
		return nil, false, err
	}
	return wait()
}

func TestStoreAppendReplayRestart(t *testing.T) {
	dir := t.TempDir()
	gw := storeSigner(t)
	reg := prometheus.NewRegistry()
	st := openTestStore(t, dir, gw, NewMetrics(reg, dir))
	ctx := context.Background()
	a, b := device.DID("did:ea:0000000000000000000000000000000a"), device.DID("did:ea:0000000000000000000000000000000b")
	steps := []struct {
		did      device.DID
		seq      uint64
		wantGSeq uint64 // 0: refused as replay
		wantGap  uint64
		other    bool // different envelope bytes: a replay, not a resend
		wantDup  bool // an identical resend: the stored record, nothing new
	}{
		{a, 1, 1, 0, false, false}, {a, 2, 2, 0, false, false}, {b, 1, 3, 0, false, false},
		{a, 2, 0, 0, true, false}, {a, 1, 0, 0, true, false}, {a, 2, 2, 0, false, true}, {a, 1, 1, 0, false, true},
		{a, 5, 4, 2, false, false}, {b, 2, 5, 0, false, false}, {b, 1, 3, 0, false, true},
	}
	for i, s := range steps {
		p := pending(s.did, s.seq)
		if s.other {
			p = pendingOther(s.did, s.seq)
		}
		rec, dup, err := appendDup(t, st, p)
		if s.wantGSeq == 0 {
			if !errors.Is(err, ErrReplay) {
				t.Fatalf("step %d: err = %v, want ErrReplay", i, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if dup != s.wantDup {
			t.Fatalf("step %d: dup %v, want %v", i, dup, s.wantDup)
		}
		if rec.GSeq != s.wantGSeq || rec.Gap != s.wantGap {
			t.Fatalf("step %d: gseq %d gap %d, want %d %d", i, rec.GSeq, rec.Gap, s.wantGSeq, s.wantGap)
		}
		r, err := VerifyReceipt(rec.ReceiptMessage(), gw.Public())
		if err != nil || r.GSeq != rec.GSeq || r.Seq != s.seq || r.DID != s.did {
			t.Fatalf("step %d: receipt %+v, %v", i, r, err)
		}
	}
	if got := testutil.GatherValue(t, reg, "edgeanchor_sequence_gaps_total"); got != 1 {
		t.Fatalf("sequence_gaps_total = %v, want 1", got)
	}
	recs, err := st.DeviceRecords(a, 1, 10, 10)
	if err != nil || len(recs) != 3 || recs[2].Seq != 5 {
		t.Fatalf("DeviceRecords(a) = %d records, %v", len(recs), err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, pending(a, 9)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}

	st2 := openTestStore(t, dir, gw, nil)
	defer st2.Close()
	if st2.LastGSeq() != 5 {
		t.Fatalf("LastGSeq after reopen = %d", st2.LastGSeq())
	}
	if last, err := st2.LastSeq(a); err != nil || last != 5 {
		t.Fatalf("LastSeq(a) after reopen = %d, %v", last, err)
	}
	if _, err := st2.Append(ctx, pendingOther(a, 5)); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay after reopen: %v", err)
	}
	if r := st2.StoredDuplicate(a, 5, pendingOther(a, 5).Envelope); r != nil {
		t.Fatalf("StoredDuplicate of other bytes = gseq %d", r.GSeq)
	}
	if r := st2.StoredDuplicate(a, 5, pending(a, 5).Envelope); r == nil || r.GSeq != 4 {
		t.Fatalf("StoredDuplicate after reopen = %+v", r)
	}
	if r, dup, err := appendDup(t, st2, pending(a, 5)); err != nil || !dup || r.GSeq != 4 {
		t.Fatalf("resend after reopen: %+v, %v, %v", r, dup, err)
	}
	rec, err := st2.Append(ctx, pending(a, 6))
	if err != nil || rec.GSeq != 6 {
		t.Fatalf("append after reopen: %+v, %v", rec, err)
	}
	old, err := st2.Get(4)
	if err != nil || old.Seq != 5 || old.Recv.After(rec.Recv) {
		t.Fatalf("Get(4) = %+v, %v", old, err)
	}
	if _, err := st2.Get(99); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(99): %v", err)
	}
}

// TestStoreConcurrentDuplicates: many concurrent appends of the same
// (did, seq) store it exactly once; identical resends get the stored
// record (whether it was committed or still in flight), the rest are
// replays.
func TestStoreConcurrentDuplicates(t *testing.T) {
	st := openTestStore(t, t.TempDir(), storeSigner(t), nil)
	defer st.Close()
	did := device.DID("did:ea:0000000000000000000000000000000c")
	const n = 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	var stored, dups, replays int
	gseqOf := map[uint64]uint64{} // seq -> gseq answered
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(seq uint64) {
			defer wg.Done()
			rec, dup, err := appendDup(t, st, pending(did, seq))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				if g, ok := gseqOf[seq]; ok && g != rec.GSeq {
					t.Errorf("seq %d answered with gseq %d and %d", seq, g, rec.GSeq)
				}
				gseqOf[seq] = rec.GSeq
				if dup {
					dups++
				} else {
					stored++
				}
			case errors.Is(err, ErrReplay):
				replays++
			default:
				t.Error(err)
			}
		}(uint64(1 + i%4)) // seqs 1..4, ten times each
	}
	wg.Wait()
	for seq, g := range gseqOf {
		if r, err := st.Get(g); err != nil || r.Seq != seq {
			t.Fatalf("seq %d answered with gseq %d: %+v, %v", seq, g, r, err)
		}
	}
	// However the appends interleave, each seq is stored exactly once: the
	// first stored opens a gap below it that the lower ones fill (late
	// fills, seqstate.go).
	seen := map[uint64]bool{}
	var count int
	err := st.Range(1, st.LastGSeq(), func(r *Record) error {
		if seen[r.Seq] {
			return fmt.Errorf("gseq %d stores seq %d a second time", r.GSeq, r.Seq)
		}
		seen[r.Seq] = true
		count++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if count != stored || stored != 4 || stored+dups+replays != n || len(gseqOf) != stored {
		t.Fatalf("stored %d (range %d), resends %d, replays %d", stored, count, dups, replays)
	}
}

// TestStoreResendInFlight: a resend queued while its original is not yet
// committed waits for the original and gets its record; a different
// envelope with that seq queued the same way is a replay.
func TestStoreResendInFlight(t *testing.T) {
	st := openTestStore(t, t.TempDir(), storeSigner(t), nil)
	defer st.Close()
	did := device.DID("did:ea:0000000000000000000000000000000e")
	ctx := context.Background()
	var waits []func() (*Record, bool, error)
	for _, p := range []Pending{pending(did, 1), pending(did, 1), pendingOther(did, 1), pending(did, 1)} {
		w, err := st.Enqueue(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, w)
	}
	for i, w := range waits {
		rec, dup, err := w()
		switch i {
		case 2:
			if !errors.Is(err, ErrReplay) {
				t.Fatalf("other bytes: %+v, %v", rec, err)
			}
		default:
			if err != nil || rec.GSeq != 1 || dup != (i > 0) {
				t.Fatalf("append %d: %+v, dup %v, %v", i, rec, dup, err)
			}
		}
	}
	if st.LastGSeq() != 1 {
		t.Fatalf("LastGSeq = %d, want 1", st.LastGSeq())
	}
}

// TestStoreGroupCommitAcksAfterDisk: an acknowledged Append survives a
// reopen, with many writers at once (group commit) and a group limit small
// enough to split groups.
func TestStoreGroupCommitAcksAfterDisk(t *testing.T) {
	dir := t.TempDir()
	gw := storeSigner(t)
	st, err := Open(dir, Options{Signer: gw, Config: Config{MemTableMB: 4, BlockCacheMB: 1, IndexCacheMB: 1,
		ValueLogFileMB: 8, MaxGroupRecords: 7}})
	if err != nil {
		t.Fatal(err)
	}
	const devices, per = 8, 25
	var wg sync.WaitGroup
	acked := make(chan uint64, devices*per)
	for i := 0; i < devices; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			did := device.DID(fmt.Sprintf("did:ea:%032x", i+1))
			for seq := uint64(1); seq <= per; seq++ {
				rec, err := st.Append(context.Background(), pending(did, seq))
				if err != nil {
					t.Error(err)
					return
				}
				acked <- rec.GSeq
			}
		}(i)
	}
	wg.Wait()
	close(acked)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st2 := openTestStore(t, dir, gw, nil)
	defer st2.Close()
	seen := map[uint64]bool{}
	for g := range acked {
		if seen[g] {
			t.Fatalf("gseq %d acknowledged twice", g)
		}
		seen[g] = true
		if _, err := st2.Get(g); err != nil {
			t.Fatalf("acknowledged gseq %d missing after reopen: %v", g, err)
		}
	}
	if len(seen) != devices*per || st2.LastGSeq() != devices*per {
		t.Fatalf("%d acknowledged, LastGSeq %d", len(seen), st2.LastGSeq())
	}
	// Every receipt verifies; the commit groups' statements tile gseq
	// 1..200 without overlap, at most MaxGroupRecords each, and each
	// statement's signature is verified once.
	checker := &anchor.ReceiptChecker{Pub: gw.Public()}
	var next uint64 = 1
	groups := 0
	if err := st2.Range(1, devices*per, func(r *Record) error {
		if _, err := checker.Verify(r.Receipt, r.Group, r.Path, r.ReceiptSig); err != nil {
			return fmt.Errorf("gseq %d: %w", r.GSeq, err)
		}
		g, err := anchor.ParseReceiptGroup(r.Group)
		if err != nil {
			return err
		}
		if g.First == r.GSeq {
			if g.First != next || g.Count > 7 {
				return fmt.Errorf("group %d+%d, want it to start at %d with at most 7", g.First, g.Count, next)
			}
			next, groups = g.First+g.Count, groups+1
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if next != devices*per+1 || checker.SignaturesVerified() != groups {
		t.Fatalf("groups end at %d, %d groups, %d signatures verified", next, groups, checker.SignaturesVerified())
	}
}

func TestStoreChangedSignals(t *testing.T) {
	st := openTestStore(t, t.TempDir(), storeSigner(t), nil)
	defer st.Close()
	ch := st.Changed()
	select {
	case <-ch:
		t.Fatal("Changed closed before any commit")
	default:
	}
	if _, err := st.Append(context.Background(), pending("did:ea:0000000000000000000000000000000d", 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("Changed not closed after a commit")
	}
}

func TestStoreOpenErrors(t *testing.T) {
	if _, err := Open(t.TempDir(), Options{}); err == nil {
		t.Fatal("Open without a signer succeeded")
	}
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(f, Options{Signer: storeSigner(t)}); err == nil {
		t.Fatal("Open on a regular file succeeded")
	}
}

// BenchmarkStoreAppend measures group-commit throughput and the synced
// write latency (edgeanchor_store_write_seconds) with 256 concurrent
// writers, receipts signed.
func BenchmarkStoreAppend(b *testing.B) {
	dir := b.TempDir()
	reg := prometheus.NewRegistry()
	st := openTestStore(b, dir, storeSigner(b), NewMetrics(reg, dir))
	defer st.Close()
	env := make([]byte, 900)
	b.ResetTimer()
	const writers = 256
	var wg sync.WaitGroup
	per := b.N/writers + 1
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			did := device.DID(fmt.Sprintf("did:ea:%032x", w+1))
			for seq := uint64(1); seq <= uint64(per); seq++ {
				if _, err := st.Append(context.Background(), Pending{DID: did, Seq: seq, Kind: device.KindDust, Envelope: env, EnvHash: anchor.Hash{}}); err != nil {
					b.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(per*writers)/b.Elapsed().Seconds(), "records/s")
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "edgeanchor_store_write_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount())*1e3, "ms/commit")
		}
		if mf.GetName() == "edgeanchor_store_group_records" {
			h := mf.GetMetric()[0].GetHistogram()
			b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount()), "records/commit")
		}
	}
}

// repairEnv is a real store with records of two devices, reopened with
// metrics after a test changed its files.
type repairEnv struct {
	dir    string
	gw     *device.KeySigner
	st     *Store
	a, b   device.DID
	claims RecordClaims // given to the store at reopen
}

// newRepairEnv appends n records alternating between devices a and b
// (gseq g is device a's seq (g+1)/2 when g is odd, b's g/2 when even).
func newRepairEnv(t *testing.T, n int) *repairEnv {
	t.Helper()
	e := &repairEnv{dir: t.TempDir(), gw: storeSigner(t),
		a: "did:ea:0000000000000000000000000000000a", b: "did:ea:0000000000000000000000000000000b"}
	e.st = openTestStore(t, e.dir, e.gw, nil)
	for g := 1; g <= n; g++ {
		did, seq := e.a, uint64(g+1)/2
		if g%2 == 0 {
			did, seq = e.b, uint64(g/2)
		}
		rec, err := e.st.Append(context.Background(), pending(did, seq))
		if err != nil || rec.GSeq != uint64(g) {
			t.Fatalf("append %d: %+v, %v", g, rec, err)
		}
	}
	return e
}

// reopen closes the store and opens it again with metrics; it returns the
// new store and the values of the repair metrics.
func (e *repairEnv) reopen(t *testing.T) (holes, deleted float64) {
	t.Helper()
	if e.st != nil {
		if err := e.st.Close(); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	st, err := Open(e.dir, Options{Signer: e.gw, Metrics: NewMetrics(reg, e.dir), Claims: e.claims})
	if err != nil {
		t.Fatal(err)
	}
	e.st = st
	t.Cleanup(func() { _ = e.st.Close() })
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "edgeanchor_store_holes_total":
			holes = mf.GetMetric()[0].GetCounter().GetValue()
		case "edgeanchor_store_repair_deleted_total":
			deleted = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return holes, deleted
}

// present returns the gseqs stored, in order.
func (e *repairEnv) present(t *testing.T) []uint64 {
	t.Helper()
	var out []uint64
	if err := e.st.Range(0, ^uint64(0), func(r *Record) error {
		out = append(out, r.GSeq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *repairEnv) deleteKeys(t *testing.T, keys ...[]byte) {
	t.Helper()
	if err := e.st.DB().Update(func(txn *badger.Txn) error {
		for _, k := range keys {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func gseqs(from, to uint64, except ...uint64) []uint64 {
	var out []uint64
	for g := from; g <= to; g++ {
		if !slices.Contains(except, g) {
			out = append(out, g)
		}
	}
	return out
}

// TestStoreKeepsRecordsAroundDeletedRecord: a record deleted outside the
// gateway (in the middle, gseq 1, or the newest but one) never makes the
// reopened store delete another one; the hole is counted and the store
// carries on above the highest record.
func TestStoreKeepsRecordsAroundDeletedRecord(t *testing.T) {
	for _, tc := range []struct {
		name string
		gone uint64
		// alsoIndex deletes the record's device index too, as a write
		// that failed as a whole would leave it.
		alsoIndex bool
		// alsoMark deletes the acknowledged mark too.
		alsoMark bool
	}{
		{"middle", 5, false, false},
		{"middle with index", 5, true, false},
		{"first", 1, false, false},
		{"first with index", 1, true, false},
		{"first with index and mark", 1, true, true},
		{"newest but one", 9, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newRepairEnv(t, 10)
			keys := [][]byte{recordKey(tc.gone)}
			if tc.alsoIndex {
				did, seq := e.a, (tc.gone+1)/2
				if tc.gone%2 == 0 {
					did, seq = e.b, tc.gone/2
				}
				keys = append(keys, devSeqKey(did, seq))
			}
			if tc.alsoMark {
				if err := e.st.Close(); err != nil { // Close writes the mark
					t.Fatal(err)
				}
				db, err := badger.Open(badger.DefaultOptions(e.dir).WithLogger(nil))
				if err != nil {
					t.Fatal(err)
				}
				if err := db.Update(func(txn *badger.Txn) error {
					for _, k := range append(keys, []byte(ackedKey)) {
						if err := txn.Delete(k); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
				e.st = nil
			} else {
				e.deleteKeys(t, keys...)
			}
			holes, deleted := e.reopen(t)
			if got, want := e.present(t), gseqs(1, 10, tc.gone); !slices.Equal(got, want) {
				t.Fatalf("after reopen: records %v, want %v", got, want)
			}
			if holes != 1 || deleted != 0 {
				t.Fatalf("holes_total %v, repair_deleted_total %v; want 1, 0", holes, deleted)
			}
			if got := e.st.LastGSeq(); got != 10 {
				t.Fatalf("LastGSeq %d, want 10", got)
			}
			for did, want := range map[device.DID]uint64{e.a: 5, e.b: 5} {
				if got, err := e.st.LastSeq(did); err != nil || got != want {
					t.Fatalf("LastSeq(%s) = %d, %v; want %d", did, got, err, want)
				}
			}
			rec, err := e.st.Append(context.Background(), pending(e.a, 6))
			if err != nil || rec.GSeq != 11 {
				t.Fatalf("append after reopen: %+v, %v", rec, err)
			}
		})
	}
}

// claimsThrough is a RecordClaims that refers to gseqs 1..n, as the batch
// log does once it holds a batch ending at n (its side of the contract is
// tested in gateway/batch).
type claimsThrough uint64

func (c claimsThrough) ClaimedThrough(*badger.DB) (uint64, error) { return uint64(c), nil }
func (c claimsThrough) CheckTail(*badger.DB) (string, error)      { return "", nil }

// TestStoreKeepsBatchedRecordsAboveHole: even with the acknowledged mark
// rewound (a crash right after a write), records covered by a stored batch
// (claimed) are never deleted.
func TestStoreKeepsBatchedRecordsAboveHole(t *testing.T) {
	e := newRepairEnv(t, 6)
	e.claims = claimsThrough(6)
	e.deleteKeys(t, recordKey(4), devSeqKey(e.b, 2))
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	// Rewind the mark as if the last writes had not been acknowledged.
	db, err := badger.Open(badger.DefaultOptions(e.dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(ackedKey), u64(0)) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	e.st = nil
	holes, deleted := e.reopen(t)
	if got, want := e.present(t), gseqs(1, 6, 4); !slices.Equal(got, want) {
		t.Fatalf("after reopen: records %v, want %v", got, want)
	}
	if holes != 1 || deleted != 0 {
		t.Fatalf("holes_total %v, repair_deleted_total %v; want 1, 0", holes, deleted)
	}
}

// TestStoreRepairsFailedWriteTail: the legitimate case. Records written
// by the real write path above a hole (the group below them failed) and
// never acknowledged are deleted at open, and only they; the devices' last
// seqs follow and the next append fills the hole's gseq.
func TestStoreRepairsFailedWriteTail(t *testing.T) {
	e := newRepairEnv(t, 4) // a:1,2 b:1,2 acknowledged
	st := e.st
	// gseq 5 (a's seq 3) was in a group whose write failed; gseq 6 and 7
	// (b's seq 3, a's seq 4) were in the next group, written but never
	// acknowledged because ackLoop stops at the failure.
	var reqs []*appendReq
	for _, r := range []struct {
		g   uint64
		did device.DID
		seq uint64
	}{{6, e.b, 3}, {7, e.a, 4}} {
		p := pending(r.did, r.seq)
		rec := &Record{GSeq: r.g, DID: r.did, Seq: r.seq, Kind: p.Kind, Recv: time.Now().UTC(), Envelope: p.Envelope,
			Salt: make([]byte, 16)}
		var err error
		if rec.Receipt, err = encodeReceipt(st.gw, rec.GSeq, rec.DID, rec.Seq, rec.Recv, p.EnvHash); err != nil {
			t.Fatal(err)
		}
		if rec.ReceiptSig, err = e.gw.Sign(rec.Receipt); err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, &appendReq{p: p, rec: rec})
	}
	results := make(chan error, 4)
	n, err := st.writeAsync(reqs, results)
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if got, want := e.present(t), []uint64{1, 2, 3, 4, 6, 7}; !slices.Equal(got, want) {
		t.Fatalf("before reopen: records %v, want %v", got, want)
	}
	holes, deleted := e.reopen(t)
	if got, want := e.present(t), gseqs(1, 4); !slices.Equal(got, want) {
		t.Fatalf("after repair: records %v, want %v", got, want)
	}
	if holes != 0 || deleted != 2 {
		t.Fatalf("holes_total %v, repair_deleted_total %v; want 0, 2", holes, deleted)
	}
	if got := e.st.LastGSeq(); got != 4 {
		t.Fatalf("LastGSeq after repair = %d, want 4", got)
	}
	for did, want := range map[device.DID]uint64{e.a: 2, e.b: 2} {
		if got, err := e.st.LastSeq(did); err != nil || got != want {
			t.Fatalf("LastSeq(%s) = %d, %v; want %d", did, got, err, want)
		}
	}
	if rs, err := e.st.DeviceRecords(e.b, 3, 3, 10); err != nil || len(rs) != 0 {
		t.Fatalf("device index of a deleted record: %v, %v", rs, err)
	}
	rec, err := e.st.Append(context.Background(), pending(e.a, 3))
	if err != nil || rec.GSeq != 5 {
		t.Fatalf("append after repair: %+v, %v", rec, err)
	}
}

func TestRecordEncodingRoundTrip(t *testing.T) {
	r := &Record{GSeq: 7, DID: "did:ea:0000000000000000000000000000000e", Seq: 3, Kind: device.KindDust,
		Recv: time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC), Gap: 2, Envelope: []byte(`{"v":1}`),
		Salt: make([]byte, 16), Receipt: []byte(`{"type":"Receipt"}`), ReceiptSig: []byte{1, 2, 3},
		Group: []byte(`{"type":"ReceiptGroup"}`), Path: []anchor.Hash{anchor.SM3([]byte("a")), anchor.SM3([]byte("b"))}}
	b := encodeRecord(r)
	var got Record
	if err := decodeRecord(b, &got); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(*r) || !got.Recv.Equal(r.Recv) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, *r)
	}
	for i := 0; i < len(b); i++ {
		if err := decodeRecord(b[:i], &got); err == nil {
			t.Fatalf("truncated to %d bytes decoded", i)
		}
	}
	if err := decodeRecord(append(b, 0), &got); err == nil {
		t.Fatal("trailing byte decoded")
	}
	// Format 1 (before group signing) decodes to the record without group
	// and path.
	old := *r
	old.Group, old.Path = nil, nil
	got = Record{Group: []byte("stale"), Path: r.Path}
	if err := decodeRecord(encodeRecordV1(&old), &got); err != nil || fmt.Sprint(got) != fmt.Sprint(old) {
		t.Fatalf("format 1: %v\n got %+v\nwant %+v", err, got, old)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(&Record{GSeq: 1, DID: "did:ea:x", Seq: 1, Kind: "k", Recv: time.Unix(1, 0), Envelope: []byte("e")}))
	f.Add([]byte{1, 0xff, 0xff})
	f.Add(encodeRecordV1(&Record{GSeq: 2, DID: "did:ea:x", Seq: 1, Kind: "k", Recv: time.Unix(1, 0), Envelope: []byte("e")}))
	f.Add(encodeRecord(&Record{GSeq: 3, DID: "did:ea:x", Seq: 1, Kind: "k", Recv: time.Unix(1, 0), Envelope: []byte("e"),
		Group: []byte("g"), Path: []anchor.Hash{{1}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		if decodeRecord(b, &r) == nil {
			// What decodes re-encodes (canonically) to the same record.
			var r2 Record
			if err := decodeRecord(encodeRecord(&r), &r2); err != nil || fmt.Sprint(r2) != fmt.Sprint(r) {
				t.Fatalf("re-encoding differs: %v", err)
			}
		}
	})
}

// BenchmarkStorePipelined measures the store alone with writes queued
// ahead (as the broker does for QoS 1): its ceiling in records/s.
func BenchmarkStorePipelined(b *testing.B) {
	dir := b.TempDir()
	reg := prometheus.NewRegistry()
	st := openTestStore(b, dir, storeSigner(b), NewMetrics(reg, dir))
	defer st.Close()
	env := make([]byte, 900)
	waits := make(chan func() (*Record, bool, error), 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for w := range waits {
			if _, _, err := w(); err != nil {
				b.Error(err)
			}
		}
	}()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		did := device.DID(fmt.Sprintf("did:ea:%032x", i%1000+1))
		w, err := st.Enqueue(context.Background(), Pending{DID: did, Seq: uint64(i/1000 + 1), Kind: device.KindDust, Envelope: env, EnvHash: anchor.Hash{}})
		if err != nil {
			b.Fatal(err)
		}
		waits <- w
	}
	close(waits)
	<-done
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "edgeanchor_store_write_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount())*1e3, "ms/commit")
		}
		if mf.GetName() == "edgeanchor_store_group_records" {
			h := mf.GetMetric()[0].GetHistogram()
			b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount()), "records/commit")
		}
	}
}
