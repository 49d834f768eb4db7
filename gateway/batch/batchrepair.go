package batch

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/gateway/store"
	"github.com/edgeanchor/edgeanchor/gateway/store/archived"
)

// ArchivedRanges names the batch log's keys of an archive's batches, which
// store.FinishArchive deletes before the records: the index b/l/ first,
// then the kept leaf hashes b/v/ and the headers b/h/ (a batch is never
// found by gseq without its header).
func (r *Repairer) ArchivedRanges(info store.ArchiveInfo) []archived.Range {
	return archivedRanges(keyPrefix, info)
}

func archivedRanges(prefix string, info store.ArchiveInfo) []archived.Range {
	return []archived.Range{{Prefix: prefix + "l/", UpTo: info.LastGSeq}, {Prefix: prefix + "v/", UpTo: info.LastBatch}, {Prefix: prefix + "h/", UpTo: info.LastBatch}}
}

// ChainRepair says what the batch log's repair kept.
type ChainRepair struct {
	Batches      uint64   // batches kept (1..Batches)
	DroppedBatch []uint64 // batch seqs removed: unreadable, or after one
	Anchored     uint64   // batches 1..Anchored have their anchor commit

	// archivedGSeq, archivedBatch: the last archived record and batch
	// (package gateway/archive), 0 without archives.
	archivedGSeq, archivedBatch uint64
}

// Repairer is the batch log's part of store.Repair (a store.ClaimsRepair):
// it keeps the batch chain 1..k up to its first unreadable or missing
// batch, read back from the value logs where the tree lost it, rebuilds the
// b/l index and lowers the anchored mark to k. Report holds the result.
type Repairer struct {
	Report ChainRepair
	found  map[uint64]versioned // the newest value log version of each batch
}

type versioned struct {
	version uint64
	val     []byte
}

var _ store.ClaimsRepair = (*Repairer)(nil)

// NewRepairer returns a Repairer for one store.Repair.
func NewRepairer() *Repairer { return &Repairer{found: map[uint64]versioned{}} }

// ValueLogEntry keeps the newest version of each batch found in the value
// logs.
func (r *Repairer) ValueLogEntry(key, val []byte, version uint64) {
	seq, ok := valueLogBatch(key, val)
	if !ok {
		return
	}
	if b, ok := r.found[seq]; !ok || version >= b.version {
		r.found[seq] = versioned{version, append([]byte(nil), val...)}
	}
}

// Repair repairs the batch log in db; it returns the highest gseq the kept
// batches cover.
func (r *Repairer) Repair(db *badger.DB) (uint64, error) {
	var highest uint64
	if list, err := archived.Load(db); err != nil {
		return 0, err
	} else if n := len(list); n > 0 {
		r.Report.archivedGSeq, r.Report.archivedBatch = list[n-1].LastGSeq, list[n-1].LastBatch
	}
	err := repairBatches(db, r.found, &r.Report, &highest)
	return highest, err
}

func repairBatches(db *badger.DB, vbatches map[uint64]versioned, rep *ChainRepair, highest *uint64) error {
	blog := NewLog(db, keyPrefix)
	// Batches from the value logs where the tree lost or cannot read them.
	wb := db.NewWriteBatch()
	err := db.View(func(txn *badger.Txn) error {
		for seq, v := range vbatches {
			if seq <= rep.archivedBatch {
				continue // archived (package gateway/archive)
			}
			if b, err := getBatch(txn, blog.key("h/", seq)); err != nil || b.Seq != seq {
				if err := wb.Set(blog.key("h/", seq), v.val); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err == nil {
		err = wb.Flush()
	} else {
		wb.Cancel()
	}
	if err != nil {
		return err
	}
	var keep []*Batch
	var drop [][]byte
	err = db.View(func(txn *badger.Txn) error {
		prefix := []byte(keyPrefix + "h/")
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		broken := false
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			seq := binary.BigEndian.Uint64(k[len(prefix):])
			var b *Batch
			if !broken {
				var err error
				b, err = getBatch(txn, k)
				broken = err != nil || b.Seq != seq || seq != rep.archivedBatch+uint64(len(keep))+1 ||
					(len(keep) > 0 && b.First != keep[len(keep)-1].Last+1) ||
					(len(keep) == 0 && rep.archivedGSeq > 0 && b.First != rep.archivedGSeq+1)
			}
			if broken {
				drop = append(drop, k)
				rep.DroppedBatch = append(rep.DroppedBatch, seq)
				continue
			}
			keep = append(keep, b)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The anchored mark: the leading batches whose ledger receipt is stored.
	rep.Batches = rep.archivedBatch + uint64(len(keep))
	rep.Anchored = rep.archivedBatch
	for _, b := range keep {
		if b.Anchor == nil {
			break
		}
		rep.Anchored++
	}
	if err := db.DropPrefix([]byte(keyPrefix + "l/")); err != nil {
		return err
	}
	wb = db.NewWriteBatch()
	for _, k := range drop {
		seq := binary.BigEndian.Uint64(k[len(k)-8:])
		if err := errors.Join(wb.Delete(k), wb.Delete(blog.key("v/", seq))); err != nil {
			wb.Cancel()
			return err
		}
	}
	for _, b := range keep {
		if err := wb.Set(blog.key("l/", b.Last), u64(b.Seq)); err != nil {
			wb.Cancel()
			return err
		}
		*highest = max(*highest, b.Last)
	}
	if err := wb.Set(blog.anchoredKey(), u64(rep.Anchored)); err != nil {
		wb.Cancel()
		return err
	}
	return wb.Flush()
}

// valueLogBatch returns the seq of a value log entry that is a batch
// decoding as the batch of that seq.
func valueLogBatch(key, val []byte) (uint64, bool) {
	prefix := keyPrefix + "h/"
	if len(key) != len(prefix)+8 || !strings.HasPrefix(string(key), prefix) {
		return 0, false
	}
	seq := binary.BigEndian.Uint64(key[len(prefix):])
	var sb Batch
	if json.Unmarshal(val, &sb) != nil || sb.Seq != seq {
		return 0, false
	}
	return seq, true
}
