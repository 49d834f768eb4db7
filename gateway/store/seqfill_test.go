package store

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/store/seqstate"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

// TestStoreLateFill: a seq inside an open gap is stored once as a late
// fill (a new gseq, no gap of its own) and closes it; a different envelope
// for it afterwards is a replay, the same bytes a resend; a seq below the
// last that never was in a gap stays a replay; a gap splits when a seq in
// its middle is filled; the open gaps survive a restart.
func TestStoreLateFill(t *testing.T) {
	dir := t.TempDir()
	gw := storeSigner(t)
	reg := prometheus.NewRegistry()
	st := openTestStore(t, dir, gw, NewMetrics(reg, dir))
	a := device.DID("did:ea:0000000000000000000000000000000a")
	gaps := func(s *Store, want [][2]uint64) {
		t.Helper()
		got, err := s.OpenGaps(a)
		if err != nil || (len(got)+len(want) > 0 && !reflect.DeepEqual(got, want)) {
			t.Fatalf("OpenGaps = %v, %v; want %v", got, err, want)
		}
	}
	type step struct {
		seq      uint64
		other    bool   // different envelope bytes than pending(a, seq)
		wantGSeq uint64 // 0: refused as replay
		wantGap  uint64
		wantDup  bool
	}
	run := func(s *Store, steps []step) {
		t.Helper()
		for i, sp := range steps {
			p := pending(a, sp.seq)
			if sp.other {
				p = pendingOther(a, sp.seq)
			}
			rec, dup, err := appendDup(t, s, p)
			if sp.wantGSeq == 0 {
				if !errors.Is(err, ErrReplay) {
					t.Fatalf("step %d (seq %d): err = %v, want ErrReplay", i, sp.seq, err)
				}
				continue
			}
			if err != nil || dup != sp.wantDup || rec.GSeq != sp.wantGSeq || rec.Gap != sp.wantGap || rec.Seq != sp.seq {
				t.Fatalf("step %d (seq %d): %+v dup %v err %v; want gseq %d gap %d dup %v",
					i, sp.seq, rec, dup, err, sp.wantGSeq, sp.wantGap, sp.wantDup)
			}
		}
	}
	run(st, []step{
		{seq: 1, wantGSeq: 1},
		{seq: 3, wantGSeq: 2, wantGap: 1}, // seq 2 refused (rate_limited) while 3 was stored
		{seq: 2, wantGSeq: 3},             // late fill
		{seq: 2, other: true},             // a second, different seq 2: replay
		{seq: 2, wantGSeq: 3, wantDup: true},
		{seq: 3, other: true},
		{seq: 8, wantGSeq: 4, wantGap: 4}, // opens 4..7
		{seq: 6, wantGSeq: 5},             // splits it: 4..5, 7..7
	})
	gaps(st, [][2]uint64{{4, 5}, {7, 7}})
	if got := testutil.GatherValue(t, reg, "edgeanchor_sequence_fills_total"); got != 2 {
		t.Fatalf("sequence_fills_total = %v, want 2", got)
	}
	if got := testutil.GatherValue(t, reg, "edgeanchor_sequence_gaps_total"); got != 2 {
		t.Fatalf("sequence_gaps_total = %v, want 2", got)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// After a restart the gaps are still open, and only they.
	st2 := openTestStore(t, dir, gw, nil)
	defer st2.Close()
	gaps(st2, [][2]uint64{{4, 5}, {7, 7}})
	run(st2, []step{
		{seq: 6, other: true},
		{seq: 7, wantGSeq: 6},
		{seq: 7, other: true},
		{seq: 4, wantGSeq: 7},
		{seq: 5, wantGSeq: 8},
		{seq: 5, wantGSeq: 8, wantDup: true},
		{seq: 9, wantGSeq: 9},
	})
	gaps(st2, nil)
	recs, err := st2.DeviceRecords(a, 1, 100, 100)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, r := range recs {
		seqs = append(seqs, r.Seq)
	}
	if want := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9}; !reflect.DeepEqual(seqs, want) {
		t.Fatalf("stored seqs %v, want %v", seqs, want)
	}
}

// TestStoreOpenGapsBound: past store.max_open_gaps the lowest open gap is
// closed for good (counted and logged); its seqs are replays from then on.
func TestStoreOpenGapsBound(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.MaxOpenGaps = 2
	st, err := Open(dir, Options{Config: cfg, Signer: storeSigner(t), Metrics: NewMetrics(reg, dir)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	a := device.DID("did:ea:0000000000000000000000000000000a")
	for _, seq := range []uint64{1, 3, 5, 7} { // gaps 2, 4, 6: 2 is closed
		if _, err := st.Append(ctx, pending(a, seq)); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := st.OpenGaps(a); !reflect.DeepEqual(got, [][2]uint64{{4, 4}, {6, 6}}) {
		t.Fatalf("OpenGaps = %v", got)
	}
	if got := testutil.GatherValue(t, reg, "edgeanchor_sequence_gaps_dropped_total"); got != 1 {
		t.Fatalf("sequence_gaps_dropped_total = %v, want 1", got)
	}
	if _, err := st.Append(ctx, pending(a, 2)); !errors.Is(err, ErrReplay) {
		t.Fatalf("seq 2 after its gap was closed: %v, want ErrReplay", err)
	}
	for _, seq := range []uint64{4, 6} {
		if _, err := st.Append(ctx, pending(a, seq)); err != nil {
			t.Fatalf("fill of seq %d: %v", seq, err)
		}
	}
	// A fill that splits a gap past the bound closes the lowest part.
	for _, seq := range []uint64{20, 30} { // gaps 8..19, 21..29
		if _, err := st.Append(ctx, pending(a, seq)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Append(ctx, pending(a, 25)); err != nil { // 21..24, 26..29; 8..19 closed
		t.Fatal(err)
	}
	if got, _ := st.OpenGaps(a); !reflect.DeepEqual(got, [][2]uint64{{21, 24}, {26, 29}}) {
		t.Fatalf("OpenGaps after a split = %v", got)
	}
	if _, err := st.Append(ctx, pending(a, 10)); !errors.Is(err, ErrReplay) {
		t.Fatalf("seq 10 after its gap was closed: %v, want ErrReplay", err)
	}
}

// TestStoreRepairKeepsOpenGaps: the repair at open, which deletes an
// unacknowledged tail and recomputes the touched devices' sequence state
// from the stored seqs, keeps the open gaps below.
func TestStoreRepairKeepsOpenGaps(t *testing.T) {
	e := newRepairEnv(t, 4) // a:1,2 b:1,2
	ctx := context.Background()
	if rec, err := e.st.Append(ctx, pending(e.a, 5)); err != nil || rec.Gap != 2 {
		t.Fatalf("a seq 5: %+v, %v", rec, err)
	}
	// gseq 6 failed; gseq 7 (a's seq 9) was written, never acknowledged.
	p := pending(e.a, 9)
	rec := &Record{GSeq: 7, DID: e.a, Seq: 9, Kind: p.Kind, Recv: time.Now().UTC(), Envelope: p.Envelope, Salt: make([]byte, 16)}
	var err error
	if rec.Receipt, err = encodeReceipt(e.st.gw, rec.GSeq, rec.DID, rec.Seq, rec.Recv, p.EnvHash); err != nil {
		t.Fatal(err)
	}
	if rec.ReceiptSig, err = e.gw.Sign(rec.Receipt); err != nil {
		t.Fatal(err)
	}
	results := make(chan error, 2)
	n, err := e.st.writeAsync([]*appendReq{{p: p, rec: rec, seqState: seqstate.State{Last: 9, Gaps: []seqstate.Range{{From: 3, To: 4}, {From: 6, To: 8}}}.Encode()}}, results)
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if _, deleted := e.reopen(t); deleted != 1 {
		t.Fatalf("repair deleted %v records, want 1", deleted)
	}
	if got, err := e.st.OpenGaps(e.a); err != nil || !reflect.DeepEqual(got, [][2]uint64{{3, 4}}) {
		t.Fatalf("OpenGaps(a) after repair = %v, %v; want [[3 4]]", got, err)
	}
	for _, seq := range []uint64{3, 6, 4} {
		if _, err := e.st.Append(ctx, pending(e.a, seq)); err != nil {
			t.Fatalf("a seq %d after repair: %v", seq, err)
		}
	}
}
