package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
)

// ProofLedger is what the proof API needs of the ledger client
// (*ledgerclient.Client implements it).
type ProofLedger interface {
	ProveAnchor(ctx context.Context, tx []byte) (*anchor.AnchorProof, error)
	ProveTxHash(ctx context.Context, txHash string) (*anchor.AnchorProof, error)
	Device(ctx context.Context, did device.DID) (*anchor.DeviceRecord, error)
}

var _ ProofLedger = (*ledgerclient.Client)(nil)

// Errors of the proof API.
var (
	// ErrNotAnchored means the record is stored but its batch is not yet
	// committed on the ledger: ask again in a few seconds.
	ErrNotAnchored = errors.New("gateway: record not anchored yet")
)

// MaxRangeRecords bounds one GET /v1/records?from_gseq=&to_gseq= answer.
const MaxRangeRecords = 10_000

// ProofAPI serves proof bundles and the record ranges an auditor needs:
//
//	GET /v1/records/{gseq}/proof                → the proof bundle (docs/proof-bundle.md)
//	GET /v1/devices/{did}/records/{seq}/proof   → the same, by device and device seq
//	GET /v1/records?from_gseq=A&to_gseq=B       → {"records":[{gseq,did,seq,kind,recv,salt,receipt,group,path,receipt_sig,env}],"last_gseq":N}
//	GET /v1/batches/{seq}                       → the stored batch (header, sig, records, anchor)
type ProofAPI struct {
	store  *Store
	blog   *BatchLog
	ledger ProofLedger
	gw     device.DID
	gwPub  []byte
	log    *slog.Logger

	mu      sync.Mutex
	devices map[device.DID]*deviceProof // registration proofs, per device
	anchors map[uint64]*anchor.AnchorProof
	leaves  map[uint64][]anchor.Hash // batch seq → leaf hashes
}

type deviceProof struct {
	tx    []byte
	proof *anchor.AnchorProof
}

// maxCachedAnchors bounds the anchor proofs kept in memory, and
// maxCachedLeafBatches the batches whose leaf hashes are kept (32 bytes a
// record: 16 full batches are 5 MB).
const (
	maxCachedAnchors     = 256
	maxCachedLeafBatches = 16
)

// NewProofAPI serves proofs of the records in store, batched in blog, with
// proofs fetched from ledger. signer is the gateway's key.
func NewProofAPI(store *Store, blog *BatchLog, ledger ProofLedger, signer device.Signer, log *slog.Logger) (*ProofAPI, error) {
	der, err := device.MarshalPublicKeyDER(signer.Public())
	if err != nil {
		return nil, err
	}
	return &ProofAPI{
		store: store, blog: blog, ledger: ledger, gw: signer.DID(), gwPub: der, log: log,
		devices: map[device.DID]*deviceProof{}, anchors: map[uint64]*anchor.AnchorProof{},
		leaves: map[uint64][]anchor.Hash{},
	}, nil
}

// Routes mounts the API on mux.
func (p *ProofAPI) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/records/{gseq}/proof", p.proofByGSeq)
	mux.HandleFunc("GET /v1/devices/{did}/records/{seq}/proof", p.proofByDevice)
	mux.HandleFunc("GET /v1/devices/{did}/records/{seq}/receipt", p.receiptByDevice) // receiptapi.go
	mux.HandleFunc("GET /v1/records", p.recordRange)
	mux.HandleFunc("GET /v1/batches/{seq}", p.batch)
}

// Bundle assembles the proof bundle of record gseq.
func (p *ProofAPI) Bundle(ctx context.Context, gseq uint64) (*anchor.Bundle, error) {
	if a := p.store.archiveOf(gseq); a != nil {
		return nil, &ArchivedError{GSeq: gseq, Archive: *a}
	}
	rec, err := p.store.Get(gseq)
	if err != nil {
		return nil, err
	}
	sb, err := p.blog.ByGSeq(gseq)
	if errors.Is(err, ErrNoBatch) || (err == nil && sb.Anchor == nil) {
		return nil, fmt.Errorf("%w: gseq %d", ErrNotAnchored, gseq)
	}
	if err != nil {
		return nil, err
	}
	leaves, err := p.batchLeaves(sb)
	if err != nil {
		return nil, err
	}
	path, err := anchor.InclusionProof(leaves, gseq-sb.First)
	if err != nil {
		return nil, err
	}
	dev, err := p.deviceProof(ctx, rec.DID)
	if err != nil {
		return nil, err
	}
	ap, err := p.anchorProof(ctx, sb)
	if err != nil {
		return nil, err
	}
	return &anchor.Bundle{
		Type: anchor.BundleType, V: anchor.BundleVersion,
		Record:   anchor.BundleRecord{Gateway: p.gw, GSeq: rec.GSeq, DID: rec.DID, Seq: rec.Seq},
		Envelope: rec.Envelope,
		Device:   anchor.BundleDevice{Tx: dev.tx, Proof: dev.proof},
		Receipt:  anchor.BundleReceipt{Body: rec.Receipt, Group: rec.Group, Path: rec.Path, Sig: rec.ReceiptSig},
		Salt:     rec.Salt,
		Merkle:   anchor.BundleMerkle{Index: gseq - sb.First, Size: uint64(len(leaves)), Path: path},
		Batch:    anchor.BundleSigned{Body: sb.Header, Sig: sb.Sig},
		Gateway:  anchor.BundleGateway{DID: p.gw, Pub: p.gwPub},
		Anchor:   ap,
	}, nil
}

// batchLeaves returns the leaf hashes of sb's records, checked against the
// header's root, from a small cache or the store.
func (p *ProofAPI) batchLeaves(sb *StoredBatch) ([]anchor.Hash, error) {
	p.mu.Lock()
	leaves, ok := p.leaves[sb.Seq]
	p.mu.Unlock()
	if ok {
		return leaves, nil
	}
	leaves = make([]anchor.Hash, 0, sb.Last-sb.First+1)
	if err := p.store.Range(sb.First, sb.Last, func(r *Record) error {
		leaves = append(leaves, anchor.LeafHash(r.Salt, r.Receipt))
		return nil
	}); err != nil {
		return nil, err
	}
	if uint64(len(leaves)) != sb.Last-sb.First+1 {
		return nil, fmt.Errorf("gateway: batch %d: %d of its %d records are stored", sb.Seq, len(leaves), sb.Last-sb.First+1)
	}
	h, err := sb.ParsedHeader()
	if err != nil {
		return nil, err
	}
	if root := anchor.MerkleRoot(leaves); root != h.Root {
		return nil, fmt.Errorf("gateway: batch %d: stored records hash to %s, the header says %s", sb.Seq, root, h.Root)
	}
	p.mu.Lock()
	if len(p.leaves) >= maxCachedLeafBatches {
		clear(p.leaves)
	}
	p.leaves[sb.Seq] = leaves
	p.mu.Unlock()
	return leaves, nil
}

func (p *ProofAPI) deviceProof(ctx context.Context, did device.DID) (*deviceProof, error) {
	p.mu.Lock()
	d, ok := p.devices[did]
	p.mu.Unlock()
	if ok {
		return d, nil
	}
	rec, err := p.ledger.Device(ctx, did)
	if err != nil {
		return nil, fmt.Errorf("gateway: device %s on the ledger: %w", did, err)
	}
	ap, err := p.ledger.ProveTxHash(ctx, rec.Tx)
	if err != nil {
		return nil, fmt.Errorf("gateway: registration of %s: %w", did, err)
	}
	d = &deviceProof{tx: ap.Tx, proof: ap}
	p.mu.Lock()
	p.devices[did] = d
	p.mu.Unlock()
	return d, nil
}

func (p *ProofAPI) anchorProof(ctx context.Context, sb *StoredBatch) (*anchor.AnchorProof, error) {
	p.mu.Lock()
	ap, ok := p.anchors[sb.Seq]
	p.mu.Unlock()
	if ok {
		return ap, nil
	}
	ap, err := p.ledger.ProveAnchor(ctx, sb.Tx)
	if err != nil {
		return nil, fmt.Errorf("gateway: anchor proof of batch %d: %w", sb.Seq, err)
	}
	p.mu.Lock()
	if len(p.anchors) >= maxCachedAnchors {
		clear(p.anchors)
	}
	p.anchors[sb.Seq] = ap
	p.mu.Unlock()
	return ap, nil
}

func (p *ProofAPI) proofByGSeq(w http.ResponseWriter, r *http.Request) {
	gseq, err := strconv.ParseUint(r.PathValue("gseq"), 10, 64)
	if err != nil || gseq == 0 {
		proofError(w, http.StatusBadRequest, "gseq must be a positive integer")
		return
	}
	p.serveBundle(w, r, gseq)
}

func (p *ProofAPI) proofByDevice(w http.ResponseWriter, r *http.Request) {
	if rec := p.deviceRecord(w, r); rec != nil {
		p.serveBundle(w, r, rec.GSeq)
	}
}

// deviceRecord is the stored record named by the path's {did} and {seq},
// or nil once it has answered the request with what is wrong (400 for a bad
// DID or seq, 404 for no such record, 500 for a failed lookup).
func (p *ProofAPI) deviceRecord(w http.ResponseWriter, r *http.Request) *Record {
	did, err := device.ParseDID(r.PathValue("did"))
	if err != nil {
		proofError(w, http.StatusBadRequest, err.Error())
		return nil
	}
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		proofError(w, http.StatusBadRequest, "seq must be a positive integer")
		return nil
	}
	recs, err := p.store.DeviceRecords(did, seq, seq, 1)
	if err != nil {
		p.log.Error("device record lookup failed", "did", did, "seq", seq, "error", err)
		proofError(w, http.StatusInternalServerError, "record lookup failed")
		return nil
	}
	if len(recs) == 0 {
		if err := p.store.ArchivedRecord(did, seq); err != nil {
			archivedAnswer(w, err)
			return nil
		}
		proofError(w, http.StatusNotFound, "no such record")
		return nil
	}
	return recs[0]
}

// proofTimeout bounds the ledger queries of one bundle (the anchor proof
// waits for the block after the anchor).
const proofTimeout = 30 * time.Second

func (p *ProofAPI) serveBundle(w http.ResponseWriter, r *http.Request, gseq uint64) {
	ctx, cancel := context.WithTimeout(r.Context(), proofTimeout)
	defer cancel()
	b, err := p.Bundle(ctx, gseq)
	var archived *ArchivedError
	switch {
	case errors.As(err, &archived):
		archivedAnswer(w, err)
		return
	case errors.Is(err, ErrNotFound):
		proofError(w, http.StatusNotFound, "no such record")
		return
	case errors.Is(err, ErrNotAnchored):
		w.Header().Set("Retry-After", "2")
		proofError(w, http.StatusConflict, "record not anchored yet")
		return
	case errors.Is(err, ledgerclient.ErrUnreachable):
		proofError(w, http.StatusServiceUnavailable, "ledger unreachable")
		return
	case err != nil:
		p.log.Error("proof bundle failed", "gseq", gseq, "error", err)
		proofError(w, http.StatusInternalServerError, "proof bundle failed")
		return
	}
	out, err := b.Encode()
	if err != nil {
		p.log.Error("proof bundle encoding failed", "gseq", gseq, "error", err)
		proofError(w, http.StatusInternalServerError, "proof bundle failed")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// RangeRecord is one record of GET /v1/records?from_gseq=&to_gseq=: all an
// auditor needs to recompute the leaf, check the receipt (Group and Path
// are absent for records stored before group signing; ReceiptSig is over
// Group, or over Receipt without one) and check the device's signature.
type RangeRecord struct {
	GSeq       uint64          `json:"gseq"`
	DID        device.DID      `json:"did"`
	Seq        uint64          `json:"seq"`
	Kind       string          `json:"kind"`
	Recv       string          `json:"recv"`
	Salt       anchor.HexBytes `json:"salt"`
	Receipt    []byte          `json:"receipt"`
	Group      []byte          `json:"group,omitempty"`
	Path       []anchor.Hash   `json:"path,omitempty"`
	ReceiptSig []byte          `json:"receipt_sig"`
	Envelope   []byte          `json:"env"`
}

// RangeAnswer is the answer of GET /v1/records?from_gseq=&to_gseq=.
type RangeAnswer struct {
	Records  []RangeRecord `json:"records"`
	LastGSeq uint64        `json:"last_gseq"` // the highest gseq stored
	// Archives are the archive files that hold records of the range
	// (docs/operations.md, "Retention"): those records are not served.
	Archives []ArchiveInfo `json:"archives,omitempty"`
}

func (p *ProofAPI) recordRange(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from, err1 := strconv.ParseUint(q.Get("from_gseq"), 10, 64)
	to, err2 := strconv.ParseUint(q.Get("to_gseq"), 10, 64)
	if err1 != nil || err2 != nil || from == 0 || to < from {
		proofError(w, http.StatusBadRequest, "want from_gseq and to_gseq, 1 <= from_gseq <= to_gseq")
		return
	}
	if to-from+1 > MaxRangeRecords {
		proofError(w, http.StatusBadRequest, fmt.Sprintf("at most %d records per request", MaxRangeRecords))
		return
	}
	ans := RangeAnswer{Records: []RangeRecord{}, LastGSeq: p.store.LastGSeq()}
	for _, a := range p.store.Archives() {
		if a.FirstGSeq <= to && from <= a.LastGSeq {
			ans.Archives = append(ans.Archives, a)
		}
	}
	err := p.store.Range(from, to, func(rec *Record) error {
		ans.Records = append(ans.Records, RangeRecord{
			GSeq: rec.GSeq, DID: rec.DID, Seq: rec.Seq, Kind: rec.Kind, Recv: anchor.FormatTime(rec.Recv),
			Salt: rec.Salt, Receipt: rec.Receipt, Group: rec.Group, Path: rec.Path, ReceiptSig: rec.ReceiptSig,
			Envelope: rec.Envelope,
		})
		return nil
	})
	if err != nil {
		p.log.Error("record range failed", "from", from, "to", to, "error", err)
		proofError(w, http.StatusInternalServerError, "record range failed")
		return
	}
	writeJSON(w, http.StatusOK, ans)
}

func (p *ProofAPI) batch(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		proofError(w, http.StatusBadRequest, "seq must be a positive integer")
		return
	}
	sb, err := p.blog.Get(seq)
	if ar := p.store.archiveOfBatch(seq); errors.Is(err, ErrNoBatch) && ar != nil {
		writeJSON(w, http.StatusGone, ArchivedAnswer{Error: "batch archived", Archive: *ar})
		return
	}
	if errors.Is(err, ErrNoBatch) {
		proofError(w, http.StatusNotFound, "no such batch")
		return
	}
	if err != nil {
		p.log.Error("batch lookup failed", "seq", seq, "error", err)
		proofError(w, http.StatusInternalServerError, "batch lookup failed")
		return
	}
	writeJSON(w, http.StatusOK, sb)
}

func proofError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, apiError{msg})
}
