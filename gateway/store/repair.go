package store

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/store/archived"
	"github.com/edgeanchor/edgeanchor/gateway/store/badgerfile"
)

// GSeqRange is gseq From..To, both included.
type GSeqRange struct{ From, To uint64 }

func (r GSeqRange) String() string {
	if r.From == r.To {
		return fmt.Sprint(r.From)
	}
	return fmt.Sprintf("%d-%d", r.From, r.To)
}

// RepairReport says what Repair kept of the records and what it could not.
type RepairReport struct {
	Dir    string // the repaired store
	Backup string // the damaged store as it was, copied before any change
	// DroppedTables are the table files that could not be read; their
	// keys are gone, the records among them were read back from the value
	// logs where those hold them intact (FromValueLog).
	DroppedTables []string
	Records       uint64 // intact records in the repaired store
	FromValueLog  uint64 // of them, read back from the value logs
	Highest       uint64 // highest gseq the damaged store knew of
	Lost          []GSeqRange

	kept []uint64
	// archivedGSeq: the last archived record (package archived), 0
	// without archives.
	archivedGSeq uint64
}

// ClaimsRepair is the claims owner's part of Repair (see RecordClaims):
// the batch log's repair, which keeps its own key prefix in the store's
// database. The store shows it the value log and knows nothing else of it.
type ClaimsRepair interface {
	// ValueLogEntry is called with each intact value log entry that is not
	// a record, in file order (newer versions later); it keeps a copy of
	// those it owns.
	ValueLogEntry(key, val []byte, version uint64)
	// Repair runs on the open database once the records are repaired. It
	// returns the highest gseq its kept claims refer to: every gseq up to
	// it that the store does not hold is reported lost.
	Repair(db *badger.DB) (highest uint64, err error)
}

// LostCount is the number of gseqs in r.Lost.
func (r *RepairReport) LostCount() uint64 {
	var n uint64
	for _, l := range r.Lost {
		n += l.To - l.From + 1
	}
	return n
}

// Repair repairs the record store in dir (the gateway must be stopped):
// it first copies dir to dir.damaged-TIME (kept), drops table files that
// cannot be read, reads back from the value logs every record whose key
// was lost with them, then keeps every record whose value is intact,
// deletes the others, rebuilds the device indexes (d/, l/) from what is
// kept, lets claims (nil: none) repair what it owns, and returns what it
// kept and the gseq ranges it lost.
func Repair(dir string, now time.Time, log *slog.Logger, claims ClaimsRepair) (*RepairReport, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("gateway: repair: %s is not a record store directory: %v", dir, err)
	}
	if err := badgerfile.CheckUnlocked(dir); err != nil {
		return nil, err
	}
	rep := &RepairReport{Dir: dir, Backup: dir + ".damaged-" + now.UTC().Format("20060102T150405Z")}
	if err := badgerfile.CopyDir(dir, rep.Backup); err != nil {
		return nil, fmt.Errorf("gateway: repair: copy %s to %s: %w", dir, rep.Backup, err)
	}
	opts := badgerOptions(dir, DefaultConfig(), log)
	bad, err := checkTables(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("gateway: repair: %w", err)
	}
	for _, b := range bad {
		if err := badgerfile.DropTable(dir, b.Path); err != nil {
			return nil, fmt.Errorf("gateway: repair: drop table %s: %w", b.Path, err)
		}
		rep.DroppedTables = append(rep.DroppedTables, b.Path)
	}
	vrecs := newestValues{}
	err = badgerfile.ScanValueLogs(dir, func(key, val []byte, version uint64) {
		if g, ok := valueLogRecord(key, val); ok {
			vrecs.put(g, version, val)
		} else if claims != nil {
			claims.ValueLogEntry(key, val, version)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: repair: read value logs: %w", err)
	}
	db, err := openBadger(opts)
	if err != nil {
		return nil, fmt.Errorf("gateway: repair: open %s: %w", dir, err)
	}
	defer db.Close()
	// Archived records (package archived) are neither lost nor read back
	// from the value logs.
	if err := FinishArchive(db, claims, log, nil); err != nil {
		return nil, fmt.Errorf("gateway: repair %s: %w", dir, err)
	}
	if list, err := archived.Load(db); err != nil {
		return nil, fmt.Errorf("gateway: repair %s: %w", dir, err)
	} else if n := len(list); n > 0 {
		rep.archivedGSeq = list[n-1].LastGSeq
	}
	if err := repairRecords(db, vrecs.values(), rep); err != nil {
		return nil, fmt.Errorf("gateway: repair %s: %w", dir, err)
	}
	if claims != nil {
		highest, err := claims.Repair(db)
		if err != nil {
			return nil, fmt.Errorf("gateway: repair %s: %w", dir, err)
		}
		rep.Highest = max(rep.Highest, highest)
	}
	// Claimed gseqs above the kept records are lost too.
	rep.Lost = missing(rep.kept, rep.archivedGSeq+1, rep.Highest)
	if err := db.Close(); err != nil {
		return nil, fmt.Errorf("gateway: repair: close %s: %w", dir, err)
	}
	return rep, nil
}

// repairRecords puts back the records read from the value logs whose
// keys are missing or unreadable, deletes every record that does not
// decode, rebuilds d/ and l/, sets the acknowledged mark, and fills the
// record part of rep.
func repairRecords(db *badger.DB, vrecs map[uint64][]byte, rep *RepairReport) error {
	readable := func(txn *badger.Txn, g uint64) bool {
		r, err := getRecord(txn, g)
		return err == nil && r.GSeq == g
	}
	// Records from the value logs where the tree lost or cannot read them.
	wb := db.NewWriteBatch()
	err := db.View(func(txn *badger.Txn) error {
		for g, v := range vrecs {
			if g > rep.archivedGSeq && !readable(txn, g) {
				if err := wb.Set(recordKey(g), v); err != nil {
					return err
				}
				rep.FromValueLog++
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
	// Keep what decodes; delete the rest; note the highest gseq known.
	var kept []uint64
	var drop [][]byte
	devices := map[device.DID]bool{}
	type idx struct {
		did      device.DID
		seq, gsq uint64
	}
	var index []idx
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixRecord)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			g := binary.BigEndian.Uint64(k[len(prefixRecord):])
			rep.Highest = max(rep.Highest, g)
			r, err := getRecord(txn, g)
			if err != nil || r.GSeq != g {
				drop = append(drop, k)
				continue
			}
			kept = append(kept, g)
			index = append(index, idx{r.DID, r.Seq, g})
			devices[r.DID] = true
		}
		item, err := txn.Get([]byte(ackedKey))
		if err == nil {
			_ = item.Value(func(b []byte) error {
				if len(b) == 8 {
					rep.Highest = max(rep.Highest, binary.BigEndian.Uint64(b))
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The device index of archived records stays (a resend of one is a
	// replay).
	if rep.archivedGSeq > 0 {
		err = indexedGSeqs(db, func(did device.DID, seq, g uint64) {
			if g > 0 && g <= rep.archivedGSeq {
				index = append(index, idx{did, seq, g})
			}
		})
		if err != nil {
			return err
		}
	}
	if err := db.DropPrefix([]byte(prefixDevSeq), []byte(prefixLastSeq)); err != nil {
		return err
	}
	wb = db.NewWriteBatch()
	for _, k := range drop {
		if err := wb.Delete(k); err != nil {
			wb.Cancel()
			return err
		}
	}
	for _, x := range index {
		if err := wb.Set(devSeqKey(x.did, x.seq), u64(x.gsq)); err != nil {
			wb.Cancel()
			return err
		}
	}
	var top uint64
	if len(kept) > 0 {
		top = kept[len(kept)-1]
	}
	// Every kept record stays: nothing above a hole is taken for a failed
	// write's tail at the next open.
	if err := wb.Set([]byte(ackedKey), u64(top)); err != nil {
		wb.Cancel()
		return err
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	// Each device's seq state (last seq and open gaps) comes from the seqs
	// that are still stored: a record the repair lost below a device's last
	// seq becomes an open gap, so the device can still resend it from its
	// spool as a late fill (docs/protocol.md).
	for did := range devices {
		if err := db.Update(func(txn *badger.Txn) error { return rebuildSeqState(txn, did, DefaultMaxOpenGaps) }); err != nil {
			return err
		}
	}
	rep.Records = uint64(len(kept))
	rep.kept = kept
	return nil
}

// missing returns the ranges of first..highest not in kept (sorted).
func missing(kept []uint64, first, highest uint64) []GSeqRange {
	var out []GSeqRange
	next := first
	for _, g := range kept {
		if g > next {
			out = append(out, GSeqRange{next, g - 1})
		}
		next = g + 1
	}
	if highest >= next {
		out = append(out, GSeqRange{next, highest})
	}
	return out
}

// valueLogRecord returns the gseq of a value log entry that is a record
// decoding as the record of that gseq.
func valueLogRecord(key, val []byte) (uint64, bool) {
	if len(key) != len(prefixRecord)+8 || !strings.HasPrefix(string(key), prefixRecord) {
		return 0, false
	}
	g := binary.BigEndian.Uint64(key[len(prefixRecord):])
	var r Record
	if decodeRecord(val, &r) != nil || r.GSeq != g {
		return 0, false
	}
	return g, true
}

// newestValues keeps, per number, the value of the newest version seen.
type newestValues map[uint64]struct {
	version uint64
	val     []byte
}

func (n newestValues) put(k, version uint64, val []byte) {
	if b, ok := n[k]; !ok || version >= b.version {
		n[k] = struct {
			version uint64
			val     []byte
		}{version, append([]byte(nil), val...)}
	}
}

func (n newestValues) values() map[uint64][]byte {
	out := make(map[uint64][]byte, len(n))
	for k, b := range n {
		out[k] = b.val
	}
	return out
}
