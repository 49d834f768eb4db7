package archive

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
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
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/batch"
	"github.com/edgeanchor/edgeanchor/gateway/store"
	"github.com/edgeanchor/edgeanchor/gateway/store/archived"
)

// The archive file of a gateway's retention (docs/operations.md,
// "Retention: archiving old records"): Create moves whole anchored batches
// older than a cutoff out of a stopped gateway's store into an archive file
// that holds everything their proof bundles need; the store keeps the
// marks of package gateway/store/archived.

// Format is the first line's "t" of an archive file.
const Format = "EdgeanchorArchive"

// maxArchiveLine bounds one line of an archive file (a batch line carries
// its header and anchor proof, a record line one record).
const maxArchiveLine = 16 << 20

// Archive errors.
var (
	// ErrNothingToArchive: no whole anchored batch ends before the cutoff
	// (the newest anchored batch always stays in the store). Nothing was
	// written.
	ErrNothingToArchive = errors.New("gateway: nothing to archive")
	// ErrFile: an archive file is malformed, truncated or altered;
	// the error names the line. Use another copy of the archive.
	ErrFile = errors.New("gateway: bad archive file")
)

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
	T     string                `json:"t"`
	DID   device.DID            `json:"did"`
	Tx    []byte                `json:"tx"` // the RegisterDevice tx
	Proof *evidence.AnchorProof `json:"proof"`
}

type archiveBatchLine struct {
	T      string                `json:"t"`
	Batch  *batch.Batch          `json:"batch"`
	Anchor *evidence.AnchorProof `json:"anchor"`
}

type archiveRecord struct {
	T      string        `json:"t"`
	Record *store.Record `json:"record"`
}

type archiveEnd struct {
	T       string      `json:"t"`
	Batches uint64      `json:"batches"`
	Records uint64      `json:"records"`
	Devices int         `json:"devices"`
	SM3     anchor.Hash `json:"sm3"`
}

// Ledger is what Create asks the ledger (*ledgerclient.Client implements
// it): the anchor proofs of the batches and the registrations of their
// devices, which the archive carries, and the key of the gateway that
// signed the batches.
type Ledger interface {
	batch.ProofLedger
	Gateway(ctx context.Context, did device.DID) (*anchor.GatewayRecord, error)
}

var _ Ledger = (*ledgerclient.Client)(nil)

// Options configure Create.
type Options struct {
	// Before: batches whose time window ends before it are archived.
	Before time.Time
	// Out is the archive file to write; it must not exist.
	Out    string
	Ledger Ledger
	// GatewayPub is the public key (SPKI DER) of the gateway that signed
	// the archived batches, put in every bundle; the verification of the
	// archive checks the batch headers under it. Empty: the ledger's key of
	// the gateway the first archived batch header names (after a key
	// rotation, a predecessor's key for the batches it signed).
	GatewayPub []byte
	// Trust is the consortium's trust file: every record's bundle must
	// verify under it before anything is deleted.
	Trust  *evidence.Trust
	Logger *slog.Logger
	// Workers verify bundles in parallel (default GOMAXPROCS).
	Workers int
	// Now stamps the archive (default time.Now).
	Now func() time.Time
	// KeepRecords writes and verifies the archive but deletes nothing
	// (a dry run, or a copy for another site).
	KeepRecords bool
	// Step (nil: none) is called at each step of Create ("written",
	// "verified", "marked", "deleting", "recorded"); tests kill the
	// process there.
	Step func(step string)
}

// Create archives the anchored batches of the stopped gateway's
// record store in dir whose time window ends before o.Before, except the
// newest anchored batch, which always stays: it writes them to o.Out,
// verifies every record's bundle from the file against o.Trust, and only
// then deletes the records and batch headers from the store, which keeps
// an ArchiveInfo naming the file. A crash at any point leaves the store as
// it was (no a/pending) or, once a/pending is written, a deletion that the
// next open of the store finishes.
func Create(ctx context.Context, dir string, o Options) (*store.ArchiveInfo, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Step == nil {
		o.Step = func(string) {}
	}
	if o.Ledger == nil || o.Trust == nil || o.Out == "" || o.Before.IsZero() {
		return nil, errors.New("gateway: archive needs a cutoff, an output file, the ledger and a trust file")
	}
	if _, err := os.Stat(o.Out); err == nil {
		return nil, fmt.Errorf("gateway: archive: %s exists; choose another name (an archive is never overwritten)", o.Out)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("gateway: archive: %s is not a record store directory", dir)
	}
	db, err := store.OpenOffline(dir, o.Logger)
	if err != nil {
		return nil, err
	}
	defer func() {
		if db != nil {
			_ = db.Close()
		}
	}()
	if err := store.FinishArchive(db, batch.Claims(), o.Logger, o.Step); err != nil {
		return nil, err
	}
	info, err := writeArchive(ctx, db, o)
	if err != nil {
		return nil, err
	}
	o.Step("written")
	sum, err := Verify(o.Out, o.Trust, o.Workers)
	if err != nil {
		return nil, fmt.Errorf("gateway: archive %s does not verify, nothing deleted: %w", o.Out, err)
	}
	if sum.Records != info.Records || sum.SM3 != info.SM3 {
		return nil, fmt.Errorf("gateway: archive %s read back %d records (sm3 %s), wrote %d (sm3 %s); nothing deleted",
			o.Out, sum.Records, sum.SM3, info.Records, info.SM3)
	}
	o.Step("verified")
	if o.KeepRecords {
		return info, nil
	}
	if err := archived.MarkPending(db, info); err != nil {
		return nil, err
	}
	o.Step("marked")
	if err := store.FinishArchive(db, batch.Claims(), o.Logger, o.Step); err != nil {
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
	if db, err = store.OpenOffline(dir, o.Logger); err != nil {
		return nil, err
	}
	reclaimSpace(db, o.Logger)
	return info, nil
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

// writeArchive writes the archive file of the batches to archive.
func writeArchive(ctx context.Context, db *badger.DB, o Options) (*store.ArchiveInfo, error) {
	blog := batch.StoreLog(db)
	anchored, err := blog.AnchoredSeq()
	if err != nil {
		return nil, err
	}
	list, err := archived.Load(db)
	if err != nil {
		return nil, err
	}
	first := uint64(1)
	if n := len(list); n > 0 {
		first = list[n-1].LastBatch + 1
	}
	var batches []*batch.Batch
	var signer device.DID // one archive holds the batches of one gateway key
	for seq := first; seq < anchored; seq++ {
		sb, err := blog.Get(seq)
		if err != nil {
			return nil, fmt.Errorf("gateway: archive: batch %d: %w", seq, err)
		}
		h, err := sb.ParsedHeader()
		if err != nil {
			return nil, fmt.Errorf("gateway: archive: batch %d: %w", seq, err)
		}
		if !h.To.Before(o.Before) || sb.Anchor == nil || (signer != "" && h.Gateway != signer) {
			break
		}
		signer = h.Gateway
		batches = append(batches, sb)
	}
	if len(batches) == 0 {
		return nil, fmt.Errorf("%w: no whole anchored batch from %d ends before %s (the newest anchored batch, %d, always stays)",
			ErrNothingToArchive, first, anchor.FormatTime(o.Before), anchored)
	}
	h0, _ := batches[0].ParsedHeader()
	lastB := batches[len(batches)-1]
	pub := o.GatewayPub
	if len(pub) == 0 {
		gr, err := o.Ledger.Gateway(ctx, h0.Gateway)
		if err != nil {
			return nil, fmt.Errorf("gateway: archive: gateway %s on the ledger: %w", h0.Gateway, err)
		}
		pub = gr.Pub
	}
	head := archiveHead{T: Format, V: 1, Gateway: h0.Gateway, GatewayPub: pub, Before: o.Before.UTC(),
		FirstGSeq: batches[0].First, LastGSeq: lastB.Last, FirstBatch: batches[0].Seq, LastBatch: lastB.Seq,
		Created: o.Now().UTC(), Prev: h0.Prev}

	// The devices of the archived records, from the device index.
	dids, err := store.ArchivedDevices(db, head.FirstGSeq, head.LastGSeq)
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
	var proofs []*evidence.AnchorProof
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
		err = store.RangeRecords(db, sb.First, sb.Last, func(r *store.Record) error {
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
	return &store.ArchiveInfo{Name: filepath.Base(o.Out), SM3: sum, Gateway: head.Gateway, Before: head.Before,
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
func fetchAnchorProofs(ctx context.Context, l Ledger, bs []*batch.Batch) ([]*evidence.AnchorProof, error) {
	out := make([]*evidence.AnchorProof, len(bs))
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

// Batch is one batch read from an archive file, with what its
// records' bundles need.
type Batch struct {
	Batch   *batch.Batch
	Header  *anchor.BatchHeader
	Anchor  *evidence.AnchorProof
	Records []*store.Record

	tree    *anchor.Tree // over Records, its root checked against Header's
	skip    bool         // a search passes over this batch: records counted, not decoded
	skipped uint64       // its record lines counted
}

// Summary is what reading a whole archive file found.
type Summary struct {
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
	h       hash.Hash // nil: a search, which neither hashes nor checks the end's SM3
	n       int       // line number
	head    archiveHead
	devices map[device.DID]*archiveDevice
}

func (a *archiveReader) bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s line %d: %s", ErrFile, a.path, a.n, fmt.Sprintf(format, args...))
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
	t, ok := lineKind(line)
	if !ok {
		var k struct {
			T string `json:"t"`
		}
		if err := json.Unmarshal(line, &k); err != nil {
			return "", nil, a.bad("%v", err)
		}
		t = k.T
	}
	if t != "end" && a.h != nil {
		a.h.Write(line)
	}
	return t, line, nil
}

// lineKind reads the kind of a line as the writer starts it, {"t":"kind",
// without decoding the line (a record line is ~2 kB); ok is false for any
// other shape, which the caller decodes. A line whose JSON says another
// kind further on is refused where it is decoded (checkKind), or, skipped
// in a search, cannot make a bundle that verifies.
func lineKind(line []byte) (string, bool) {
	const open = `{"t":"`
	if !bytes.HasPrefix(line, []byte(open)) {
		return "", false
	}
	rest := line[len(open):]
	end := bytes.IndexByte(rest, '"')
	if end <= 0 || end > 16 || len(rest) <= end+1 || (rest[end+1] != ',' && rest[end+1] != '}') {
		return "", false
	}
	for _, c := range rest[:end] {
		if c < 'a' || c > 'z' {
			return "", false
		}
	}
	return string(rest[:end]), true
}

// checkKind refuses a decoded line whose "t" is not the kind it was read as.
func (a *archiveReader) checkKind(read, decoded string) error {
	if read != decoded {
		return a.bad("line read as %q says %q", read, decoded)
	}
	return nil
}

// readArchive reads the archive at path, calling fn with each batch and
// its records; fn returning errStopArchive ends the read early (no end
// check). It checks the order of the lines, each batch's records against
// its header (gseqs and Merkle root) and the end line's counts and SM3.
func readArchive(path string, fn func(ar *archiveReader, b *Batch) error) (*Summary, error) {
	return searchArchive(path, nil, fn)
}

// searchArchive is readArchive, or with want a search: fn sees only the
// batches want accepts; the record lines of the others are counted, not
// decoded, and the file is not hashed (the end line's SM3 is not checked:
// `archive verify` does). A bundle found so is checked like any other by
// its verifier; a search only finds it without decoding the whole file.
func searchArchive(path string, want func(h *anchor.BatchHeader) bool, fn func(ar *archiveReader, b *Batch) error) (*Summary, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gateway: archive: %w", err)
	}
	defer f.Close()
	a := &archiveReader{path: path, r: bufio.NewReaderSize(f, 1<<20), devices: map[device.DID]*archiveDevice{}}
	if want == nil {
		a.h = sm3.New()
	}
	t, line, err := a.next()
	if err != nil {
		return nil, err
	}
	if t != Format {
		return nil, a.bad("not an edgeanchor archive (first line's t is %q, want %q)", t, Format)
	}
	if err := json.Unmarshal(line, &a.head); err != nil || a.head.V != 1 || a.head.FirstGSeq == 0 || a.head.LastGSeq < a.head.FirstGSeq {
		return nil, a.bad("bad head (v %d, gseq %d..%d): %v", a.head.V, a.head.FirstGSeq, a.head.LastGSeq, err)
	}
	sum := &Summary{Gateway: a.head.Gateway, FirstGSeq: a.head.FirstGSeq, LastGSeq: a.head.LastGSeq}
	var cur *Batch
	wantGSeq, wantBatch, prev := a.head.FirstGSeq, a.head.FirstBatch, a.head.Prev
	flush := func() error {
		if cur == nil {
			return nil
		}
		if cur.skip {
			if cur.skipped != cur.Header.Count {
				return a.bad("batch %d has %d records, its header says %d", cur.Batch.Seq, cur.skipped, cur.Header.Count)
			}
			sum.Batches++
			cur = nil
			return nil
		}
		if uint64(len(cur.Records)) != cur.Header.Count {
			return a.bad("batch %d has %d records, its header says %d", cur.Batch.Seq, len(cur.Records), cur.Header.Count)
		}
		leaves := make([]anchor.Hash, len(cur.Records))
		for i, r := range cur.Records {
			leaves[i] = anchor.LeafHash(r.Salt, r.Receipt)
		}
		tree, err := anchor.NewTree(leaves)
		if err != nil {
			return a.bad("batch %d: %v", cur.Batch.Seq, err)
		}
		if root := tree.Root(); root != cur.Header.Root {
			return a.bad("batch %d: records hash to %s, the header says %s", cur.Batch.Seq, root, cur.Header.Root)
		}
		cur.tree = tree
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
			if err := a.checkKind(t, d.T); err != nil {
				return nil, err
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
			if err := a.checkKind(t, bl.T); err != nil {
				return nil, err
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
			cur = &Batch{Batch: bl.Batch, Header: h, Anchor: bl.Anchor, skip: want != nil && !want(h)}
		case "record":
			if cur != nil && cur.skip {
				cur.skipped++
				sum.Records++
				continue
			}
			var rl archiveRecord
			if err := json.Unmarshal(line, &rl); err != nil || rl.Record == nil {
				return nil, a.bad("bad record line: %v", err)
			}
			if err := a.checkKind(t, rl.T); err != nil {
				return nil, err
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
			if err := a.checkKind(t, end.T); err != nil {
				return nil, err
			}
			if err := flush(); err != nil {
				return nil, err
			}
			sum.Devices = len(a.devices)
			if a.h != nil {
				copy(sum.SM3[:], a.h.Sum(nil))
			} else {
				sum.SM3 = end.SM3 // a search does not hash: not checked
			}
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
func warmProof(p *evidence.AnchorProof) {
	for _, v := range []*types.ValidatorSet{p.Validators, p.NextValidators} {
		if v != nil && len(v.Validators) > 0 {
			v.TotalVotingPower()
		}
	}
}

// errStopArchive ends readArchive early.
var errStopArchive = errors.New("stop")

// bundle builds the proof bundle of b's record i from the archive.
func (a *archiveReader) bundle(b *Batch, i int) (*evidence.Bundle, error) {
	r := b.Records[i]
	dev, ok := a.devices[r.DID]
	if !ok {
		return nil, a.bad("no device line for %s (record %d)", r.DID, r.GSeq)
	}
	path, err := b.tree.Path(uint64(i))
	if err != nil {
		return nil, err
	}
	return &evidence.Bundle{
		Type: evidence.BundleType, V: evidence.BundleVersion,
		Record:   evidence.BundleRecord{Gateway: a.head.Gateway, GSeq: r.GSeq, DID: r.DID, Seq: r.Seq},
		Envelope: r.Envelope,
		Device:   evidence.BundleDevice{Tx: dev.Tx, Proof: dev.Proof},
		Receipt:  evidence.BundleReceipt{Body: r.Receipt, Group: r.Group, Path: r.Path, Sig: r.ReceiptSig},
		Salt:     r.Salt,
		Merkle:   evidence.BundleMerkle{Index: uint64(i), Size: b.tree.Size(), Path: path},
		Batch:    evidence.BundleSigned{Body: b.Batch.Header, Sig: b.Batch.Sig},
		Gateway:  evidence.BundleGateway{DID: a.head.Gateway, Pub: a.head.GatewayPub},
		Anchor:   b.Anchor,
	}, nil
}

// Bundle returns the proof bundle of record gseq from the archive file at
// path. It reads the file up to that record's batch, decoding only that
// batch's records.
func Bundle(path string, gseq uint64) (*evidence.Bundle, error) {
	var out *evidence.Bundle
	_, err := searchArchive(path, func(h *anchor.BatchHeader) bool { return h.First <= gseq && gseq <= h.Last },
		func(a *archiveReader, b *Batch) error {
			var err error
			out, err = a.bundle(b, int(gseq-b.Batch.First))
			if err != nil {
				return err
			}
			return errStopArchive
		})
	if out != nil {
		return out, nil
	}
	if err == nil {
		return nil, fmt.Errorf("%w: gseq %d is not in archive %s", store.ErrNotFound, gseq, path)
	}
	return nil, err
}

// DeviceBundle returns the proof bundle of device did's record seq
// from the archive file at path: a first pass finds its gseq (decoding
// only the record lines that name did), a second is Bundle's.
func DeviceBundle(path string, did device.DID, seq uint64) (*evidence.Bundle, error) {
	gseq, err := findDeviceRecord(path, did, seq)
	if err != nil {
		return nil, err
	}
	if gseq == 0 {
		return nil, fmt.Errorf("%w: %s seq %d is not in archive %s", store.ErrNotFound, did, seq, path)
	}
	b, err := Bundle(path, gseq)
	if err != nil {
		return nil, err
	}
	if b.Record.DID != did || b.Record.Seq != seq {
		return nil, fmt.Errorf("%w: %s line for %s seq %d names gseq %d, which holds %s seq %d",
			ErrFile, path, did, seq, gseq, b.Record.DID, b.Record.Seq)
	}
	return b, nil
}

// findDeviceRecord returns the gseq of did's record seq in the archive at
// path (0: none).
func findDeviceRecord(path string, did device.DID, seq uint64) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("gateway: archive: %w", err)
	}
	defer f.Close()
	a := &archiveReader{path: path, r: bufio.NewReaderSize(f, 1<<20)}
	name, err := json.Marshal(did)
	if err != nil {
		return 0, err
	}
	needle := append([]byte(`"did":`), name...)
	for {
		t, line, err := a.next()
		if err != nil || t == "" || t == "end" {
			return 0, err
		}
		if t != "record" || !bytes.Contains(line, needle) {
			continue
		}
		var rl archiveRecord
		if err := json.Unmarshal(line, &rl); err != nil || rl.Record == nil {
			return 0, a.bad("bad record line: %v", err)
		}
		if rl.Record.DID == did && rl.Record.Seq == seq {
			return rl.Record.GSeq, nil
		}
	}
}

// Verify reads the whole archive file at path and verifies every
// record's proof bundle, built from the file alone, against trust, with
// workers in parallel (0: GOMAXPROCS). The first failure is returned,
// naming the record.
func Verify(path string, trust *evidence.Trust, workers int) (*Summary, error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	type job struct {
		gseq uint64
		b    *evidence.Bundle
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
	sum, err := readArchive(path, func(a *archiveReader, b *Batch) error {
		for i := range b.Records {
			bu, err := a.bundle(b, i)
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
