package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

// countingSigner counts signatures; with fail set it refuses to sign.
type countingSigner struct {
	device.Signer
	n    atomic.Int32
	fail atomic.Bool
}

func (c *countingSigner) Sign(msg []byte) ([]byte, error) {
	c.n.Add(1)
	if c.fail.Load() {
		return nil, errors.New("signer unavailable")
	}
	return c.Signer.Sign(msg)
}

// runGroup hands group to the writer as prepLoop would (prepare, then the
// commit and acknowledgement loops) and returns each request's outcome.
// The store must have no other appends running: prepLoop is idle, so the
// test goroutine stands in for it.
func runGroup(t *testing.T, st *Store, ps []Pending) []appendRes {
	t.Helper()
	group := make([]*appendReq, len(ps))
	for i, p := range ps {
		group[i] = &appendReq{p: p, done: make(chan appendRes, 1)}
	}
	st.prepare(group)
	st.prepped <- group
	out := make([]appendRes, len(group))
	for i, r := range group {
		select {
		case out[i] = <-r.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("request %d not answered", i)
		}
	}
	return out
}

// TestStoreSignsOncePerGroup: one signature per commit group; every record
// of the group carries the statement, its own path and that signature, and
// each verifies alone, from the Append answer and from disk.
func TestStoreSignsOncePerGroup(t *testing.T) {
	gw := &countingSigner{Signer: storeSigner(t)}
	st := openTestStore(t, t.TempDir(), gw, nil)
	defer st.Close()
	a, b, c := device.DID("did:ea:0000000000000000000000000000000a"), device.DID("did:ea:0000000000000000000000000000000b"),
		device.DID("did:ea:0000000000000000000000000000000c")

	// A group of one.
	res := runGroup(t, st, []Pending{pending(a, 1)})
	if res[0].err != nil || res[0].rec.GSeq != 1 {
		t.Fatalf("group of one: %+v", res[0])
	}
	if n := gw.n.Load(); n != 1 {
		t.Fatalf("%d signatures for a group of one", n)
	}
	if g, err := anchor.ParseReceiptGroup(res[0].rec.Group); err != nil || g.First != 1 || g.Count != 1 || len(res[0].rec.Path) != 0 {
		t.Fatalf("group of one: statement %s (%v), path %v", res[0].rec.Group, err, res[0].rec.Path)
	}

	// A group of many, with a resend (in the same group) and a replay in
	// it: neither takes a gseq, so the new records are gseq 2..11.
	ps := []Pending{pending(b, 1), pending(a, 2), pending(b, 1), pendingOther(c, 1), pendingOther(a, 2)}
	for seq := uint64(3); seq <= 8; seq++ {
		ps = append(ps, pending(a, seq))
	}
	ps = append(ps, pending(c, 2))
	res = runGroup(t, st, ps)
	if n := gw.n.Load(); n != 2 {
		t.Fatalf("%d signatures after two groups, want 2", n)
	}
	checker := &anchor.ReceiptChecker{Pub: gw.Public()}
	var stmt, sig []byte
	want := uint64(2)
	for i, r := range res {
		switch i {
		case 2: // resend of b's seq 1 in the same group
			if r.err != nil || !r.dup || r.rec.GSeq != 2 {
				t.Fatalf("resend: %+v", r)
			}
		case 4: // other bytes under a's seq 2
			if !errors.Is(r.err, ErrReplay) {
				t.Fatalf("replay: %+v", r)
			}
			continue
		default:
			if r.err != nil || r.dup || r.rec.GSeq != want {
				t.Fatalf("request %d: %+v, want gseq %d", i, r, want)
			}
			want++
		}
		if stmt == nil {
			stmt, sig = r.rec.Group, r.rec.ReceiptSig
		}
		if !bytes.Equal(r.rec.Group, stmt) || !bytes.Equal(r.rec.ReceiptSig, sig) {
			t.Fatalf("request %d: another statement or signature in one group", i)
		}
		rc, err := VerifyReceipt(r.rec.ReceiptMessage(), gw.Public())
		if err != nil || rc.GSeq != r.rec.GSeq || rc.DID != r.rec.DID || rc.Seq != r.rec.Seq {
			t.Fatalf("request %d: receipt %+v, %v", i, rc, err)
		}
	}
	g, err := anchor.ParseReceiptGroup(stmt)
	if err != nil || g.First != 2 || g.Count != 10 || g.Gateway != gw.DID() {
		t.Fatalf("statement %s: %+v %v", stmt, g, err)
	}
	if !device.VerifySignature(gw.Public(), stmt, sig) {
		t.Fatal("the signature is not over the statement")
	}
	// From disk: the same receipts, each verifying alone; the checker
	// verifies the two statements' signatures once each.
	n := 0
	if err := st.Range(1, 100, func(r *Record) error {
		n++
		if _, err := checker.Verify(r.Receipt, r.Group, r.Path, r.ReceiptSig); err != nil {
			return fmt.Errorf("gseq %d: %w", r.GSeq, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 11 || checker.SignaturesVerified() != 2 {
		t.Fatalf("%d records on disk, %d signatures verified; want 11, 2", n, checker.SignaturesVerified())
	}
}

// TestStoreGroupSignatureFailure: a group whose statement cannot be signed
// stores nothing and fails the store (its gseqs were assigned: anything
// stored after them would leave a hole); after a restart gseq goes on from
// the last stored record.
func TestStoreGroupSignatureFailure(t *testing.T) {
	dir := t.TempDir()
	gw := &countingSigner{Signer: storeSigner(t)}
	st := openTestStore(t, dir, gw, nil)
	a := device.DID("did:ea:0000000000000000000000000000000a")
	if _, err := st.Append(context.Background(), pending(a, 1)); err != nil {
		t.Fatal(err)
	}
	gw.fail.Store(true)
	res := runGroup(t, st, []Pending{pending(a, 2), pending(a, 3)})
	for i, r := range res {
		if !errors.Is(r.err, ErrFailed) {
			t.Fatalf("request %d: %+v, want ErrFailed", i, r)
		}
	}
	if !errors.Is(st.Healthy(), ErrFailed) {
		t.Fatalf("Healthy = %v after a failed signature", st.Healthy())
	}
	if _, err := st.Append(context.Background(), pending(a, 4)); !errors.Is(err, ErrFailed) {
		t.Fatalf("append after the failure: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	gw.fail.Store(false)
	st = openTestStore(t, dir, gw, nil)
	defer st.Close()
	rec, err := st.Append(context.Background(), pending(a, 2))
	if err != nil || rec.GSeq != 2 {
		t.Fatalf("after restart: %+v, %v (want gseq 2)", rec, err)
	}
}

// encodeRecordV1 is the stored record encoding before group signing
// (format 1), kept to prove that such stores stay readable.
func encodeRecordV1(r *Record) []byte {
	b := []byte{1}
	b = binary.AppendUvarint(b, r.GSeq)
	b = binary.AppendUvarint(b, r.Seq)
	b = binary.AppendUvarint(b, r.Gap)
	b = binary.AppendVarint(b, r.Recv.UnixNano())
	for _, f := range [][]byte{[]byte(r.DID), []byte(r.Kind), r.Envelope, r.Salt, r.Receipt, r.ReceiptSig} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

// TestStoreReadsPerRecordFormat: a store written before group signing
// (format 1 values, receipts signed per record) opens, serves its records
// with receipts that verify, and goes on with group-signed records.
func TestStoreReadsPerRecordFormat(t *testing.T) {
	dir := t.TempDir()
	gw := storeSigner(t)
	a := device.DID("did:ea:0000000000000000000000000000000a")
	st := openTestStore(t, dir, gw, nil)
	recv := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	err := st.DB().Update(func(txn *badger.Txn) error {
		for g := uint64(1); g <= 3; g++ {
			p := pending(a, g)
			rec := &Record{GSeq: g, DID: a, Seq: g, Kind: p.Kind, Recv: recv, Envelope: p.Envelope, Salt: make([]byte, 16)}
			var err error
			if rec.Receipt, err = encodeReceipt(gw.DID(), g, a, g, recv, anchor.SM3(p.Envelope)); err != nil {
				return err
			}
			if rec.ReceiptSig, err = gw.Sign(rec.Receipt); err != nil {
				return err
			}
			for _, kv := range [][2][]byte{{recordKey(g), encodeRecordV1(rec)}, {devSeqKey(a, g), u64(g)}, {lastSeqKey(a), u64(g)}, {[]byte(ackedKey), u64(g)}} {
				if err := txn.Set(kv[0], kv[1]); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openTestStore(t, dir, gw, nil)
	defer st.Close()
	if st.LastGSeq() != 3 {
		t.Fatalf("LastGSeq = %d, want 3", st.LastGSeq())
	}
	old, err := st.Get(2)
	if err != nil {
		t.Fatal(err)
	}
	if old.Group != nil || old.Path != nil || old.Seq != 2 || !old.Recv.Equal(recv) {
		t.Fatalf("format 1 record decoded as %+v", old)
	}
	msg := old.ReceiptMessage()
	if strings.Contains(string(msg), `"group"`) || strings.Contains(string(msg), `"path"`) {
		t.Fatalf("per-record receipt message %s", msg)
	}
	if r, err := VerifyReceipt(msg, gw.Public()); err != nil || r.GSeq != 2 {
		t.Fatalf("per-record receipt: %+v, %v", r, err)
	}
	// The old record's resend is still recognised; the next record is
	// group-signed.
	if rec, dup, err := appendDup(t, st, pending(a, 3)); err != nil || !dup || rec.GSeq != 3 {
		t.Fatalf("resend of an old record: %+v %v %v", rec, dup, err)
	}
	rec, err := st.Append(context.Background(), pending(a, 4))
	if err != nil || rec.GSeq != 4 || rec.Group == nil {
		t.Fatalf("next record: %+v, %v", rec, err)
	}
	checker := &anchor.ReceiptChecker{Pub: gw.Public()}
	if err := st.Range(1, 4, func(r *Record) error {
		_, err := checker.Verify(r.Receipt, r.Group, r.Path, r.ReceiptSig)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func TestReceiptMessageJSON(t *testing.T) {
	h1, h2 := anchor.SM3([]byte("a")), anchor.SM3([]byte("b"))
	for _, tc := range []struct {
		name string
		m    ReceiptMessage
		want string
	}{
		{"per-record", ReceiptMessage{Receipt: []byte("r"), Sig: []byte{1}},
			`{"receipt":"cg==","sig":"AQ=="}`},
		{"group of one", ReceiptMessage{Receipt: []byte("r"), Group: []byte("g"), Sig: []byte{1}},
			`{"receipt":"cg==","group":"Zw==","path":[],"sig":"AQ=="}`},
		{"group, anchored", ReceiptMessage{Receipt: []byte("r"), Group: []byte("g"), Path: []anchor.Hash{h1, h2}, Sig: []byte{1},
			Batch: 3, Height: 77, TX: "AB12"},
			`{"receipt":"cg==","group":"Zw==","path":["` + h1.String() + `","` + h2.String() + `"],"sig":"AQ==","batch":3,"height":77,"tx":"AB12"}`},
	} {
		got, err := json.Marshal(tc.m)
		if err != nil || string(got) != tc.want {
			t.Fatalf("%s: %s (%v)\nwant %s", tc.name, got, err, tc.want)
		}
		var back ReceiptMessage
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatal(err)
		}
		if again, _ := json.Marshal(back); string(again) != tc.want {
			t.Fatalf("%s: round trip %s", tc.name, again)
		}
	}
}

// TestVerifyReceiptMessageTampered: the receipt message a device gets
// verifies, and any single change to it does not.
func TestVerifyReceiptMessageTampered(t *testing.T) {
	gw := storeSigner(t)
	st := openTestStore(t, t.TempDir(), gw, nil)
	defer st.Close()
	var ps []Pending
	for seq := uint64(1); seq <= 5; seq++ {
		ps = append(ps, pending("did:ea:0000000000000000000000000000000a", seq))
	}
	res := runGroup(t, st, ps)
	rec := res[2].rec
	good := rec.Message()
	if _, err := VerifyReceipt(rec.ReceiptMessage(), gw.Public()); err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(m *ReceiptMessage){
		"body":               func(m *ReceiptMessage) { m.Receipt = bytes.Replace(m.Receipt, []byte(`"seq":3`), []byte(`"seq":4`), 1) },
		"path hash":          func(m *ReceiptMessage) { m.Path[0][0] ^= 1 },
		"path of a neighbor": func(m *ReceiptMessage) { m.Path = res[3].rec.Path },
		"statement":          func(m *ReceiptMessage) { m.Group = bytes.Replace(m.Group, []byte(`"count":5`), []byte(`"count":6`), 1) },
		"signature":          func(m *ReceiptMessage) { m.Sig[len(m.Sig)-1] ^= 1 },
		"no statement":       func(m *ReceiptMessage) { m.Group, m.Path = nil, nil },
	} {
		m := good
		m.Receipt, m.Group, m.Sig = bytes.Clone(good.Receipt), bytes.Clone(good.Group), bytes.Clone(good.Sig)
		m.Path = append([]anchor.Hash(nil), good.Path...)
		change(&m)
		msg, _ := json.Marshal(m)
		if _, err := VerifyReceipt(msg, gw.Public()); !errors.Is(err, ErrReceipt) || !errors.Is(err, anchor.ErrReceipt) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestStoreGroupLinger: records that arrive together make the writer wait
// (store.group_linger) for more before it commits, so a record arriving
// after the writer took a burst joins the burst's group (one signature); a
// lone record on an idle store is committed without waiting.
func TestStoreGroupLinger(t *testing.T) {
	open := func(linger time.Duration) *Store {
		cfg := DefaultConfig()
		cfg.GroupLinger = linger
		st, err := Open(t.TempDir(), Options{Signer: storeSigner(t), Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	ctx := context.Background()

	idle := open(10 * time.Second)
	start := time.Now()
	if _, err := idle.Append(ctx, pending(storeSigner(t).DID(), 1)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d >= 5*time.Second {
		t.Fatalf("a lone record took %s: it waited for the linger", d)
	}

	st := open(time.Second)
	const burst = 40
	recs := make([]*Record, burst+1)
	errs := make(chan error, burst+1)
	release := make(chan struct{})
	var queued, wg sync.WaitGroup
	for i := range burst {
		did := storeSigner(t).DID()
		queued.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			wait, err := st.Enqueue(ctx, pending(did, 1))
			queued.Done()
			if err != nil {
				errs <- err
				return
			}
			r, _, err := wait()
			recs[i] = r
			errs <- err
		}()
	}
	close(release)
	// The late record is sent once the whole burst is queued and the
	// writer has taken it from the queue (so it is lingering on the
	// burst's last group): it arrives after the group was started, and
	// joins it only if the writer lingers.
	queued.Wait()
	testutil.WaitUntil(t, 10*time.Second, "the writer to take the burst", func() bool { return len(st.in) == 0 })
	var err error
	if recs[burst], err = st.Append(ctx, pending(storeSigner(t).DID(), 1)); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	late := recs[burst]
	g, err := anchor.ParseReceiptGroup(late.Group)
	if err != nil {
		t.Fatal(err)
	}
	joined := 0
	for _, r := range recs[:burst] {
		if bytes.Equal(r.Group, late.Group) {
			joined++
		}
	}
	if joined == 0 || g.Count < 2 {
		t.Fatalf("the late record is alone in group %d+%d: the writer did not linger", g.First, g.Count)
	}
	t.Logf("the late record shares its group (gseq %d, %d records) with %d of the burst", g.First, g.Count, joined)
}
