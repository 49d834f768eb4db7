package gateway

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/pb"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
	"google.golang.org/protobuf/proto"

	"github.com/edgeanchor/edgeanchor/device"
)

// GSeqRange is gseq From..To, both included.
type GSeqRange struct{ From, To uint64 }

func (r GSeqRange) String() string {
	if r.From == r.To {
		return fmt.Sprint(r.From)
	}
	return fmt.Sprintf("%d-%d", r.From, r.To)
}

// RepairReport says what RepairStore kept and what it could not.
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
	Batches       uint64   // batches kept (1..Batches)
	DroppedBatch  []uint64 // batch seqs removed: unreadable, or after one
	Anchored      uint64   // batches 1..Anchored have their anchor commit

	kept []uint64
	// archivedGSeq, archivedBatch: the last archived record and batch
	// (archive.go), 0 without archives.
	archivedGSeq, archivedBatch uint64
}

// LostCount is the number of gseqs in r.Lost.
func (r *RepairReport) LostCount() uint64 {
	var n uint64
	for _, l := range r.Lost {
		n += l.To - l.From + 1
	}
	return n
}

// RepairStore repairs the record store in dir (the gateway must be
// stopped): it first copies dir to dir.damaged-TIME (kept), drops table
// files that cannot be read, reads back from the value logs every record
// whose key was lost with them, then keeps every record whose value is
// intact, deletes the others, rebuilds the device indexes (d/, l/) from
// what is kept, keeps the batch chain up to its first unreadable batch,
// and returns what it kept and the gseq ranges it lost.
func RepairStore(dir string, now time.Time, log *slog.Logger) (*RepairReport, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("gateway: repair: %s is not a record store directory: %v", dir, err)
	}
	if err := checkUnlocked(dir); err != nil {
		return nil, err
	}
	rep := &RepairReport{Dir: dir, Backup: dir + ".damaged-" + now.UTC().Format("20060102T150405Z")}
	if err := copyDir(dir, rep.Backup); err != nil {
		return nil, fmt.Errorf("gateway: repair: copy %s to %s: %w", dir, rep.Backup, err)
	}
	opts := badgerOptions(dir, DefaultConfig().Store, log)
	bad, err := checkTables(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("gateway: repair: %w", err)
	}
	for _, b := range bad {
		if err := dropTable(dir, b.Path); err != nil {
			return nil, fmt.Errorf("gateway: repair: drop table %s: %w", b.Path, err)
		}
		rep.DroppedTables = append(rep.DroppedTables, b.Path)
	}
	vrecs, vbatches := newestValues{}, newestValues{}
	err = scanValueLogs(dir, func(key, val []byte, version uint64) {
		if g, ok := valueLogRecord(key, val); ok {
			vrecs.put(g, version, val)
		} else if seq, ok := valueLogBatch(key, val); ok {
			vbatches.put(seq, version, val)
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
	// Archived records and batches (archive.go) are neither lost nor
	// read back from the value logs.
	if err := rollForwardArchive(db, log); err != nil {
		return nil, fmt.Errorf("gateway: repair %s: %w", dir, err)
	}
	if list, err := loadArchives(db); err != nil {
		return nil, fmt.Errorf("gateway: repair %s: %w", dir, err)
	} else if n := len(list); n > 0 {
		rep.archivedGSeq, rep.archivedBatch = list[n-1].LastGSeq, list[n-1].LastBatch
	}
	if err := repairRecords(db, vrecs.values(), rep); err != nil {
		return nil, fmt.Errorf("gateway: repair %s: %w", dir, err)
	}
	if err := repairBatches(db, vbatches.values(), rep); err != nil {
		return nil, fmt.Errorf("gateway: repair %s: %w", dir, err)
	}
	// Batched gseqs above the kept records are lost too.
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
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixDevSeq)})
		defer it.Close()
		for it.Rewind(); it.Valid() && rep.archivedGSeq > 0; it.Next() {
			k := it.Item().Key()
			if len(k) < len(prefixDevSeq)+9 {
				continue
			}
			var g uint64
			_ = it.Item().Value(func(v []byte) error {
				if len(v) == 8 {
					g = binary.BigEndian.Uint64(v)
				}
				return nil
			})
			if g > 0 && g <= rep.archivedGSeq {
				index = append(index, idx{device.DID(k[len(prefixDevSeq) : len(k)-9]), binary.BigEndian.Uint64(k[len(k)-8:]), g})
			}
		}
		return nil
	})
	if err != nil {
		return err
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

// scanValueLogs reads every value log in dir directly (entry by entry,
// each checked against its CRC, stopping at the first bad one of a file)
// and calls fn with each live entry's key, value and version, in file
// name order. Record values are always in the value log (they are above the
// value threshold), each with its key, so a record whose key was lost with
// a table is still found here. fn must copy val to keep it.
func scanValueLogs(dir string, fn func(key, val []byte, version uint64)) error {
	paths, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		return err
	}
	sort.Strings(paths)
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		const vlogHeader = 20 // Badger's value log file header
		for off := vlogHeader; off+2 < len(data); {
			h := data[off:]
			meta, i := h[0], 2
			var f [3]uint64
			ok := true
			for j := range f {
				v, n := binary.Uvarint(h[i:])
				if n <= 0 {
					ok = false
					break
				}
				f[j], i = v, i+n
			}
			klen, vlen := f[0], f[1]
			if !ok || klen < 8 || klen > 1<<16 || vlen > 1<<30 || uint64(len(h)-i) < klen+vlen+4 {
				break
			}
			end := i + int(klen+vlen)
			if crc32.Checksum(h[:end], y.CastagnoliCrcTable) != binary.BigEndian.Uint32(h[end:end+4]) {
				break
			}
			off += end + 4
			key := h[i : i+int(klen)-8]
			version := math.MaxUint64 - binary.BigEndian.Uint64(h[i+int(klen)-8:i+int(klen)])
			if meta&1 != 0 {
				continue
			}
			fn(key, h[i+int(klen):end], version)
		}
	}
	return nil
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

// dropTable removes a table from the store: a DELETE change appended to
// the MANIFEST (Badger's own format: length, CRC32-C, the change set),
// then the file.
func dropTable(dir, path string) error {
	id, ok := table.ParseFileID(filepath.Base(path))
	if !ok {
		return fmt.Errorf("%s is not a table file name", path)
	}
	buf, err := proto.Marshal(&pb.ManifestChangeSet{Changes: []*pb.ManifestChange{{Id: id, Op: pb.ManifestChange_DELETE}}})
	if err != nil {
		return err
	}
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[0:4], uint32(len(buf)))
	binary.BigEndian.PutUint32(hdr[4:8], crc32.Checksum(buf, y.CastagnoliCrcTable))
	f, err := os.OpenFile(filepath.Join(dir, badger.ManifestFilename), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(hdr[:], buf...)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Remove(path)
}

// checkUnlocked fails when a process (a running gateway) holds the
// store's Badger directory lock (flock on the directory itself).
func checkUnlocked(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("gateway: repair: %s is in use (stop the gateway first): %w", dir, err)
	}
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}

// copyDir copies the regular files of src into a new directory dst.
func copyDir(src, dst string) error {
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
