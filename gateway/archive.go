package gateway

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cometbft/cometbft/types"
	badger "github.com/dgraph-io/badger/v4"
	"github.com/emmansun/gmsm/sm3"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

// Retention (docs/operations.md, "Retention: archiving old records"). An
// operator moves whole anchored batches older than a cutoff out of a
// stopped gateway's store into an archive file that holds everything their
// proof bundles need; the store keeps, under prefix a/:
//
//	a/archives -> JSON []ArchiveInfo: every archive taken from the store,
//	              oldest first; records at or below the last one's
//	              LastGSeq are archived, not missing
//	a/pending  -> JSON ArchiveInfo: an archive written and verified whose
//	              records are being deleted; whoever opens the store next
//	              finishes the deletion (rollForwardArchive)
//
// The device index d/{did}/{seq} of an archived record is kept (the device's
// sequence state is rebuilt from it, and a proof request by device seq is
// answered "archived in …" rather than "no such record").
const (
	archivesKey       = "a/archives"
	archivePendingKey = "a/pending"
)

// ArchiveFormat is the first line's "t" of an archive file.
const ArchiveFormat = "EdgeanchorArchive"

// maxArchiveLine bounds one line of an archive file (a batch line carries
// its header and anchor proof, a record line one record).
const maxArchiveLine = 16 << 20

// Archive errors.
var (
	// ErrNothingToArchive: no whole anchored batch ends before the cutoff
	// (the newest anchored batch always stays in the store). Nothing was
	// written.
	ErrNothingToArchive = errors.New("gateway: nothing to archive")
	// ErrArchiveFile: an archive file is malformed, truncated or altered;
	// the error names the line. Use another copy of the archive.
	ErrArchiveFile = errors.New("gateway: bad archive file")
)

// ArchiveInfo describes one archive taken from a store.
type ArchiveInfo struct {
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

// ArchivedError answers a request for a record that was archived: its
// proof comes from the archive file Archive.Name (edgeanchor archive proof).
type ArchivedError struct {
	GSeq    uint64
	Archive ArchiveInfo
}

func (e *ArchivedError) Error() string {
	return fmt.Sprintf("gateway: record %d is archived in %s (gseq %d..%d)", e.GSeq, e.Archive.Name, e.Archive.FirstGSeq, e.Archive.LastGSeq)
}

// Archive file lines: JSON, one object a line, "t" naming the kind. In
// order: one head, its Devices device lines, then each batch line followed
// by exactly its records (gseq order), then one end line whose sm3 is the
// SM3 of every byte before it.
type archiveHead struct {
	T          string      `json:"t"`
	V          int         `json:"v"`
	Gateway    device.DID  `json:"gateway"`
	GatewayPub []byte      `json:"gateway_pub"` // SPKI DER
	Before     time.Time   `json:"before"`
	FirstGSeq  uint64      `json:"first_gseq"`
	LastGSeq   uint64      `json:"last_gseq"`
	FirstBatch uint64      `json:"first_batch"`
	LastBatch  uint64      `json:"last_batch"`
	Devices    int         `json:"devices"`
	Created    time.Time   `json:"created"`
	Prev       anchor.Hash `json:"prev"` // prev of the first batch's header
}

type archiveDevice struct {
	T     string              `json:"t"`
	DID   device.DID          `json:"did"`
	Tx    []byte              `json:"tx"` // the RegisterDevice tx
	Proof *anchor.AnchorProof `json:"proof"`
}

type archiveBatchLine struct {
	T      string              `json:"t"`
	Batch  *StoredBatch        `json:"batch"`
	Anchor *anchor.AnchorProof `json:"anchor"`
}

type archiveRecord struct {
	T      string  `json:"t"`
	Record *Record `json:"record"`
}

type archiveEnd struct {
	T       string      `json:"t"`
	Batches uint64      `json:"batches"`
	Records uint64      `json:"records"`
	Devices int         `json:"devices"`
	SM3     anchor.Hash `json:"sm3"`
}

// ArchiveLedger is what ArchiveStore asks the ledger (*ledgerclient.Client
// implements it): the anchor proofs of the batches and the registrations of
// their devices, which the archive carries.
type ArchiveLedger interface {
	ProofLedger
}

// ArchiveOptions configure ArchiveStore.
type ArchiveOptions struct {
	// Before: batches whose time window ends before it are archived.
	Before time.Time
	// Out is the archive file to write; it must not exist.
	Out    string
	Ledger ArchiveLedger
	// GatewayPub is the gateway's public key (SPKI DER), put in every
	// bundle; the verification of the archive checks the batch headers
	// under it.
	GatewayPub []byte
	// Trust is the consortium's trust file: every record's bundle must
	// verify under it before anything is deleted.
	Trust  *anchor.Trust
	Logger *slog.Logger
	// Workers verify bundles in parallel (default GOMAXPROCS).
	Workers int
	// Now stamps the archive (default time.Now).
	Now func() time.Time
	// KeepRecords writes and verifies the archive but deletes nothing
	// (a dry run, or a copy for another site).
	KeepRecords bool
}

// archiveStep is called at each step of ArchiveStore ("written",
// "verified", "marked", "deleting", "recorded"); tests kill the process
// there.
var archiveStep = func(string) {}

// ArchiveStore archives the anchored batches of the stopped gateway's
// record store in dir whose time window ends before o.Before, except the
// newest anchored batch, which always stays: it writes them to o.Out,
// verifies every record's bundle from the file against o.Trust, and only
// then deletes the records and batch headers from the store, which keeps
// an ArchiveInfo naming the file. A crash at any point leaves the store as
// it was (no a/pending) or, once a/pending is written, a deletion that the
// next open of the store finishes.
func ArchiveStore(ctx context.Context, dir string, o ArchiveOptions) (*ArchiveInfo, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Ledger == nil || o.Trust == nil || o.Out == "" || o.Before.IsZero() || len(o.GatewayPub) == 0 {
		return nil, errors.New("gateway: archive needs a cutoff, an output file, the ledger, the gateway key and a trust file")
	}
	if _, err := os.Stat(o.Out); err == nil {
		return nil, fmt.Errorf("gateway: archive: %s exists; choose another name (an archive is never overwritten)", o.Out)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("gateway: archive: %s is not a record store directory", dir)
	}
	if err := checkUnlocked(dir); err != nil {
		return nil, fmt.Errorf("gateway: archive: %s is in use (stop the gateway first): %w", dir, err)
	}
	opts := badgerOptions(dir, DefaultConfig().Store, o.Logger)
	db, err := openBadger(opts)
	if err != nil {
		return nil, fmt.Errorf("gateway: archive: open %s: %w", dir, err)
	}
	defer func() {
		if db != nil {
			_ = db.Close()
		}
	}()
	if err := rollForwardArchive(db, o.Logger); err != nil {
		return nil, err
	}
	info, err := writeArchive(ctx, db, o)
	if err != nil {
		return nil, err
	}
	archiveStep("written")
	sum, err := VerifyArchive(o.Out, o.Trust, o.Workers)
	if err != nil {
		return nil, fmt.Errorf("gateway: archive %s does not verify, nothing deleted: %w", o.Out, err)
	}
	if sum.Records != info.Records || sum.SM3 != info.SM3 {
		return nil, fmt.Errorf("gateway: archive %s read back %d records (sm3 %s), wrote %d (sm3 %s); nothing deleted",
			o.Out, sum.Records, sum.SM3, info.Records, info.SM3)
	}
	archiveStep("verified")
	if o.KeepRecords {
		return info, nil
	}
	pending, err := json.Marshal(info)
	if err != nil {
		return nil, err
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(archivePendingKey), pending) }); err != nil {
		return nil, fmt.Errorf("gateway: archive: mark the deletion: %w", err)
	}
	archiveStep("marked")
	if err := rollForwardArchive(db, o.Logger); err != nil {
		return nil, err
	}
	// The deletions' tombstones reach the tables at close; a compaction of
	// the tables then counts the values they free, and the value log GC
	// rewrites the files they were in.
	err = db.Close()
	db = nil
	if err != nil {
		return nil, fmt.Errorf("gateway: archive: close %s: %w", dir, err)
	}
	if db, err = openBadger(opts); err != nil {
		return nil, fmt.Errorf("gateway: archive: open %s: %w", dir, err)
	}
	reclaimSpace(db, o.Logger)
	return info, nil
}

// rollForwardArchive finishes the deletion of a/pending's archive, if any:
// it deletes the archived records and batch headers (again: deleting is
// idempotent), then moves the ArchiveInfo to a/archives and removes
// a/pending in one transaction.
func rollForwardArchive(db *badger.DB, log *slog.Logger) error {
	var info ArchiveInfo
	found := false
	err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(archivePendingKey))
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
		return fmt.Errorf("gateway: archive: read %s: %w", archivePendingKey, err)
	}
	if !found {
		return nil
	}
	if info.LastGSeq == 0 || info.LastBatch == 0 {
		return fmt.Errorf("gateway: archive: %s names no records: %+v", archivePendingKey, info)
	}
	blog := NewBatchLog(db, batchKeyPrefix)
	// Deleted while iterating, in write batches of 100,000 keys: the batch
	// index first, then the headers, then the records (a batch is never
	// found by gseq without its header). Deleting is idempotent, so a
	// crash anywhere here is finished by the next call.
	var deleted int
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
						archiveStep("deleting")
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
		return nil
	}
	if err := del(blog.prefix+"l/", info.LastGSeq, false); err != nil {
		return err
	}
	if err := del(blog.prefix+"h/", info.LastBatch, false); err != nil {
		return err
	}
	nbatch := deleted
	if err := del(prefixRecord, info.LastGSeq, true); err != nil {
		return err
	}
	err = db.Update(func(txn *badger.Txn) error {
		list, err := readArchives(txn)
		if err != nil {
			return err
		}
		if n := len(list); n == 0 || list[n-1].LastGSeq < info.LastGSeq {
			list = append(list, info)
		}
		b, err := json.Marshal(list)
		if err != nil {
			return err
		}
		if err := txn.Set([]byte(archivesKey), b); err != nil {
			return err
		}
		return txn.Delete([]byte(archivePendingKey))
	})
	if err != nil {
		return fmt.Errorf("gateway: archive: record %s: %w", info.Name, err)
	}
	archiveStep("recorded")
	log.Info("record store: archived records deleted", "archive", info.Name,
		"first_gseq", info.FirstGSeq, "last_gseq", info.LastGSeq, "records", deleted-nbatch)
	return nil
}

// reclaimSpace compacts the tree and rewrites the value logs whose
// records were deleted, so that the disk space comes back.
func reclaimSpace(db *badger.DB, log *slog.Logger) {
	if err := db.Flatten(2); err != nil {
		log.Warn("record store: flatten after archiving failed", "error", err)
	}
	n := 0
	for ; n < 10_000; n++ {
		if err := db.RunValueLogGC(0.3); err != nil {
			break
		}
	}
	log.Info("record store: value logs rewritten after archiving", "files", n)
}

func readArchives(txn *badger.Txn) ([]ArchiveInfo, error) {
	item, err := txn.Get([]byte(archivesKey))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var list []ArchiveInfo
	err = item.Value(func(v []byte) error { return json.Unmarshal(v, &list) })
	if err != nil {
		return nil, fmt.Errorf("gateway: %s: %w", archivesKey, err)
	}
	return list, nil
}

// loadArchives returns the archives taken from the store in db.
func loadArchives(db *badger.DB) ([]ArchiveInfo, error) {
	var list []ArchiveInfo
	err := db.View(func(txn *badger.Txn) error {
		var err error
		list, err = readArchives(txn)
		return err
	})
	return list, err
}

// Archives returns the archives taken from the store, oldest first.
func (s *Store) Archives() []ArchiveInfo { return s.archives }

// ArchivedThrough returns the highest archived gseq (0: none).
func (s *Store) ArchivedThrough() uint64 {
	if n := len(s.archives); n > 0 {
		return s.archives[n-1].LastGSeq
	}
	return 0
}

// archiveOf returns the archive that holds gseq, or nil.
func (s *Store) archiveOf(gseq uint64) *ArchiveInfo {
	for i := range s.archives {
		if a := &s.archives[i]; a.FirstGSeq <= gseq && gseq <= a.LastGSeq {
			return a
		}
	}
	return nil
}

// archiveOfBatch returns the archive that holds batch seq, or nil.
func (s *Store) archiveOfBatch(seq uint64) *ArchiveInfo {
	for i := range s.archives {
		if a := &s.archives[i]; a.FirstBatch <= seq && seq <= a.LastBatch {
			return a
		}
	}
	return nil
}

// ArchivedRecord returns an *ArchivedError when the record of did and seq
// was archived, else nil.
func (s *Store) ArchivedRecord(did device.DID, seq uint64) error {
	if len(s.archives) == 0 {
		return nil
	}
	var g uint64
	err := s.db.View(func(txn *badger.Txn) error {
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
	if err != nil || g == 0 {
		return nil
	}
	if a := s.archiveOf(g); a != nil {
		return &ArchivedError{GSeq: g, Archive: *a}
	}
	return nil
}

// writeArchive writes the archive file of the batches to archive.
func writeArchive(ctx context.Context, db *badger.DB, o ArchiveOptions) (*ArchiveInfo, error) {
	blog := NewBatchLog(db, batchKeyPrefix)
	anchored, err := blog.AnchoredSeq()
	if err != nil {
		return nil, err
	}
	list, err := loadArchives(db)
	if err != nil {
		return nil, err
	}
	first := uint64(1)
	if n := len(list); n > 0 {
		first = list[n-1].LastBatch + 1
	}
	var batches []*StoredBatch
	for seq := first; seq < anchored; seq++ {
		sb, err := blog.Get(seq)
		if err != nil {
			return nil, fmt.Errorf("gateway: archive: batch %d: %w", seq, err)
		}
		h, err := sb.ParsedHeader()
		if err != nil {
			return nil, fmt.Errorf("gateway: archive: batch %d: %w", seq, err)
		}
		if !h.To.Before(o.Before) || sb.Anchor == nil {
			break
		}
		batches = append(batches, sb)
	}
	if len(batches) == 0 {
		return nil, fmt.Errorf("%w: no whole anchored batch from %d ends before %s (the newest anchored batch, %d, always stays)",
			ErrNothingToArchive, first, anchor.FormatTime(o.Before), anchored)
	}
	h0, _ := batches[0].ParsedHeader()
	lastB := batches[len(batches)-1]
	head := archiveHead{T: ArchiveFormat, V: 1, Gateway: h0.Gateway, GatewayPub: o.GatewayPub, Before: o.Before.UTC(),
		FirstGSeq: batches[0].First, LastGSeq: lastB.Last, FirstBatch: batches[0].Seq, LastBatch: lastB.Seq,
		Created: o.Now().UTC(), Prev: h0.Prev}

	// The devices of the archived records, from the device index.
	dids, err := archivedDevices(db, head.FirstGSeq, head.LastGSeq)
	if err != nil {
		return nil, err
	}
	head.Devices = len(dids)

	tmp := o.Out + ".partial"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("gateway: archive: %w", err)
	}
	defer func() {
		if f != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	w := newArchiveWriter(f)
	if err := w.line(head); err != nil {
		return nil, err
	}
	for _, did := range dids {
		rec, err := o.Ledger.Device(ctx, did)
		if err != nil {
			return nil, fmt.Errorf("gateway: archive: device %s on the ledger: %w", did, err)
		}
		ap, err := o.Ledger.ProveTxHash(ctx, rec.Tx)
		if err != nil {
			return nil, fmt.Errorf("gateway: archive: registration of %s: %w", did, err)
		}
		if err := w.line(archiveDevice{T: "device", DID: did, Tx: ap.Tx, Proof: ap}); err != nil {
			return nil, err
		}
	}
	var records uint64
	// Anchor proofs are fetched archiveFetchers at a time, a chunk of
	// batches ahead of the writing (one ledger round trip each).
	var proofs []*anchor.AnchorProof
	for i, sb := range batches {
		if i%archiveChunk == 0 {
			var err error
			if proofs, err = fetchAnchorProofs(ctx, o.Ledger, batches[i:min(i+archiveChunk, len(batches))]); err != nil {
				return nil, err
			}
		}
		ap := proofs[i%archiveChunk]
		if err := w.line(archiveBatchLine{T: "batch", Batch: sb, Anchor: ap}); err != nil {
			return nil, err
		}
		want := sb.First
		err = rangeRecords(db, sb.First, sb.Last, func(r *Record) error {
			if r.GSeq != want {
				return fmt.Errorf("gateway: archive: batch %d: record %d missing from the store", sb.Seq, want)
			}
			want++
			records++
			return w.line(archiveRecord{T: "record", Record: r})
		})
		if err != nil {
			return nil, err
		}
		if want != sb.Last+1 {
			return nil, fmt.Errorf("gateway: archive: batch %d: records %d..%d missing from the store", sb.Seq, want, sb.Last)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	sum := w.sum()
	if err := w.line(archiveEnd{T: "end", Batches: uint64(len(batches)), Records: records, Devices: len(dids), SM3: sum}); err != nil {
		return nil, err
	}
	if err := w.bw.Flush(); err != nil {
		return nil, fmt.Errorf("gateway: archive: %w", err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("gateway: archive: %w", err)
	}
	if err := f.Close(); err != nil {
		f = nil
		return nil, fmt.Errorf("gateway: archive: %w", err)
	}
	f = nil
	if err := os.Rename(tmp, o.Out); err != nil {
		return nil, fmt.Errorf("gateway: archive: %w", err)
	}
	if err := syncDir(filepath.Dir(o.Out)); err != nil {
		return nil, fmt.Errorf("gateway: archive: %w", err)
	}
	return &ArchiveInfo{Name: filepath.Base(o.Out), SM3: sum, Gateway: head.Gateway, Before: head.Before,
		FirstGSeq: head.FirstGSeq, LastGSeq: head.LastGSeq, FirstBatch: head.FirstBatch, LastBatch: head.LastBatch,
		Records: records, Devices: len(dids), Created: head.Created}, nil
}

// archiveChunk batches have their anchor proofs fetched together,
// archiveFetchers at a time.
const (
	archiveChunk    = 256
	archiveFetchers = 4
)

// fetchAnchorProofs returns the anchor proofs of bs, in order.
func fetchAnchorProofs(ctx context.Context, l ArchiveLedger, bs []*StoredBatch) ([]*anchor.AnchorProof, error) {
	out := make([]*anchor.AnchorProof, len(bs))
	errs := make([]error, len(bs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(archiveFetchers, len(bs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(bs) && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				out[i], errs[i] = l.ProveAnchor(ctx, bs[i].Tx)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("gateway: archive: anchor proof of batch %d: %w", bs[i].Seq, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// archivedDevices returns the devices with a record in first..last, from
// the device index, sorted.
func archivedDevices(db *badger.DB, first, last uint64) ([]device.DID, error) {
	seen := map[device.DID]bool{}
	var out []device.DID
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixDevSeq), PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) < len(prefixDevSeq)+9 {
				continue
			}
			did := device.DID(k[len(prefixDevSeq) : len(k)-9])
			if seen[did] {
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
			if first <= g && g <= last {
				seen[did] = true
				out = append(out, did)
			}
		}
		return nil
	})
	return out, err
}

// rangeRecords calls fn for the records first..last of db, in order.
func rangeRecords(db *badger.DB, first, last uint64, fn func(*Record) error) error {
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

type archiveWriter struct {
	bw *bufio.Writer
	h  hash.Hash
}

func newArchiveWriter(w io.Writer) *archiveWriter {
	return &archiveWriter{bw: bufio.NewWriterSize(w, 1<<20), h: sm3.New()}
}

func (w *archiveWriter) line(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("gateway: archive: %w", err)
	}
	b = append(b, '\n')
	w.h.Write(b)
	if _, err := w.bw.Write(b); err != nil {
		return fmt.Errorf("gateway: archive: %w", err)
	}
	return nil
}

func (w *archiveWriter) sum() anchor.Hash {
	var h anchor.Hash
	copy(h[:], w.h.Sum(nil))
	return h
}

// ArchiveBatch is one batch read from an archive file, with what its
// records' bundles need.
type ArchiveBatch struct {
	Batch   *StoredBatch
	Header  *anchor.BatchHeader
	Anchor  *anchor.AnchorProof
	Records []*Record
}

// ArchiveSummary is what reading a whole archive file found.
type ArchiveSummary struct {
	Gateway             device.DID
	FirstGSeq, LastGSeq uint64
	Batches, Records    uint64
	Devices             int
	SM3                 anchor.Hash
}

// archiveReader reads an archive file line by line, checking its order.
type archiveReader struct {
	path    string
	r       *bufio.Reader
	h       hash.Hash
	n       int // line number
	head    archiveHead
	devices map[device.DID]*archiveDevice
}

func (a *archiveReader) bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s line %d: %s", ErrArchiveFile, a.path, a.n, fmt.Sprintf(format, args...))
}

// next reads one line and returns its kind and bytes ("" at EOF).
func (a *archiveReader) next() (string, []byte, error) {
	var line []byte
	for {
		chunk, err := a.r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxArchiveLine {
			a.n++
			return "", nil, a.bad("line longer than %d bytes", maxArchiveLine)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(line) == 0 {
				return "", nil, nil
			}
			a.n++
			return "", nil, a.bad("truncated (no line end)")
		}
		if err != nil {
			return "", nil, fmt.Errorf("gateway: archive %s: %w", a.path, err)
		}
		break
	}
	a.n++
	var k struct {
		T string `json:"t"`
	}
	if err := json.Unmarshal(line, &k); err != nil {
		return "", nil, a.bad("%v", err)
	}
	if k.T != "end" {
		a.h.Write(line)
	}
	return k.T, line, nil
}

// readArchive reads the archive at path, calling fn with each batch and
// its records; fn returning errStopArchive ends the read early (no end
// check). It checks the order of the lines, each batch's records against
// its header (gseqs and Merkle root) and the end line's counts and SM3.
func readArchive(path string, fn func(ar *archiveReader, b *ArchiveBatch) error) (*ArchiveSummary, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gateway: archive: %w", err)
	}
	defer f.Close()
	a := &archiveReader{path: path, r: bufio.NewReaderSize(f, 1<<20), h: sm3.New(), devices: map[device.DID]*archiveDevice{}}
	t, line, err := a.next()
	if err != nil {
		return nil, err
	}
	if t != ArchiveFormat {
		return nil, a.bad("not an edgeanchor archive (first line's t is %q, want %q)", t, ArchiveFormat)
	}
	if err := json.Unmarshal(line, &a.head); err != nil || a.head.V != 1 || a.head.FirstGSeq == 0 || a.head.LastGSeq < a.head.FirstGSeq {
		return nil, a.bad("bad head (v %d, gseq %d..%d): %v", a.head.V, a.head.FirstGSeq, a.head.LastGSeq, err)
	}
	sum := &ArchiveSummary{Gateway: a.head.Gateway, FirstGSeq: a.head.FirstGSeq, LastGSeq: a.head.LastGSeq}
	var cur *ArchiveBatch
	wantGSeq, wantBatch, prev := a.head.FirstGSeq, a.head.FirstBatch, a.head.Prev
	flush := func() error {
		if cur == nil {
			return nil
		}
		if uint64(len(cur.Records)) != cur.Header.Count {
			return a.bad("batch %d has %d records, its header says %d", cur.Batch.Seq, len(cur.Records), cur.Header.Count)
		}
		leaves := make([]anchor.Hash, len(cur.Records))
		for i, r := range cur.Records {
			leaves[i] = anchor.LeafHash(r.Salt, r.Receipt)
		}
		if root := anchor.MerkleRoot(leaves); root != cur.Header.Root {
			return a.bad("batch %d: records hash to %s, the header says %s", cur.Batch.Seq, root, cur.Header.Root)
		}
		sum.Batches++
		b := cur
		cur = nil
		return fn(a, b)
	}
	for {
		t, line, err := a.next()
		if err != nil {
			return nil, err
		}
		switch t {
		case "device":
			if cur != nil || sum.Batches > 0 {
				return nil, a.bad("device line after the batches")
			}
			var d archiveDevice
			if err := json.Unmarshal(line, &d); err != nil || d.Proof == nil {
				return nil, a.bad("bad device line: %v", err)
			}
			warmProof(d.Proof)
			a.devices[d.DID] = &d
		case "batch":
			if err := flush(); err != nil {
				return nil, err
			}
			if len(a.devices) != a.head.Devices {
				return nil, a.bad("%d device lines, the head says %d", len(a.devices), a.head.Devices)
			}
			var bl archiveBatchLine
			if err := json.Unmarshal(line, &bl); err != nil || bl.Batch == nil || bl.Anchor == nil {
				return nil, a.bad("bad batch line: %v", err)
			}
			h, err := bl.Batch.ParsedHeader()
			if err != nil {
				return nil, a.bad("batch header: %v", err)
			}
			if h.Seq != wantBatch || h.First != wantGSeq || h.Prev != prev || h.Seq != bl.Batch.Seq ||
				h.First != bl.Batch.First || h.Last != bl.Batch.Last || h.Gateway != a.head.Gateway {
				return nil, a.bad("batch %d (gseq %d..%d) does not continue the chain (want batch %d from gseq %d)",
					h.Seq, h.First, h.Last, wantBatch, wantGSeq)
			}
			wantBatch, wantGSeq, prev = h.Seq+1, h.Last+1, h.Hash()
			warmProof(bl.Anchor)
			cur = &ArchiveBatch{Batch: bl.Batch, Header: h, Anchor: bl.Anchor}
		case "record":
			var rl archiveRecord
			if err := json.Unmarshal(line, &rl); err != nil || rl.Record == nil {
				return nil, a.bad("bad record line: %v", err)
			}
			if cur == nil || rl.Record.GSeq != cur.Batch.First+uint64(len(cur.Records)) || rl.Record.GSeq > cur.Batch.Last {
				return nil, a.bad("record %d out of place", rl.Record.GSeq)
			}
			cur.Records = append(cur.Records, rl.Record)
			sum.Records++
		case "end":
			var end archiveEnd
			if err := json.Unmarshal(line, &end); err != nil {
				return nil, a.bad("bad end line: %v", err)
			}
			if err := flush(); err != nil {
				return nil, err
			}
			copy(sum.SM3[:], a.h.Sum(nil))
			sum.Devices = len(a.devices)
			switch {
			case end.SM3 != sum.SM3:
				return nil, a.bad("the file hashes to %s, its end line says %s (altered)", sum.SM3, end.SM3)
			case end.Records != sum.Records || end.Batches != sum.Batches || end.Devices != sum.Devices:
				return nil, a.bad("counts %d records %d batches %d devices, the end line says %d %d %d",
					sum.Records, sum.Batches, sum.Devices, end.Records, end.Batches, end.Devices)
			case wantGSeq != a.head.LastGSeq+1 || wantBatch != a.head.LastBatch+1:
				return nil, a.bad("batches end at gseq %d batch %d, the head says %d %d", wantGSeq-1, wantBatch-1, a.head.LastGSeq, a.head.LastBatch)
			}
			if t2, _, err := a.next(); err != nil || t2 != "" {
				return nil, a.bad("data after the end line")
			}
			return sum, nil
		case "":
			return nil, a.bad("truncated: no end line")
		default:
			return nil, a.bad("unknown line kind %q", t)
		}
	}
}

// warmProof computes the validator sets' total voting power, which
// CometBFT caches on first use: the bundles of one batch share the proof,
// and VerifyArchive verifies them in parallel.
func warmProof(p *anchor.AnchorProof) {
	for _, v := range []*types.ValidatorSet{p.Validators, p.NextValidators} {
		if v != nil && len(v.Validators) > 0 {
			v.TotalVotingPower()
		}
	}
}

// errStopArchive ends readArchive early.
var errStopArchive = errors.New("stop")

// bundle builds the proof bundle of b's record i from the archive.
func (a *archiveReader) bundle(b *ArchiveBatch, i int, paths [][]anchor.Hash) (*anchor.Bundle, error) {
	r := b.Records[i]
	dev, ok := a.devices[r.DID]
	if !ok {
		return nil, a.bad("no device line for %s (record %d)", r.DID, r.GSeq)
	}
	return &anchor.Bundle{
		Type: anchor.BundleType, V: anchor.BundleVersion,
		Record:   anchor.BundleRecord{Gateway: a.head.Gateway, GSeq: r.GSeq, DID: r.DID, Seq: r.Seq},
		Envelope: r.Envelope,
		Device:   anchor.BundleDevice{Tx: dev.Tx, Proof: dev.Proof},
		Receipt:  anchor.BundleReceipt{Body: r.Receipt, Group: r.Group, Path: r.Path, Sig: r.ReceiptSig},
		Salt:     r.Salt,
		Merkle:   anchor.BundleMerkle{Index: uint64(i), Size: uint64(len(b.Records)), Path: paths[i]},
		Batch:    anchor.BundleSigned{Body: b.Batch.Header, Sig: b.Batch.Sig},
		Gateway:  anchor.BundleGateway{DID: a.head.Gateway, Pub: a.head.GatewayPub},
		Anchor:   b.Anchor,
	}, nil
}

// leafPaths returns the RFC 6962 audit path of every leaf of b's tree
// (what anchor.InclusionProof returns for each index, in one pass).
func leafPaths(b *ArchiveBatch) [][]anchor.Hash {
	level := make([]anchor.Hash, len(b.Records))
	for i, r := range b.Records {
		level[i] = anchor.LeafHash(r.Salt, r.Receipt)
	}
	paths := make([][]anchor.Hash, len(level))
	idx := make([]uint64, len(level))
	for i := range idx {
		idx[i] = uint64(i)
	}
	for len(level) > 1 {
		for i := range paths {
			if sib := idx[i] ^ 1; sib < uint64(len(level)) {
				paths[i] = append(paths[i], level[sib])
			}
			idx[i] /= 2
		}
		next := make([]anchor.Hash, 0, (len(level)+1)/2)
		for i := 0; i+1 < len(level); i += 2 {
			next = append(next, anchor.Hash(anchor.SM3Hasher{}.HashChildren(level[i][:], level[i+1][:])))
		}
		if len(level)%2 == 1 {
			next = append(next, level[len(level)-1])
		}
		level = next
	}
	return paths
}

// ArchiveBundle returns the proof bundle of record gseq from the archive
// file at path. It reads the file up to that record's batch.
func ArchiveBundle(path string, gseq uint64) (*anchor.Bundle, error) {
	var out *anchor.Bundle
	_, err := readArchive(path, func(a *archiveReader, b *ArchiveBatch) error {
		if gseq < b.Batch.First || gseq > b.Batch.Last {
			return nil
		}
		var err error
		out, err = a.bundle(b, int(gseq-b.Batch.First), leafPaths(b))
		if err != nil {
			return err
		}
		return errStopArchive
	})
	if out != nil {
		return out, nil
	}
	if err == nil {
		return nil, fmt.Errorf("%w: gseq %d is not in archive %s", ErrNotFound, gseq, path)
	}
	return nil, err
}

// ArchiveDeviceBundle returns the proof bundle of device did's record seq
// from the archive file at path.
func ArchiveDeviceBundle(path string, did device.DID, seq uint64) (*anchor.Bundle, error) {
	var out *anchor.Bundle
	_, err := readArchive(path, func(a *archiveReader, b *ArchiveBatch) error {
		for i, r := range b.Records {
			if r.DID == did && r.Seq == seq {
				var err error
				out, err = a.bundle(b, i, leafPaths(b))
				if err != nil {
					return err
				}
				return errStopArchive
			}
		}
		return nil
	})
	if out != nil {
		return out, nil
	}
	if err == nil {
		return nil, fmt.Errorf("%w: %s seq %d is not in archive %s", ErrNotFound, did, seq, path)
	}
	return nil, err
}

// VerifyArchive reads the whole archive file at path and verifies every
// record's proof bundle, built from the file alone, against trust, with
// workers in parallel (0: GOMAXPROCS). The first failure is returned,
// naming the record.
func VerifyArchive(path string, trust *anchor.Trust, workers int) (*ArchiveSummary, error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	type job struct {
		gseq uint64
		b    *anchor.Bundle
	}
	if trust != nil && trust.Validators != nil && len(trust.Validators.Validators) > 0 {
		trust.Validators.TotalVotingPower() // cached on first use; shared below
	}
	jobs := make(chan job, 4*workers)
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	failed := func() bool { mu.Lock(); defer mu.Unlock(); return firstErr != nil }
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if _, err := j.b.Verify(trust, nil); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("gateway: archive %s: record %d: %w", path, j.gseq, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	sum, err := readArchive(path, func(a *archiveReader, b *ArchiveBatch) error {
		paths := leafPaths(b)
		for i := range b.Records {
			bu, err := a.bundle(b, i, paths)
			if err != nil {
				return err
			}
			if failed() {
				return errStopArchive
			}
			jobs <- job{b.Records[i].GSeq, bu}
		}
		return nil
	})
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err != nil {
		return nil, err
	}
	return sum, nil
}

// ArchivedAnswer is the API's answer (410 Gone) for an archived record.
type ArchivedAnswer struct {
	Error   string      `json:"error"`
	GSeq    uint64      `json:"gseq,omitempty"`
	Archive ArchiveInfo `json:"archive"`
}

// archivedAnswer answers 410 naming the archive that holds the record.
func archivedAnswer(w http.ResponseWriter, err error) {
	var a *ArchivedError
	if !errors.As(err, &a) {
		proofError(w, http.StatusNotFound, "no such record")
		return
	}
	writeJSON(w, http.StatusGone, ArchivedAnswer{Error: "record archived", GSeq: a.GSeq, Archive: a.Archive})
}
