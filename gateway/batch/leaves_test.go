package batch

import (
	"encoding/binary"
	"slices"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// recordLeavesOf hashes records first..last as the batcher does.
func recordLeavesOf(t *testing.T, e *batchEnv, first, last uint64) []anchor.Hash {
	t.Helper()
	var out []anchor.Hash
	if err := e.store.Range(first, last, func(r *store.Record) error {
		out = append(out, anchor.LeafHash(r.Salt, r.Receipt))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// keptLeaves returns the leaves of l.Tree(b).
func keptLeaves(l *Log, b *Batch) ([]anchor.Hash, bool, error) {
	tree, ok, err := l.Tree(b)
	if !ok {
		return nil, false, err
	}
	return tree.Leaves(), true, nil
}

// deleteRecord removes record gseq from the store's Badger DB behind the
// store's back (key r/<gseq>, the store's layout).
func deleteRecord(t *testing.T, e *batchEnv, gseq uint64) {
	t.Helper()
	key := binary.BigEndian.AppendUint64([]byte("r/"), gseq)
	if err := e.store.DB().Update(func(txn *badger.Txn) error { return txn.Delete(key) }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Get(gseq); err == nil {
		t.Fatalf("record %d is still there: the test's idea of the store's keys is wrong", gseq)
	}
}

// A cut batch keeps its leaf hashes, and a proof of one of its records
// reads them instead of every record of the batch: with another record of
// the batch gone, the proof's leaves are still there and still right.
func TestBatchKeepsLeavesForProofs(t *testing.T) {
	e := newBatchEnv(t)
	b, _ := e.batcher(t, time.Hour, 100, nil)
	e.add(t, 12)
	sb, err := b.CutNow()
	if err != nil {
		t.Fatal(err)
	}
	want := recordLeavesOf(t, e, sb.First, sb.Last)
	got, ok, err := keptLeaves(e.blog, sb)
	if err != nil || !ok || !slices.Equal(got, want) {
		t.Fatalf("kept leaves = %d leaves, %v, %v; want the %d leaf hashes of the records", len(got), ok, err, len(want))
	}
	deleteRecord(t, e, sb.First+3)
	p, err := NewProofs(e.store, e.blog, nil, e.gw, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	tree, err := p.batchTree(sb)
	if err != nil || !slices.Equal(tree.Leaves(), want) {
		t.Fatalf("batchTree with a record of the batch gone = %v, %v; want the kept %d leaves", tree, err, len(want))
	}
}

// Kept leaves are a cache checked against the header's root: missing (a
// batch from before they were kept) or damaged, the proof hashes the
// records again, gets the right leaves and keeps them; and a record that
// is then missing is an error, never a proof from wrong leaves.
func TestKeptLeavesAreCheckedAndRekept(t *testing.T) {
	e := newBatchEnv(t)
	b, _ := e.batcher(t, time.Hour, 100, nil)
	e.add(t, 9)
	sb, err := b.CutNow()
	if err != nil {
		t.Fatal(err)
	}
	want := recordLeavesOf(t, e, sb.First, sb.Last)
	key := e.blog.key("v/", sb.Seq)
	damaged := joinLeaves(want)
	damaged[5] ^= 1
	for name, set := range map[string]func(txn *badger.Txn) error{
		"missing":   func(txn *badger.Txn) error { return txn.Delete(key) },
		"flipped":   func(txn *badger.Txn) error { return txn.Set(key, damaged) },
		"truncated": func(txn *badger.Txn) error { return txn.Set(key, joinLeaves(want)[:40]) },
	} {
		t.Run(name, func(t *testing.T) {
			if err := e.store.DB().Update(set); err != nil {
				t.Fatal(err)
			}
			if got, ok, err := keptLeaves(e.blog, sb); err != nil || ok {
				t.Fatalf("kept leaves of %s kept leaves = %d leaves, %v, %v; want not ok", name, len(got), ok, err)
			}
			p, err := NewProofs(e.store, e.blog, nil, e.gw, discardLog())
			if err != nil {
				t.Fatal(err)
			}
			tree, err := p.batchTree(sb)
			if err != nil || !slices.Equal(tree.Leaves(), want) {
				t.Fatalf("batchTree = %v, %v; want the records' %d leaves", tree, err, len(want))
			}
			if got, ok, err := keptLeaves(e.blog, sb); err != nil || !ok || !slices.Equal(got, want) {
				t.Fatalf("after the proof, kept leaves = %d, %v, %v; want them kept again", len(got), ok, err)
			}
		})
	}
	if err := e.store.DB().Update(func(txn *badger.Txn) error { return txn.Set(key, damaged) }); err != nil {
		t.Fatal(err)
	}
	deleteRecord(t, e, sb.Last)
	p, err := NewProofs(e.store, e.blog, nil, e.gw, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.batchTree(sb); err == nil || !strings.Contains(err.Error(), "of its 9 records are stored") {
		t.Fatalf("damaged leaves and a missing record: batchTree = %v, want the missing record named", err)
	}
}

// A batch with more leaves than maxKeptLeaves is stored without them (a
// Badger value may not exceed the value log file, and a batch that cannot
// be stored stops the batcher); its proofs hash its records.
func TestOversizedLeavesAreNotKept(t *testing.T) {
	e := newBatchEnv(t)
	blog := NewLog(e.store.DB(), "t/")
	big := make([]anchor.Hash, maxKeptLeaves+1)
	now := time.Now().UTC()
	h := &anchor.BatchHeader{Gateway: e.gw.DID(), Seq: 1, First: 1, Last: uint64(len(big)), Count: uint64(len(big)),
		Root: anchor.MerkleRoot(big), From: now, To: now}
	hb := h.Encode()
	sig, err := e.gw.Sign(hb)
	if err != nil {
		t.Fatal(err)
	}
	sb := &Batch{Seq: 1, First: 1, Last: h.Last, Header: hb, Sig: sig, Hash: anchor.SM3(hb),
		Tx: (&anchor.Tx{Body: hb, Signer: h.Gateway, Sig: sig}).Encode(), Stored: now}
	if err := blog.Append(sb, big); err != nil {
		t.Fatalf("a batch of %d records was not stored: %v", len(big), err)
	}
	if _, ok, err := keptLeaves(blog, sb); ok || err != nil {
		t.Fatalf("kept leaves of a batch of %d records = %v, %v; want none kept", len(big), ok, err)
	}
	if err := blog.KeepLeaves(sb.Seq, big); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := keptLeaves(blog, sb); ok || err != nil {
		t.Fatalf("after KeepLeaves, kept leaves = %v, %v; want none kept", ok, err)
	}
}
