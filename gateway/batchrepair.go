package gateway

import (
	"encoding/binary"
	"encoding/json"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
)

// repairBatches keeps the batch chain 1..k up to its first unreadable or
// missing batch, rebuilds the b/l index and lowers the anchored mark to k.
func repairBatches(db *badger.DB, vbatches map[uint64][]byte, rep *RepairReport) error {
	blog := NewBatchLog(db, batchKeyPrefix)
	// Batches from the value logs where the tree lost or cannot read them.
	wb := db.NewWriteBatch()
	err := db.View(func(txn *badger.Txn) error {
		for seq, v := range vbatches {
			if seq <= rep.archivedBatch {
				continue // archived (archive.go)
			}
			if b, err := getBatch(txn, blog.key("h/", seq)); err != nil || b.Seq != seq {
				if err := wb.Set(blog.key("h/", seq), v); err != nil {
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
	var keep []*StoredBatch
	var drop [][]byte
	err = db.View(func(txn *badger.Txn) error {
		prefix := []byte(batchKeyPrefix + "h/")
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		broken := false
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			seq := binary.BigEndian.Uint64(k[len(prefix):])
			var b *StoredBatch
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
	if err := db.DropPrefix([]byte(batchKeyPrefix + "l/")); err != nil {
		return err
	}
	wb = db.NewWriteBatch()
	for _, k := range drop {
		if err := wb.Delete(k); err != nil {
			wb.Cancel()
			return err
		}
	}
	for _, b := range keep {
		if err := wb.Set(blog.key("l/", b.Last), u64(b.Seq)); err != nil {
			wb.Cancel()
			return err
		}
		rep.Highest = max(rep.Highest, b.Last)
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
	prefix := batchKeyPrefix + "h/"
	if len(key) != len(prefix)+8 || !strings.HasPrefix(string(key), prefix) {
		return 0, false
	}
	seq := binary.BigEndian.Uint64(key[len(prefix):])
	var sb StoredBatch
	if json.Unmarshal(val, &sb) != nil || sb.Seq != seq {
		return 0, false
	}
	return seq, true
}
