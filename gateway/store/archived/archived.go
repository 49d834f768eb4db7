// Package archived keeps the record store's marks of retention
// (docs/operations.md, "Retention: archiving old records") under prefix a/
// of the store's database:
//
//	a/archives -> JSON []Info: every archive taken from the store, oldest
//	              first; records at or below the last one's LastGSeq are
//	              archived, not missing
//	a/pending  -> JSON Info: an archive written and verified whose records
//	              are being deleted; whoever opens the store next finishes
//	              the deletion (Finish)
//
// It knows neither records nor batches: Finish deletes the key ranges its
// caller names (the batch log's, then the store's records).
package archived

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

const (
	archivesKey = "a/archives"
	pendingKey  = "a/pending"
)

// Info describes one archive taken from a store.
type Info struct {
	Name       string      `json:"name"` // the file's base name
	SM3        anchor.Hash `json:"sm3"`  // of the file's lines before its end line
	Gateway    device.DID  `json:"gateway"`
	Before     time.Time   `json:"before"` // every archived batch ends before it
	FirstGSeq  uint64      `json:"first_gseq"`
	LastGSeq   uint64      `json:"last_gseq"`
	FirstBatch uint64      `json:"first_batch"`
	LastBatch  uint64      `json:"last_batch"`
	Records    uint64      `json:"records"`
	Devices    int         `json:"devices"`
	Created    time.Time   `json:"created"`
}

// Error answers a request for a record that was archived: its proof comes
// from the archive file Archive.Name (edgeanchor archive proof).
type Error struct {
	GSeq    uint64
	Archive Info
}

func (e *Error) Error() string {
	return fmt.Sprintf("gateway: record %d is archived in %s (gseq %d..%d)", e.GSeq, e.Archive.Name, e.Archive.FirstGSeq, e.Archive.LastGSeq)
}

// List is the archives taken from a store, oldest first.
type List []Info

// Through returns the highest archived gseq (0: none).
func (l List) Through() uint64 {
	if n := len(l); n > 0 {
		return l[n-1].LastGSeq
	}
	return 0
}

// Of returns the archive that holds gseq, or nil.
func (l List) Of(gseq uint64) *Info {
	for i := range l {
		if a := &l[i]; a.FirstGSeq <= gseq && gseq <= a.LastGSeq {
			return a
		}
	}
	return nil
}

// OfBatch returns the archive that holds batch seq, or nil.
func (l List) OfBatch(seq uint64) *Info {
	for i := range l {
		if a := &l[i]; a.FirstBatch <= seq && seq <= a.LastBatch {
			return a
		}
	}
	return nil
}

// Range is the keys Prefix+{8-byte big-endian n} with n <= UpTo.
type Range struct {
	Prefix string
	UpTo   uint64
}

func read(txn *badger.Txn) ([]Info, error) {
	item, err := txn.Get([]byte(archivesKey))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var list []Info
	err = item.Value(func(v []byte) error { return json.Unmarshal(v, &list) })
	if err != nil {
		return nil, fmt.Errorf("gateway: %s: %w", archivesKey, err)
	}
	return list, nil
}

// Load returns the archives taken from the store in db, oldest first.
func Load(db *badger.DB) (List, error) {
	var list List
	err := db.View(func(txn *badger.Txn) error {
		var err error
		list, err = read(txn)
		return err
	})
	return list, err
}

// MarkPending writes a/pending: from here on the deletion of info's
// records is due, and Finish (at the latest the store's next open) does it.
func MarkPending(db *badger.DB, info *Info) error {
	pending, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(pendingKey), pending) }); err != nil {
		return fmt.Errorf("gateway: archive: mark the deletion: %w", err)
	}
	return nil
}

// Pending returns a/pending's archive, or nil.
func Pending(db *badger.DB) (*Info, error) {
	var info Info
	found := false
	err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(pendingKey))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		return item.Value(func(v []byte) error { return json.Unmarshal(v, &info) })
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: archive: read %s: %w", pendingKey, err)
	}
	if !found {
		return nil, nil
	}
	if info.LastGSeq == 0 || info.LastBatch == 0 {
		return nil, fmt.Errorf("gateway: archive: %s names no records: %+v", pendingKey, info)
	}
	return &info, nil
}

// Finish finishes the deletion of info (a/pending's archive): it deletes
// the keys of ranges, in order, while iterating, in write batches of
// 100,000 keys (deleting is idempotent, so a crash anywhere here is
// finished by the next call), then moves info to a/archives and removes
// a/pending in one transaction. step (nil: none) is called with "deleting"
// after the first keys of the last range are deleted and with "recorded"
// at the end; tests kill the process there. records names the count of
// the last range's keys in the log.
func Finish(db *badger.DB, info *Info, ranges []Range, log *slog.Logger, step func(string)) error {
	if step == nil {
		step = func(string) {}
	}
	var deleted, last int
	del := func(prefix string, upTo uint64, hook bool) error {
		wb := db.NewWriteBatch()
		defer wb.Cancel()
		n := 0
		err := db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				k := it.Item().Key()
				if binary.BigEndian.Uint64(k[len(prefix):]) > upTo {
					break
				}
				if err := wb.Delete(it.Item().KeyCopy(nil)); err != nil {
					return err
				}
				if n++; n%100_000 == 0 || (hook && n == 2) {
					if err := wb.Flush(); err != nil {
						return err
					}
					if hook && n == 2 {
						step("deleting")
					}
					wb = db.NewWriteBatch()
				}
			}
			return nil
		})
		if err == nil {
			err = wb.Flush()
		}
		if err != nil {
			return fmt.Errorf("gateway: archive: delete %s: %w", prefix, err)
		}
		deleted += n
		last = n
		return nil
	}
	for i, r := range ranges {
		if err := del(r.Prefix, r.UpTo, i == len(ranges)-1); err != nil {
			return err
		}
	}
	err := db.Update(func(txn *badger.Txn) error {
		list, err := read(txn)
		if err != nil {
			return err
		}
		if n := len(list); n == 0 || list[n-1].LastGSeq < info.LastGSeq {
			list = append(list, *info)
		}
		b, err := json.Marshal(list)
		if err != nil {
			return err
		}
		if err := txn.Set([]byte(archivesKey), b); err != nil {
			return err
		}
		return txn.Delete([]byte(pendingKey))
	})
	if err != nil {
		return fmt.Errorf("gateway: archive: record %s: %w", info.Name, err)
	}
	step("recorded")
	log.Info("record store: archived records deleted", "archive", info.Name,
		"first_gseq", info.FirstGSeq, "last_gseq", info.LastGSeq, "records", last)
	return nil
}
