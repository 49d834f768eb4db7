package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/store/archived"
	"github.com/edgeanchor/edgeanchor/gateway/store/badgerfile"
)

// ArchiveInfo describes one archive taken from the store (package
// gateway/store/archived keeps them under prefix a/).
type ArchiveInfo = archived.Info

// ArchivedError answers a request for an archived record.
type ArchivedError = archived.Error

// ArchivedKeys is implemented by a RecordClaims or ClaimsRepair whose
// owner keeps keys of the archived records (the batch log): the ranges it
// names are deleted, in order, before the records themselves.
type ArchivedKeys interface {
	ArchivedRanges(info ArchiveInfo) []archived.Range
}

// FinishArchive finishes the deletion of an archive cut short by a crash
// (a/pending), if any: owner's ranges (an ArchivedKeys; anything else:
// none may be pending) and then the records. step is package archived's
// test hook (nil: none).
func FinishArchive(db *badger.DB, owner any, log *slog.Logger, step func(string)) error {
	info, err := archived.Pending(db)
	if err != nil || info == nil {
		return err
	}
	keys, ok := owner.(ArchivedKeys)
	if !ok {
		return errors.New("gateway: archive: a deletion is pending (a/pending) and the batch log is not given to finish it")
	}
	ranges := append(keys.ArchivedRanges(*info), archived.Range{Prefix: prefixRecord, UpTo: info.LastGSeq})
	return archived.Finish(db, info, ranges, log, step)
}

// OpenOffline opens the stopped gateway's store in dir as a bare Badger
// database with the default configuration (for the archive, which reads
// it with RangeRecords and ArchivedDevices); the caller closes it.
func OpenOffline(dir string, log *slog.Logger) (*badger.DB, error) {
	if err := badgerfile.CheckUnlocked(dir); err != nil {
		return nil, fmt.Errorf("gateway: archive: %s is in use (stop the gateway first): %w", dir, err)
	}
	db, err := openBadger(badgerOptions(dir, DefaultConfig(), log))
	if err != nil {
		return nil, fmt.Errorf("gateway: archive: open %s: %w", dir, err)
	}
	return db, nil
}

// Archives returns the archives taken from the store, oldest first.
func (s *Store) Archives() []ArchiveInfo { return s.archives }

// ArchivedThrough returns the highest archived gseq (0: none).
func (s *Store) ArchivedThrough() uint64 { return s.archives.Through() }

// ArchiveOf returns the archive that holds gseq, or nil.
func (s *Store) ArchiveOf(gseq uint64) *ArchiveInfo { return s.archives.Of(gseq) }

// ArchiveOfBatch returns the archive that holds batch seq, or nil.
func (s *Store) ArchiveOfBatch(seq uint64) *ArchiveInfo { return s.archives.OfBatch(seq) }

// ArchivedRecord returns an *ArchivedError when the record of did and seq
// was archived, else nil.
func (s *Store) ArchivedRecord(did device.DID, seq uint64) error {
	if len(s.archives) == 0 {
		return nil
	}
	g, err := deviceGSeq(s.db, did, seq)
	if err != nil || g == 0 {
		return nil
	}
	if a := s.ArchiveOf(g); a != nil {
		return &ArchivedError{GSeq: g, Archive: *a}
	}
	return nil
}

func deviceGSeq(db *badger.DB, did device.DID, seq uint64) (uint64, error) {
	var g uint64
	err := db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(devSeqKey(did, seq))
		if err != nil {
			return err
		}
		return it.Value(func(b []byte) error {
			if len(b) == 8 {
				g = binary.BigEndian.Uint64(b)
			}
			return nil
		})
	})
	return g, err
}

// indexedGSeqs calls fn with each entry of the device index d/{did}/{seq}
// -> gseq, in key order.
func indexedGSeqs(db *badger.DB, fn func(did device.DID, seq, gseq uint64)) error {
	return db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixDevSeq)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) < len(prefixDevSeq)+9 {
				continue
			}
			var g uint64
			if err := it.Item().Value(func(v []byte) error {
				if len(v) == 8 {
					g = binary.BigEndian.Uint64(v)
				}
				return nil
			}); err != nil {
				return err
			}
			fn(device.DID(k[len(prefixDevSeq):len(k)-9]), binary.BigEndian.Uint64(k[len(k)-8:]), g)
		}
		return nil
	})
}

// ArchivedDevices returns the devices with a record in first..last of db,
// from the device index, sorted.
func ArchivedDevices(db *badger.DB, first, last uint64) ([]device.DID, error) {
	seen := map[device.DID]bool{}
	var out []device.DID
	err := indexedGSeqs(db, func(did device.DID, _, g uint64) {
		if !seen[did] && first <= g && g <= last {
			seen[did] = true
			out = append(out, did)
		}
	})
	return out, err
}

// RangeRecords calls fn for the records first..last of db, in order.
func RangeRecords(db *badger.DB, first, last uint64, fn func(*Record) error) error {
	return db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixRecord), PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Seek(recordKey(first)); it.Valid(); it.Next() {
			g := binary.BigEndian.Uint64(it.Item().Key()[len(prefixRecord):])
			if g > last {
				return nil
			}
			var rec Record
			if err := it.Item().Value(func(b []byte) error {
				if len(b) == 0 {
					return errValueUnreadable
				}
				return decodeRecord(b, &rec)
			}); err != nil {
				return fmt.Errorf("gateway: record %d: %w", g, err)
			}
			if err := fn(&rec); err != nil {
				return err
			}
		}
		return nil
	})
}
