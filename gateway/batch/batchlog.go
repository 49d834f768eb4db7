package batch

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/gateway/store"
	"github.com/edgeanchor/edgeanchor/gateway/store/archived"
)

// ErrNotFound means no stored batch has that sequence number or covers that
// gseq (yet): the record has not been batched, or the number is too high.
var ErrNotFound = errors.New("gateway: no such batch")

// ErrChain means a batch does not continue the stored chain (sequence,
// prev hash or first gseq). It is a bug in the caller; nothing was stored.
var ErrChain = errors.New("gateway: batch does not continue the chain")

// Batch is a batch header as the gateway keeps it: the signed header,
// the ready-to-submit AnchorBatch tx, and, once committed, where.
type Batch struct {
	Seq    uint64      `json:"seq"`
	First  uint64      `json:"first"`
	Last   uint64      `json:"last"`
	Header []byte      `json:"header"` // canonical header bytes
	Sig    []byte      `json:"sig"`    // gateway signature over Header
	Hash   anchor.Hash `json:"hash"`   // SM3 of Header
	Tx     []byte      `json:"tx"`     // AnchorBatch tx: Header signed with Sig
	Stored time.Time   `json:"stored"`
	// Anchor is nil until the ledger committed Tx.
	Anchor   *ledgerclient.TxCommit `json:"anchor,omitempty"`
	Anchored time.Time              `json:"anchored,omitzero"`
}

// String names the batch and its records, for logs and test failures.
func (b *Batch) String() string { return fmt.Sprintf("#%d[%d..%d]", b.Seq, b.First, b.Last) }

// ParsedHeader decodes the stored header.
func (b *Batch) ParsedHeader() (*anchor.BatchHeader, error) {
	return anchor.ParseHeader(b.Header)
}

// Log keeps the gateway's batch chain and its outbox in Badger, under
// its own key prefix (it may share the record store's DB):
//
//	{p}h/{seq}   → Batch JSON (header, sig, tx, anchor receipt)
//	{p}l/{last}  → seq (find the batch of a gseq with one seek)
//	{p}m/anchored → the highest seq whose anchor receipt is stored
//	{p}v/{seq}   → the batch's leaf hashes, 32 bytes a record in gseq
//	               order: a cache for proofs, checked against the
//	               header's root before use (Tree), never trusted
//
// The outbox is every batch after m/anchored, submitted in order.
type Log struct {
	db     *badger.DB
	prefix string
}

// NewLog uses db under prefix (the gateway's is keyPrefix, "b/").
func NewLog(db *badger.DB, prefix string) *Log {
	return &Log{db: db, prefix: prefix}
}

func (l *Log) key(kind string, v uint64) []byte {
	return append([]byte(l.prefix+kind), u64(v)...)
}

func (l *Log) anchoredKey() []byte { return []byte(l.prefix + "m/anchored") }

func getBatch(txn *badger.Txn, key []byte) (*Batch, error) {
	it, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	var b Batch
	n := 0
	err = it.Value(func(v []byte) error { n = len(v); return json.Unmarshal(v, &b) })
	if err != nil {
		return nil, fmt.Errorf("stored batch %d does not decode (%d bytes; an empty value is one Badger could not read): %w",
			binary.BigEndian.Uint64(key[len(key)-8:]), n, err)
	}
	return &b, nil
}

// Get returns batch seq, or ErrNotFound.
func (l *Log) Get(seq uint64) (*Batch, error) {
	var b *Batch
	err := l.db.View(func(txn *badger.Txn) error {
		var err error
		b, err = getBatch(txn, l.key("h/", seq))
		return err
	})
	return b, err
}

// Last returns the last stored batch, or ErrNotFound before the first.
func (l *Log) Last() (*Batch, error) {
	var b *Batch
	err := l.db.View(func(txn *badger.Txn) error {
		var err error
		b, err = l.lastIn(txn)
		return err
	})
	return b, err
}

func (l *Log) lastIn(txn *badger.Txn) (*Batch, error) {
	opts := badger.DefaultIteratorOptions
	opts.Reverse = true
	opts.PrefetchValues = false
	opts.Prefix = []byte(l.prefix + "h/")
	it := txn.NewIterator(opts)
	defer it.Close()
	it.Seek(append([]byte(l.prefix+"h/"), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
	if !it.Valid() {
		return nil, ErrNotFound
	}
	return getBatch(txn, it.Item().KeyCopy(nil))
}

// ByGSeq returns the batch that covers gseq, or ErrNotFound.
func (l *Log) ByGSeq(gseq uint64) (*Batch, error) {
	var b *Batch
	err := l.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(l.prefix + "l/")
		it := txn.NewIterator(opts)
		defer it.Close()
		it.Seek(l.key("l/", gseq))
		if !it.Valid() {
			return ErrNotFound
		}
		var seq uint64
		if err := it.Item().Value(func(v []byte) error {
			if len(v) != 8 {
				return errors.New("gateway: corrupt batch index")
			}
			seq = binary.BigEndian.Uint64(v)
			return nil
		}); err != nil {
			return err
		}
		var err error
		if b, err = getBatch(txn, l.key("h/", seq)); err != nil {
			return err
		}
		if gseq < b.First {
			return ErrNotFound
		}
		return nil
	})
	return b, err
}

// Append stores the next batch of the chain: its seq must follow the last
// stored one, its header's prev must be the last header's hash and its first
// gseq must follow the last one's last. Nothing is stored on error.
// It also keeps the batch's leaf hashes (nil, or more than maxKeptLeaves:
// none), so that a proof needs not read the batch's records again.
func (l *Log) Append(b *Batch, leaves []anchor.Hash) error {
	h, err := anchor.ParseHeader(b.Header)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrChain, err)
	}
	if h.Seq != b.Seq || h.First != b.First || h.Last != b.Last || h.Hash() != b.Hash {
		return fmt.Errorf("%w: stored fields disagree with the header", ErrChain)
	}
	val, err := json.Marshal(b)
	if err != nil {
		return err
	}
	return l.db.Update(func(txn *badger.Txn) error {
		last, err := l.lastIn(txn)
		switch {
		case errors.Is(err, ErrNotFound):
			if h.Seq != 1 || !h.Prev.IsZero() {
				return fmt.Errorf("%w: first batch must be seq 1 with a zero prev", ErrChain)
			}
		case err != nil:
			return err
		case h.Seq != last.Seq+1 || h.Prev != last.Hash || h.First != last.Last+1:
			return fmt.Errorf("%w: seq %d prev %s first %d after seq %d hash %s last %d",
				ErrChain, h.Seq, h.Prev, h.First, last.Seq, last.Hash, last.Last)
		}
		if err := txn.Set(l.key("h/", b.Seq), val); err != nil {
			return err
		}
		if err := l.setLeaves(txn, b.Seq, leaves); err != nil {
			return err
		}
		return txn.Set(l.key("l/", b.Last), u64(b.Seq))
	})
}

// Tree returns the Merkle tree over the kept leaf hashes of b when they are
// there and hash to its header's root; ok is false otherwise (none kept,
// or damaged).
func (l *Log) Tree(b *Batch) (tree *anchor.Tree, ok bool, err error) {
	h, err := b.ParsedHeader()
	if err != nil {
		return nil, false, err
	}
	var leaves []anchor.Hash
	err = l.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(l.key("v/", b.Seq))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			if h.Count == 0 || uint64(len(v)) != h.Count*uint64(hashSize) {
				return nil
			}
			leaves = make([]anchor.Hash, h.Count)
			for i := range leaves {
				copy(leaves[i][:], v[i*hashSize:])
			}
			return nil
		})
	})
	if err != nil || leaves == nil {
		return nil, false, err
	}
	t, err := anchor.NewTree(leaves)
	if err != nil || t.Root() != h.Root {
		return nil, false, nil
	}
	return t, true, nil
}

// KeepLeaves stores the leaf hashes of batch seq (computed from its
// records by a caller that checked them against the header); more than
// maxKeptLeaves are not kept.
func (l *Log) KeepLeaves(seq uint64, leaves []anchor.Hash) error {
	return l.db.Update(func(txn *badger.Txn) error { return l.setLeaves(txn, seq, leaves) })
}

// setLeaves writes the kept leaf hashes of batch seq in txn: none for nil
// or more than maxKeptLeaves.
func (l *Log) setLeaves(txn *badger.Txn, seq uint64, leaves []anchor.Hash) error {
	if leaves == nil || len(leaves) > maxKeptLeaves {
		return nil
	}
	return txn.Set(l.key("v/", seq), joinLeaves(leaves))
}

func joinLeaves(leaves []anchor.Hash) []byte {
	out := make([]byte, 0, len(leaves)*hashSize)
	for _, h := range leaves {
		out = append(out, h[:]...)
	}
	return out
}

// AnchoredSeq returns the highest seq whose anchor receipt is stored (0
// before the first).
func (l *Log) AnchoredSeq() (uint64, error) {
	var seq uint64
	err := l.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(l.anchoredKey())
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			if len(v) != 8 {
				return errors.New("gateway: corrupt anchored seq")
			}
			seq = binary.BigEndian.Uint64(v)
			return nil
		})
	})
	return seq, err
}

// SetAnchored stores the anchor tx's commit of batch seq, which must be the
// next one after AnchoredSeq (batches are anchored in order).
func (l *Log) SetAnchored(seq uint64, r ledgerclient.TxCommit, at time.Time) (*Batch, error) {
	var out *Batch
	err := l.db.Update(func(txn *badger.Txn) error {
		var anchored uint64
		it, err := txn.Get(l.anchoredKey())
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			if err := it.Value(func(v []byte) error { anchored = binary.BigEndian.Uint64(v); return nil }); err != nil {
				return err
			}
		}
		if seq != anchored+1 {
			return fmt.Errorf("%w: anchoring seq %d after %d", ErrChain, seq, anchored)
		}
		b, err := getBatch(txn, l.key("h/", seq))
		if err != nil {
			return err
		}
		b.Anchor, b.Anchored = &r, at.UTC()
		val, err := json.Marshal(b)
		if err != nil {
			return err
		}
		if err := txn.Set(l.key("h/", seq), val); err != nil {
			return err
		}
		out = b
		return txn.Set(l.anchoredKey(), u64(seq))
	})
	return out, err
}

// Claims is the batch log's hold on the record store (store.Options.
// Claims): the records it has batched, and its newest writes to read at
// open.
func Claims() store.RecordClaims { return batchClaims{prefix: keyPrefix} }

type batchClaims struct{ prefix string }

// ArchivedRanges: see Repairer.ArchivedRanges.
func (c batchClaims) ArchivedRanges(info store.ArchiveInfo) []archived.Range {
	return archivedRanges(c.prefix, info)
}

// ClaimedThrough returns the last gseq of the newest batch (0: none).
func (c batchClaims) ClaimedThrough(db *badger.DB) (uint64, error) {
	b, err := NewLog(db, c.prefix).Last()
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return b.Last, nil
}

// CheckTail reads the newest batch writes: the batches cut last, and the
// newest anchored one (its ledger receipt rewrites it).
func (c batchClaims) CheckTail(db *badger.DB) (string, error) {
	blog := NewLog(db, c.prefix)
	last, err := blog.Last()
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "newest batch", err
	}
	anchored, err := blog.AnchoredSeq()
	if err != nil {
		return "anchored batch mark", err
	}
	seqs := []uint64{anchored}
	for seq := max(anchored+1, last.Seq-min(last.Seq, 15)); seq <= last.Seq; seq++ {
		seqs = append(seqs, seq)
	}
	for _, seq := range seqs {
		if seq == 0 {
			continue
		}
		if _, err := blog.Get(seq); err != nil {
			return fmt.Sprintf("batch %d", seq), err
		}
	}
	return "", nil
}

// u64 encodes v as 8 bytes big-endian, as the store encodes its numbers.
func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// hashSize is the bytes of one kept leaf hash.
const hashSize = len(anchor.Hash{})

// maxKeptLeaves bounds the leaf hashes kept for one batch (4 MiB): a Badger
// value may not exceed the value log file (store.value_log_file_mb, 32 MB
// by default), and a batch that could not be stored would stop the
// batcher. The default batch_size is 10,000; larger batches prove from
// their records, as before leaves were kept.
const maxKeptLeaves = 1 << 17
