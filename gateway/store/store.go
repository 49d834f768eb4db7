package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/store/archived"
	"github.com/edgeanchor/edgeanchor/gateway/store/badgerfile"
	"github.com/edgeanchor/edgeanchor/gateway/store/diskfloor"
	"github.com/edgeanchor/edgeanchor/gateway/store/seqstate"
)

// Badger key layout. Every key starts with a one-letter prefix and a slash;
// integers are 8-byte big-endian so that keys sort by number.
//
//	r/{gseq}          -> the record, binary (encodeRecord: format byte,
//	                     then varints and length-prefixed fields)
//	d/{did}/{seq}     -> gseq (index by device and device sequence)
//	l/{did}           -> last accepted device seq, then its open gaps
//	                     (seqstate.go, encodeSeqState)
//	s/acked           -> acknowledged mark: every gseq at or below it was
//	                     acknowledged (written with each transaction, and
//	                     at Close; see repairTail)
//
// Prefix b/ belongs to the batch log (package gateway/batch: b/h/, b/l/,
// b/m/anchored); the store hears of it only through Options.Claims;
// prefix a/ to retention (package gateway/store/archived: a/archives,
// a/pending): records at or below the last archive's last gseq were moved
// to archive files;
// other prefixes are free for new owners who document them here.
const (
	// valueThreshold: record values (~1 KiB and up) go to Badger's value
	// log, written once; the LSM tree holds keys, indexes and pointers, so
	// compactions stay cheap.
	valueThreshold = 512

	prefixRecord  = "r/"
	prefixDevSeq  = "d/"
	prefixLastSeq = "l/"
	ackedKey      = "s/acked"
)

// Store errors.
var (
	// ErrReplay: the device sequence number is not above the last one
	// accepted from that device, nor in one of its open gaps (a late fill,
	// seqstate.go). The device must not resend it.
	ErrReplay = errors.New("gateway: replayed or out-of-order sequence")
	// ErrFailed: a write to disk failed; the store refuses every
	// further write until the gateway is restarted (gseq stays contiguous).
	ErrFailed = errors.New("gateway: record store failed")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("gateway: record store closed")
	// ErrNotFound: no record with that key.
	ErrNotFound = errors.New("gateway: record not found")
)

// Record is one stored, verified device message.
type Record struct {
	GSeq     uint64     `json:"gseq"`
	DID      device.DID `json:"did"`
	Seq      uint64     `json:"seq"`
	Kind     string     `json:"kind"`
	Recv     time.Time  `json:"recv"`
	Gap      uint64     `json:"gap,omitempty"` // device seqs skipped just before this one
	Envelope []byte     `json:"env"`           // exactly as received
	Salt     []byte     `json:"salt"`          // 16 random bytes, leaf salt
	Receipt  []byte     `json:"receipt"`       // receipt body bytes
	// Group is the statement of the record's commit group and Path the
	// inclusion path of Receipt in the group's tree (docs/internals.md,
	// "Records, receipts and leaves"); records of one group share Group
	// and ReceiptSig. Records stored before group signing have neither.
	Group      []byte        `json:"group,omitempty"`
	Path       []anchor.Hash `json:"path,omitempty"`
	ReceiptSig []byte        `json:"receipt_sig"` // gateway signature over Group (or Receipt)
}

// LeafData is the Merkle leaf data of the record: salt ‖ receipt body.
func (r *Record) LeafData() []byte {
	out := make([]byte, 0, len(r.Salt)+len(r.Receipt))
	return append(append(out, r.Salt...), r.Receipt...)
}

// ReceiptMessage returns the JSON published on the device's receipt topic.
func (r *Record) ReceiptMessage() []byte {
	b, _ := r.Message().MarshalJSON()
	return b
}

// Message is the receipt message of r before its batch is anchored
// (ReceiptMessage encodes it).
func (r *Record) Message() ReceiptMessage {
	return ReceiptMessage{Receipt: r.Receipt, Group: r.Group, Path: r.Path, Sig: r.ReceiptSig}
}

// Pending is a verified message waiting to be stored.
type Pending struct {
	DID      device.DID
	Seq      uint64
	Kind     string
	Envelope []byte
	EnvHash  anchor.Hash // SM3 of Envelope
}

// Options configure Open.
type Options struct {
	Config  Config
	Signer  device.Signer // signs receipts
	Logger  *slog.Logger
	Metrics *Metrics // nil: not exported
	// MaxPending bounds Appends waiting for the writer (default 4096).
	MaxPending int
	// Claims is what the batch log holds of the records (batch.Claims);
	// nil: nothing outside the store refers to a gseq.
	Claims RecordClaims
}

// RecordClaims is another owner's hold on the records of a store: the
// batch log, which keeps its own key prefix in the store's database
// (DB). The store asks it at open and knows nothing else of it.
type RecordClaims interface {
	// ClaimedThrough returns the highest gseq the owner refers to (0:
	// none). Records at or below it are never deleted as a failed write's
	// tail, and new records continue above it: a claimed gseq is never
	// reused, even after a repair lost the records themselves.
	ClaimedThrough(db *badger.DB) (uint64, error)
	// CheckTail reads the owner's newest writes, which a cut value log
	// loses first; on error, what names the unreadable value.
	CheckTail(db *badger.DB) (what string, err error)
}

type appendReq struct {
	p    Pending
	done chan appendRes
	rec  *Record
	err  error
	// dup: p is a resend of the stored (or in-flight) record rec; nothing
	// is written. orig is the in-flight original, whose outcome is dup's.
	dup  bool
	orig *appendReq
	// seqState: the device's sequence state after this record (the value
	// of l/{did} written with it); fill: the record was a late fill;
	// gapsDropped: open gaps closed for good by the bound.
	seqState    []byte
	fill        bool
	gapsDropped int
}

type appendRes struct {
	rec *Record
	dup bool
	err error
}

// devSeq names one device message.
type devSeq struct {
	did device.DID
	seq uint64
}

// Store is the durable record store. Appends are group-committed: one writer
// takes pending records from a bounded queue, checks each device's sequence,
// assigns gseq, signs the group's receipts with one signature, writes them
// with synced Badger transactions, and only then answers each caller.
type Store struct {
	db      *badger.DB
	log     *slog.Logger
	signer  device.Signer
	gw      device.DID
	cfg     Config
	metrics *Metrics
	disk    *diskfloor.Guard
	claims  RecordClaims // nil: none
	// archives: the archives taken from the store (archive.go), read at
	// open; records at or below the last one's LastGSeq are archived.
	archives archived.List

	in      chan *appendReq
	prepped chan []*appendReq
	acks    chan *pendingGroup

	failed  atomic.Pointer[error]
	lastG   atomic.Uint64 // last committed gseq
	nextG   uint64        // next gseq to assign (writer only)
	lastRcv time.Time     // writer only
	// seqs: sequence state per device (last seq assigned, open gaps); the
	// writer changes it under seqMu (Lock) and reads it freely; others
	// read it under RLock.
	seqMu sync.RWMutex
	seqs  map[device.DID]seqstate.State
	// flight: records prepared but not yet answered, for resends that
	// arrive before their original is committed.
	flightMu sync.Mutex
	flight   map[devSeq]*appendReq

	changedMu sync.Mutex
	changed   chan struct{}

	closeOnce sync.Once
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closed    atomic.Bool
	closeMu   sync.RWMutex // Append holds R while queueing; Close holds W
}

// Open opens (or creates) the Badger store in dir and starts its writer.
func Open(dir string, o Options) (*Store, error) {
	if o.Signer == nil {
		return nil, errors.New("gateway: store needs a receipt signer")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Config.MemTableMB == 0 {
		o.Config = DefaultConfig()
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 4096
	}
	if o.Config.MaxOpenGaps <= 0 {
		o.Config.MaxOpenGaps = DefaultMaxOpenGaps
	}
	c := o.Config
	opts := badgerOptions(dir, c, o.Logger)
	// A damaged table would panic inside Badger's own goroutines: check
	// them first, and name the file.
	bad, err := checkTables(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("gateway: open record store %s: %w", dir, err)
	}
	if len(bad) > 0 {
		return nil, damagedTablesError(dir, bad)
	}
	vlogsBefore := badgerfile.VlogSizes(dir)
	db, err := openBadger(opts)
	if err != nil {
		if errors.Is(err, ErrDamaged) {
			return nil, err
		}
		return nil, fmt.Errorf("gateway: open record store %s: %w", dir, err)
	}
	s := &Store{
		db: db, log: o.Logger, signer: o.Signer, gw: o.Signer.DID(), cfg: c, metrics: o.Metrics, claims: o.Claims,
		in:      make(chan *appendReq, o.MaxPending),
		prepped: make(chan []*appendReq, 1),
		acks:    make(chan *pendingGroup, commitDepth-1),
		seqs:    map[device.DID]seqstate.State{},
		flight:  map[devSeq]*appendReq{},
		changed: make(chan struct{}),
	}
	// An archive's deletion cut short by a crash is finished first.
	if err := FinishArchive(db, o.Claims, o.Logger, nil); err != nil {
		_ = db.Close()
		return nil, err
	}
	if s.archives, err = archived.Load(db); err != nil {
		_ = db.Close()
		return nil, err
	}
	var lowGauge interface{ Set(float64) }
	if o.Metrics != nil {
		lowGauge = o.Metrics.DiskLow
	}
	s.disk = diskfloor.New(dir, int64(c.MinFreeMB)<<20, o.Logger, lowGauge)
	last, err := s.repairTail()
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	s.lastG.Store(last)
	s.nextG = last + 1
	if err := s.checkTail(dir, badgerfile.CutVlogs(vlogsBefore, badgerfile.VlogSizes(dir))); err != nil {
		_ = db.Close()
		return nil, err
	}
	if last > 0 {
		r, err := s.Get(last)
		if err != nil {
			_ = db.Close()
			return nil, err
		}
		s.lastRcv = r.Recv
	}
	// After a repair that lost records already claimed (batched), new
	// records continue after the claimed ones: a gseq is never reused.
	if through, err := s.claimedThrough(); err == nil && through > last {
		s.lastG.Store(through)
		s.nextG = through + 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(4)
	go func() { defer s.wg.Done(); s.disk.Run(ctx) }()
	go s.prepLoop(ctx)
	go s.commitLoop(ctx)
	go s.ackLoop()
	return s, nil
}

// badgerOptions are the Badger options of a record store in dir.
func badgerOptions(dir string, c Config, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithDetectConflicts(false).
		WithMemTableSize(int64(c.MemTableMB) << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(3).
		WithNumLevelZeroTablesStall(8).
		WithValueLogFileSize(int64(c.ValueLogFileMB) << 20).
		WithValueThreshold(valueThreshold).
		WithBlockCacheSize(int64(c.BlockCacheMB) << 20).
		WithIndexCacheSize(int64(c.IndexCacheMB) << 20).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithMetricsEnabled(false).
		WithLogger(badgerLogger{log.With("component", "badger")})
}

// DB exposes the Badger database for the batcher and anchorer, which keep
// their own key prefixes (see the key layout above). Writes through it are
// synced (SyncWrites).
func (s *Store) DB() *badger.DB { return s.db }

// LastGSeq returns the highest gseq durably stored.
func (s *Store) LastGSeq() uint64 { return s.lastG.Load() }

// Changed returns a channel closed at the next commit of new records.
func (s *Store) Changed() <-chan struct{} {
	s.changedMu.Lock()
	defer s.changedMu.Unlock()
	return s.changed
}

// Healthy returns nil while the store accepts writes.
func (s *Store) Healthy() error {
	if s.closed.Load() {
		return ErrClosed
	}
	if e := s.failed.Load(); e != nil {
		return *e
	}
	return s.disk.Err()
}

// SetMinFree changes the free-space floor below which the store refuses
// writes (bytes; 0 turns it off) and measures the disk at once.
func (s *Store) SetMinFree(bytes int64) {
	s.disk.SetFloor(bytes)
}

// Append stores p durably and returns the stored record with its gseq and
// receipt. It returns only after the synced write; a replayed or
// out-of-order p.Seq gets ErrReplay and stores nothing, except a resend:
// an envelope byte-identical to the one stored (or being stored) for that
// device and seq returns the stored record, once it is durable, and
// stores nothing (IsDuplicate tells it apart).
func (s *Store) Append(ctx context.Context, p Pending) (*Record, error) {
	wait, err := s.Enqueue(ctx, p)
	if err != nil {
		return nil, err
	}
	rec, _, err := wait()
	return rec, err
}

// Enqueue queues p for the writer and returns a function that waits for
// its outcome (what Append returns). Records enqueued one after the other
// by one goroutine are sequenced in that order, so a caller may keep
// several of a device's records in flight and still have them checked in
// order. The wait function must be called exactly once; its dup result
// is true when p was a resend of a stored record (see Append).
func (s *Store) Enqueue(ctx context.Context, p Pending) (func() (rec *Record, dup bool, err error), error) {
	if err := s.Healthy(); err != nil {
		return nil, err
	}
	req := &appendReq{p: p, done: make(chan appendRes, 1)}
	s.closeMu.RLock()
	if s.closed.Load() {
		s.closeMu.RUnlock()
		return nil, ErrClosed
	}
	select {
	case s.in <- req:
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return nil, ctx.Err()
	}
	s.closeMu.RUnlock()
	// Once queued, the request is always answered (Close drains the queue),
	// so the caller must wait for it even if ctx ends: it must not ack or
	// refuse a message whose fate is unknown.
	return func() (*Record, bool, error) {
		res := <-req.done
		return res.rec, res.dup, res.err
	}, nil
}

// StoredDuplicate returns the stored record of did and seq if its
// envelope is byte-identical to env (a resend whose PUBACK was lost), else
// nil. It reads the database only when seq is not above the device's last
// seq (or that is not cached yet), so a new message costs a map lookup.
// A resend of a record not yet committed is found by the writer instead.
func (s *Store) StoredDuplicate(did device.DID, seq uint64, env []byte) *Record {
	s.seqMu.RLock()
	st, ok := s.seqs[did]
	s.seqMu.RUnlock()
	if ok && seq > st.Last {
		return nil
	}
	return s.storedCopy(did, seq, env)
}

// storedCopy returns the durably stored record of did and seq if its
// envelope is byte-identical to env, else nil.
func (s *Store) storedCopy(did device.DID, seq uint64, env []byte) *Record {
	rec, err := s.deviceRecord(did, seq)
	if err != nil || !s.durable(rec) || !bytes.Equal(rec.Envelope, env) {
		return nil
	}
	return rec
}

// durable reports whether rec's write is known to be synced: Badger makes
// a record readable before its WAL is synced, and a resend must not be
// acknowledged before its original could be (the writer answers a resend
// of a record still in flight after its original).
func (s *Store) durable(rec *Record) bool { return rec.GSeq <= s.lastG.Load() }

// deviceRecord returns the stored record of did and seq, or ErrNotFound.
func (s *Store) deviceRecord(did device.DID, seq uint64) (*Record, error) {
	var rec *Record
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(devSeqKey(did, seq))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%w: %s seq %d", ErrNotFound, did, seq)
		}
		if err != nil {
			return err
		}
		var g uint64
		if err := it.Value(func(b []byte) error {
			if len(b) != 8 {
				return errors.New("bad index value")
			}
			g = binary.BigEndian.Uint64(b)
			return nil
		}); err != nil {
			return err
		}
		rec, err = getRecord(txn, g)
		return err
	})
	return rec, err
}

// duplicateOf returns the in-flight request or the stored record that p
// resends (same device, seq and envelope bytes); writer only.
func (s *Store) duplicateOf(p *Pending) (*appendReq, *Record) {
	s.flightMu.Lock()
	orig := s.flight[devSeq{p.DID, p.Seq}]
	s.flightMu.Unlock()
	if orig != nil {
		if bytes.Equal(orig.p.Envelope, p.Envelope) {
			return orig, orig.rec
		}
		return nil, nil
	}
	// Not in flight: committed and answered (ackLoop moves lastG before it
	// forgets a request), or lost with a failed write.
	return nil, s.storedCopy(p.DID, p.Seq, p.Envelope)
}

// prepLoop gathers queued appends into groups, checks sequences, assigns
// gseq and signs receipts, then hands each group to commitLoop. It runs
// ahead of the commit by at most one group.
func (s *Store) prepLoop(ctx context.Context) {
	defer s.wg.Done()
	defer close(s.prepped)
	// A group is bounded by count and by envelope bytes (memory); writeAsync
	// splits it into as many Badger transactions as Badger's limits need.
	const maxBytes = 4 << 20
	for {
		var first *appendReq
		select {
		case <-ctx.Done():
			return
		case first = <-s.in:
		}
		group := []*appendReq{first}
		size := int64(len(first.p.Envelope))
	fill:
		for len(group) < s.cfg.MaxGroupRecords && size < maxBytes {
			select {
			case r := <-s.in:
				group = append(group, r)
				size += int64(len(r.p.Envelope))
			default:
				break fill
			}
		}
		if len(group) > 1 {
			group = s.linger(ctx, group, size, maxBytes)
		}
		s.prepare(group)
		select {
		case s.prepped <- group:
		case <-ctx.Done():
			for _, r := range group {
				r.done <- appendRes{err: ErrClosed}
			}
			return
		}
	}
}

// linger adds to a group the records that arrive within the configured
// GroupLinger, up to the group's bounds. prepLoop calls it only when
// records arrived together: a busy store trades a few milliseconds of
// latency for fuller groups, each of which costs the same fixed CPU; a lone
// record (an idle store) is committed at once.
func (s *Store) linger(ctx context.Context, group []*appendReq, size, maxBytes int64) []*appendReq {
	if s.cfg.GroupLinger <= 0 {
		return group
	}
	t := time.NewTimer(s.cfg.GroupLinger)
	defer t.Stop()
	for len(group) < s.cfg.MaxGroupRecords && size < maxBytes {
		select {
		case r := <-s.in:
			group = append(group, r)
			size += int64(len(r.p.Envelope))
		case <-t.C:
			return group
		case <-ctx.Done():
			return group
		}
	}
	return group
}

func (s *Store) prepare(group []*appendReq) {
	// Below the free-space floor nothing is assigned or written: the
	// whole group is refused (ErrDiskFull) and the devices send again.
	var est int64
	for _, r := range group {
		est += int64(len(r.p.Envelope)) + 1024 // record value, keys, receipt
	}
	s.disk.Wrote(est)
	if err := s.disk.Err(); err != nil {
		for _, r := range group {
			r.err = err
		}
		return
	}
	var toSign []*appendReq // the new records, in gseq order
	// One getrandom call for the whole group's salts.
	salts := make([]byte, 16*len(group))
	if _, err := rand.Read(salts); err != nil {
		for _, r := range group {
			r.err = fmt.Errorf("%w: salt: %v", ErrFailed, err)
		}
		return
	}
	for i, r := range group {
		if s.failed.Load() != nil {
			r.err = ErrFailed
			continue
		}
		st, err := s.seqStateLocked(r.p.DID)
		if err != nil {
			r.err = err
			continue
		}
		last := st.Last
		var next seqstate.State
		var dropped []seqstate.Range
		var gap uint64 // device seqs skipped just before this one
		if r.p.Seq <= last {
			if orig, rec := s.duplicateOf(&r.p); rec != nil {
				r.dup, r.orig, r.rec = true, orig, rec
				continue
			}
			if !st.InGap(r.p.Seq) {
				r.err = fmt.Errorf("%w: seq %d, last accepted %d, not in an open gap", ErrReplay, r.p.Seq, last)
				continue
			}
			// A late fill: stored like a new record, without a gap of
			// its own.
			next, dropped = st.Fill(r.p.Seq, s.cfg.MaxOpenGaps)
			r.fill = true
		} else {
			next, dropped = st.Advance(r.p.Seq, s.cfg.MaxOpenGaps)
			gap = r.p.Seq - last - 1
		}
		now := time.Now().UTC()
		if now.Before(s.lastRcv) {
			now = s.lastRcv
		}
		s.lastRcv = now
		rec := &Record{
			GSeq: s.nextG, DID: r.p.DID, Seq: r.p.Seq, Kind: r.p.Kind, Recv: now,
			Gap: gap, Envelope: r.p.Envelope, Salt: salts[16*i : 16*i+16 : 16*i+16],
		}
		rec.Receipt, err = encodeReceipt(s.gw, rec.GSeq, rec.DID, rec.Seq, rec.Recv, r.p.EnvHash)
		if err != nil {
			r.err = fmt.Errorf("%w: receipt: %v", ErrFailed, err)
			continue
		}
		s.nextG++
		s.seqMu.Lock()
		s.seqs[r.p.DID] = next
		s.seqMu.Unlock()
		r.seqState, r.gapsDropped = next.Encode(), len(dropped)
		for _, g := range dropped {
			s.log.Warn("open sequence gap closed for good: more open gaps than store.max_open_gaps",
				"did", r.p.DID, "from", g.From, "to", g.To, "max_open_gaps", s.cfg.MaxOpenGaps)
		}
		r.rec = rec
		s.flightMu.Lock()
		s.flight[devSeq{r.p.DID, r.p.Seq}] = r
		s.flightMu.Unlock()
		toSign = append(toSign, r)
	}
	s.signGroup(toSign)
}

// signGroup signs the receipts of recs (the group's new records, in gseq
// order, contiguous) with one signature: the tree over their receipt
// bodies, the ReceiptGroup statement naming its root, one SM2 signature
// over the statement; each record gets the statement, its path and the
// signature.
func (s *Store) signGroup(recs []*appendReq) {
	if len(recs) == 0 {
		return
	}
	bodies := make([][]byte, len(recs))
	for i, r := range recs {
		bodies[i] = r.rec.Receipt
	}
	root, paths := anchor.ReceiptGroupTree(bodies)
	group := anchor.NewReceiptGroup(s.gw, recs[0].rec.GSeq, uint64(len(recs)), root)
	sig, err := s.signer.Sign(group)
	if err != nil {
		// The group's gseqs are assigned: storing the records after them
		// would leave a hole. The store fails rather than store a record
		// without its receipt; a restart assigns from the last stored gseq.
		err = fmt.Errorf("%w: sign receipts: %v", ErrFailed, err)
		s.fail("receipt signing failed; refusing writes until restart", err)
		for _, r := range recs {
			r.err = err
		}
		return
	}
	for i, r := range recs {
		r.rec.Group, r.rec.Path, r.rec.ReceiptSig = group, paths[i], sig
	}
}

// fail puts the store in its failed state (every further write refused
// with err until restart), logging msg the first time only.
func (s *Store) fail(msg string, err error) {
	if s.failed.CompareAndSwap(nil, &err) {
		s.log.Error(msg, "error", err)
	}
}

// seqStateLocked returns the sequence state of did (the last sequence
// accepted or assigned, the open gaps); writer only.
func (s *Store) seqStateLocked(did device.DID) (seqstate.State, error) {
	if v, ok := s.seqs[did]; ok {
		return v, nil
	}
	v, err := s.readSeqState(did)
	if err != nil {
		return seqstate.State{}, err
	}
	s.seqMu.Lock()
	s.seqs[did] = v
	s.seqMu.Unlock()
	return v, nil
}

func (s *Store) readLastSeq(did device.DID) (uint64, error) {
	st, err := s.readSeqState(did)
	return st.Last, err
}

// OpenGaps returns the device's open gaps as stored (the seqs a late fill
// may still store), lowest first, each as [from, to].
func (s *Store) OpenGaps(did device.DID) ([][2]uint64, error) {
	st, err := s.readSeqState(did)
	if err != nil {
		return nil, err
	}
	out := make([][2]uint64, len(st.Gaps))
	for i, g := range st.Gaps {
		out[i] = [2]uint64{g.From, g.To}
	}
	return out, nil
}

func (s *Store) readSeqState(did device.DID) (seqstate.State, error) {
	var v seqstate.State
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(lastSeqKey(did))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return it.Value(func(b []byte) error {
			var err error
			v, err = seqstate.Decode(b)
			return err
		})
	})
	if err != nil {
		return seqstate.State{}, fmt.Errorf("%w: read last seq of %s: %v", ErrFailed, did, err)
	}
	return v, nil
}

// LastSeq returns the last device sequence number durably stored for did.
func (s *Store) LastSeq(did device.DID) (uint64, error) { return s.readLastSeq(did) }

// commitDepth bounds the groups submitted to Badger whose outcome is not
// yet known. Badger merges queued transactions into one write and one
// fsync, so keeping two groups in flight halves the fsyncs per record.
const commitDepth = 2

// pendingGroup is a group submitted to Badger, waiting for its fsync.
type pendingGroup struct {
	group   []*appendReq
	ok      []*appendReq
	results chan error // one per submitted transaction
	ntxn    int
	err     error // error while building the transactions
	start   time.Time
}

// commitLoop submits prepared groups to Badger in gseq order without
// waiting for their fsync; ackLoop answers them in the same order.
func (s *Store) commitLoop(ctx context.Context) {
	defer s.wg.Done()
	defer close(s.acks)
	for group := range s.prepped {
		s.acks <- s.submit(group)
	}
}

func (s *Store) submit(group []*appendReq) *pendingGroup {
	pg := &pendingGroup{group: group, start: time.Now()}
	for _, r := range group {
		if r.err == nil && r.rec != nil && !r.dup {
			pg.ok = append(pg.ok, r)
		}
	}
	if len(pg.ok) == 0 {
		return pg
	}
	if s.failed.Load() != nil {
		pg.err = ErrFailed
		return pg
	}
	pg.results = make(chan error, len(pg.ok)+1)
	pg.ntxn, pg.err = s.writeAsync(pg.ok, pg.results)
	return pg
}

// ackLoop waits for each group's fsync, in order, and only then answers its
// callers. A group is never acknowledged after an earlier one failed, so an
// acknowledged record never has a hole below it.
func (s *Store) ackLoop() {
	defer s.wg.Done()
	for pg := range s.acks {
		err := pg.err
		for i := 0; i < pg.ntxn; i++ {
			if e := <-pg.results; e != nil && err == nil {
				err = e
			}
		}
		if len(pg.ok) > 0 {
			if err == nil && s.failed.Load() != nil {
				err = ErrFailed
			}
			if s.metrics != nil {
				s.metrics.WriteSeconds.Observe(time.Since(pg.start).Seconds())
				s.metrics.GroupRecords.Observe(float64(len(pg.ok)))
			}
			if err != nil {
				if !errors.Is(err, ErrFailed) {
					err = fmt.Errorf("%w: %v", ErrFailed, err)
				}
				s.fail("record store write failed; refusing writes until restart", err)
				for _, r := range pg.ok {
					r.err = err
				}
			} else {
				s.lastG.Store(pg.ok[len(pg.ok)-1].rec.GSeq)
				if s.metrics != nil {
					for _, r := range pg.ok {
						if r.rec.Gap > 0 {
							s.metrics.SequenceGaps.Inc()
						}
						if r.fill {
							s.metrics.SequenceFills.Inc()
						}
						s.metrics.GapsDropped.Add(float64(r.gapsDropped))
					}
				}
				s.changedMu.Lock()
				close(s.changed)
				s.changed = make(chan struct{})
				s.changedMu.Unlock()
			}
		}
		for _, r := range pg.group {
			if r.dup {
				// The original's group is answered before (or with) this
				// one: its outcome is final.
				if r.orig != nil && r.orig.err != nil {
					r.err = r.orig.err
				}
			}
			if r.err != nil {
				r.done <- appendRes{err: r.err}
			} else {
				r.done <- appendRes{rec: r.rec, dup: r.dup}
			}
		}
		s.flightMu.Lock()
		for _, r := range pg.group {
			if r.rec != nil && !r.dup {
				if k := (devSeq{r.p.DID, r.p.Seq}); s.flight[k] == r {
					delete(s.flight, k)
				}
			}
		}
		s.flightMu.Unlock()
	}
}

// writeAsync submits the records in as few Badger transactions as Badger
// allows, in gseq order, each result going to results; it returns how many
// transactions were submitted. Each record's keys always share one
// transaction and Badger writes its queue in order, so a crash leaves a
// gap-free prefix (a failed write is repaired at the next open, see
// repairTail).
func (s *Store) writeAsync(recs []*appendReq, results chan<- error) (int, error) {
	const ackedSize = int64(len(ackedKey)) + 8 + 32
	limit := s.db.MaxBatchSize() * 8 / 10
	maxCount := s.db.MaxBatchCount() * 8 / 10
	// Every transaction carries the acknowledged mark as it stands now:
	// no group at or below it can still fail.
	acked := u64(s.lastG.Load())
	txn := s.db.NewTransaction(true)
	n := 0
	send := func() {
		n++
		if err := txn.Set([]byte(ackedKey), acked); err != nil {
			txn.Discard()
			results <- err
			return
		}
		txn.CommitWith(func(err error) { results <- err })
	}
	var size, count int64
	for _, r := range recs {
		val := encodeRecord(r.rec)
		k1, k2, k3 := recordKey(r.rec.GSeq), devSeqKey(r.rec.DID, r.rec.Seq), lastSeqKey(r.rec.DID)
		g, sq := u64(r.rec.GSeq), r.seqState
		if sq == nil { // not prepared by prepare (tests): no open gap
			sq = u64(r.rec.Seq)
		}
		// Badger's own estimate: key + value (or a 12-byte pointer for
		// values that go to the value log) + meta, per entry.
		vsize := int64(len(val))
		if vsize >= valueThreshold {
			vsize = 12
		}
		need := int64(len(k1)+len(k2)+len(k3)+len(g)+len(sq)) + vsize + 3*32
		if size > 0 && (size+need+ackedSize > limit || count+4 > maxCount) {
			send()
			txn = s.db.NewTransaction(true)
			size, count = 0, 0
		}
		size += need
		count += 3
		for _, kv := range [][2][]byte{{k1, val}, {k2, g}, {k3, sq}} {
			if err := txn.Set(kv[0], kv[1]); err != nil {
				txn.Discard()
				return n, err
			}
		}
	}
	send()
	return n, nil
}

// inflightRecords bounds the records that can have been submitted to
// Badger without their fsync being known: the group ackLoop waits for, the
// commitDepth-1 queued in s.acks, and the one commitLoop holds while it
// blocks on s.acks.
func (s *Store) inflightRecords() uint64 {
	return uint64(commitDepth+1) * uint64(s.cfg.MaxGroupRecords)
}

// repairTail looks at the newest records for a hole in gseq. A failed write
// followed by a successful one (Badger goes on with the transactions
// queued after a failed one) leaves such a hole, and the records above it
// were never acknowledged: ackLoop never answers past a failure. Those
// records, and only those, are deleted, and only when every condition
// below holds; any other hole (a record deleted by hand or by an attacker)
// keeps every record, is logged as an error and counted, and is left to
// the audit. The conditions, with cut the top of the contiguous prefix
// 1..cut:
//
//   - every record above cut lies within one in-flight window of it
//     (inflightRecords);
//   - gseq 1..cut are all present (the only hole is in that tail);
//   - no stored batch covers a record above cut (a batched record was
//     committed, hence acknowledged);
//   - cut is at least the acknowledged mark (ackedKey) that every write
//     carries: records at or below it were acknowledged (no mark: keep).
func (s *Store) repairTail() (uint64, error) {
	inflight := s.inflightRecords()
	var keys []uint64 // newest first
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Reverse: true, Prefix: []byte(prefixRecord)})
		defer it.Close()
		for it.Seek(recordKey(^uint64(0))); it.Valid() && uint64(len(keys)) <= inflight; it.Next() {
			keys = append(keys, binary.BigEndian.Uint64(it.Item().Key()[len(prefixRecord):]))
		}
		return nil
	})
	if err != nil || len(keys) == 0 {
		return 0, err
	}
	highest := keys[0]
	cut, hole := highest, false
	for i := 0; i+1 < len(keys); i++ {
		if keys[i+1] != keys[i]-1 {
			cut, hole = keys[i+1], true
		}
	}
	if a := s.ArchivedThrough(); uint64(len(keys)) <= inflight && keys[len(keys)-1] != a+1 {
		// Every record was read and the first one (1, or the one after
		// the archived records) is missing.
		cut, hole = a, true
	}
	if !hole {
		return highest, nil
	}
	why, err := s.unsafeRepair(cut, highest, inflight)
	if err != nil {
		return 0, fmt.Errorf("gateway: repair record store: %w", err)
	}
	if why != "" {
		s.log.Error("record store: gseq hole that no failed write can explain; keeping every record (run the audit)",
			"below", cut+1, "highest", highest, "reason", why)
		if s.metrics != nil {
			s.metrics.HolesKept.Inc()
		}
		return highest, nil
	}
	deleted, err := s.deleteAbove(cut, keys)
	if err != nil {
		return 0, fmt.Errorf("gateway: repair record store: %w", err)
	}
	s.log.Warn("record store: gseq hole after a failed write; deleted the unacknowledged records above it",
		"keep_through", cut, "highest", highest, "deleted", deleted)
	if s.metrics != nil {
		s.metrics.RepairDeleted.Add(float64(deleted))
	}
	return cut, nil
}

// unsafeRepair returns why deleting the records above cut could delete an
// acknowledged record, or "" when it cannot (see repairTail).
func (s *Store) unsafeRepair(cut, highest, inflight uint64) (string, error) {
	if highest-cut > inflight {
		return "records above the hole exceed one in-flight window", nil
	}
	var present uint64
	var acked uint64
	marked := false
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixRecord)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if binary.BigEndian.Uint64(it.Item().Key()[len(prefixRecord):]) > cut {
				break
			}
			present++
		}
		item, err := txn.Get([]byte(ackedKey))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		marked = true
		return item.Value(func(b []byte) error {
			if len(b) != 8 {
				return fmt.Errorf("bad %s value of %d bytes", ackedKey, len(b))
			}
			acked = binary.BigEndian.Uint64(b)
			return nil
		})
	})
	if err != nil {
		return "", err
	}
	if present != cut-min(cut, s.ArchivedThrough()) {
		return "more than one hole", nil
	}
	if !marked {
		// Every write carries the mark: without it nothing tells which
		// records were acknowledged.
		return "no acknowledged mark", nil
	}
	if acked > cut {
		return "records above the hole were acknowledged", nil
	}
	through, err := s.claimedThrough()
	switch {
	case err != nil:
		return "", err
	case through > cut:
		return "records above the hole are batched", nil
	}
	return "", nil
}

// claimedThrough is s.claims.ClaimedThrough, 0 without claims.
func (s *Store) claimedThrough() (uint64, error) {
	if s.claims == nil {
		return 0, nil
	}
	return s.claims.ClaimedThrough(s.db)
}

// deleteAbove deletes the records of keys above cut and recomputes the
// touched devices' sequence states; it returns how many it deleted.
func (s *Store) deleteAbove(cut uint64, keys []uint64) (int, error) {
	touched := map[device.DID]bool{}
	n := 0
	err := s.db.Update(func(txn *badger.Txn) error {
		for _, g := range keys {
			if g <= cut {
				continue
			}
			rec, err := getRecord(txn, g)
			if err != nil {
				return err
			}
			touched[rec.DID] = true
			if err := txn.Delete(recordKey(g)); err != nil {
				return err
			}
			if err := txn.Delete(devSeqKey(rec.DID, rec.Seq)); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for did := range touched {
		if err := s.db.Update(func(txn *badger.Txn) error {
			return rebuildSeqState(txn, did, s.cfg.MaxOpenGaps)
		}); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// Get returns the record with gseq.
func (s *Store) Get(gseq uint64) (*Record, error) {
	var rec *Record
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		rec, err = getRecord(txn, gseq)
		return err
	})
	return rec, err
}

func getRecord(txn *badger.Txn, gseq uint64) (*Record, error) {
	it, err := txn.Get(recordKey(gseq))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: gseq %d", ErrNotFound, gseq)
	}
	if err != nil {
		return nil, err
	}
	var rec Record
	if err := it.Value(func(b []byte) error {
		if len(b) == 0 {
			return errValueUnreadable
		}
		return decodeRecord(b, &rec)
	}); err != nil {
		return nil, fmt.Errorf("gateway: record %d: %w", gseq, err)
	}
	return &rec, nil
}

// Range calls fn for every stored record with from <= gseq <= to, in
// order, and stops at the first error fn returns.
func (s *Store) Range(from, to uint64, fn func(*Record) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixRecord), PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Seek(recordKey(from)); it.Valid(); it.Next() {
			g := binary.BigEndian.Uint64(it.Item().Key()[len(prefixRecord):])
			if g > to {
				return nil
			}
			var rec Record
			if err := it.Item().Value(func(b []byte) error { return decodeRecord(b, &rec) }); err != nil {
				return fmt.Errorf("gateway: record %d: %w", g, err)
			}
			if err := fn(&rec); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeviceRecords returns up to limit records of did with fromSeq <= seq <=
// toSeq, in seq order.
func (s *Store) DeviceRecords(did device.DID, fromSeq, toSeq uint64, limit int) ([]*Record, error) {
	var out []*Record
	prefix := []byte(prefixDevSeq + string(did) + "/")
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(devSeqKey(did, fromSeq)); it.Valid() && len(out) < limit; it.Next() {
			seq := binary.BigEndian.Uint64(it.Item().Key()[len(prefix):])
			if seq > toSeq {
				break
			}
			var g uint64
			if err := it.Item().Value(func(b []byte) error {
				if len(b) != 8 {
					return errors.New("bad index value")
				}
				g = binary.BigEndian.Uint64(b)
				return nil
			}); err != nil {
				return err
			}
			if s.ArchiveOf(g) != nil {
				continue // moved to an archive file (archive.go)
			}
			rec, err := getRecord(txn, g)
			if err != nil {
				return err
			}
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}

// Close stops the writer (answering queued appends with ErrClosed) and
// closes Badger.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closeMu.Lock()
		s.closed.Store(true)
		s.closeMu.Unlock()
		s.cancel()
		s.wg.Wait()
		// Nothing can enter s.in any more: answer what is left.
		for {
			select {
			case r := <-s.in:
				r.done <- appendRes{err: ErrClosed}
				continue
			default:
			}
			break
		}
		// Everything acknowledged is on disk: move the mark up to it, so
		// that a hole punched later is never taken for a failed write.
		if e := s.db.Update(func(txn *badger.Txn) error {
			return txn.Set([]byte(ackedKey), u64(s.lastG.Load()))
		}); e != nil {
			s.log.Warn("record store: acknowledged mark not written at close", "error", e)
		}
		err = s.db.Close()
	})
	return err
}

// Stored record value formats (the first byte). Format 1: uvarint gseq,
// seq, gap; varint recv (Unix ns); then uvarint-length-prefixed did, kind,
// envelope, salt, receipt, receipt_sig. Format 2 (receipts signed per
// commit group) appends two more length-prefixed fields: group (the
// statement) and path (its 32-byte hashes, leaf to root). A compact binary
// form rather than JSON: encoding sits on the ingest path of every
// message. Format 1 records (stores written before group signing) still
// decode, with no group and no path.
const (
	recordFormatV1 = 1
	recordFormat   = 2
)

func encodeRecord(r *Record) []byte {
	n := 1 + 4*binary.MaxVarintLen64 + 8*binary.MaxVarintLen32 +
		len(r.DID) + len(r.Kind) + len(r.Envelope) + len(r.Salt) + len(r.Receipt) + len(r.ReceiptSig) +
		len(r.Group) + len(r.Path)*len(anchor.Hash{})
	b := make([]byte, 0, n)
	b = append(b, recordFormat)
	b = binary.AppendUvarint(b, r.GSeq)
	b = binary.AppendUvarint(b, r.Seq)
	b = binary.AppendUvarint(b, r.Gap)
	b = binary.AppendVarint(b, r.Recv.UnixNano())
	for _, f := range [][]byte{[]byte(r.DID), []byte(r.Kind), r.Envelope, r.Salt, r.Receipt, r.ReceiptSig, r.Group} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Path)*len(anchor.Hash{})))
	for _, h := range r.Path {
		b = append(b, h[:]...)
	}
	return b
}

// errValueUnreadable: Badger answered a stored value empty, which it does
// when it cannot read the value from its value log (it logs the error).
var errValueUnreadable = errors.New("value unreadable: its value log is cut short or damaged")

// errRecordFormat means a stored record value does not decode.
var errRecordFormat = errors.New("bad stored record encoding")

func decodeRecord(b []byte, r *Record) error {
	if len(b) == 0 || (b[0] != recordFormat && b[0] != recordFormatV1) {
		return errRecordFormat
	}
	nfields := 6
	if b[0] == recordFormat {
		nfields = 8
	}
	b = b[1:]
	uv := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			b = nil
			return 0
		}
		b = b[n:]
		return v
	}
	r.GSeq, r.Seq, r.Gap = uv(), uv(), uv()
	ns, n := binary.Varint(b)
	if n <= 0 {
		return errRecordFormat
	}
	b = b[n:]
	r.Recv = time.Unix(0, ns).UTC()
	fields := make([][]byte, nfields)
	for i := range fields {
		l := uv()
		if b == nil || l > uint64(len(b)) {
			return errRecordFormat
		}
		fields[i] = append([]byte(nil), b[:l]...)
		b = b[l:]
	}
	if len(b) != 0 {
		return errRecordFormat
	}
	r.DID, r.Kind = device.DID(fields[0]), string(fields[1])
	r.Envelope, r.Salt, r.Receipt, r.ReceiptSig = fields[2], fields[3], fields[4], fields[5]
	r.Group, r.Path = nil, nil
	if nfields == 8 {
		r.Group = fields[6]
		hs := fields[7]
		if len(hs)%len(anchor.Hash{}) != 0 || (r.Group == nil && len(hs) != 0) {
			return errRecordFormat
		}
		if len(hs) > 0 {
			r.Path = make([]anchor.Hash, len(hs)/len(anchor.Hash{}))
			for i := range r.Path {
				copy(r.Path[i][:], hs[i*len(anchor.Hash{}):])
			}
		}
	}
	return nil
}

func recordKey(gseq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixRecord), gseq)
}

func devSeqKey(did device.DID, seq uint64) []byte {
	k := make([]byte, 0, len(prefixDevSeq)+len(did)+9)
	k = append(append(append(k, prefixDevSeq...), did...), '/')
	return binary.BigEndian.AppendUint64(k, seq)
}

func lastSeqKey(did device.DID) []byte {
	return append([]byte(prefixLastSeq), did...)
}

// u64 encodes v as 8 bytes big-endian.
func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// badgerLogger sends Badger's logs to slog: errors and warnings as such,
// the rest at debug.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error("badger", "msg", string(bytes.TrimSpace([]byte(fmt.Sprintf(f, a...)))))
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn("badger", "msg", string(bytes.TrimSpace([]byte(fmt.Sprintf(f, a...)))))
}
func (b badgerLogger) Infof(f string, a ...any)  {}
func (b badgerLogger) Debugf(f string, a ...any) {}
