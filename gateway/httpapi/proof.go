package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/batch"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// MaxRangeRecords bounds one GET /v1/records?from_gseq=&to_gseq= answer.
const MaxRangeRecords = 10_000

// ProofAPI serves proof bundles and the record ranges an auditor needs:
//
//	GET /v1/records/{gseq}/proof                → the proof bundle (docs/proof-bundle.md)
//	GET /v1/devices/{did}/records/{seq}/proof   → the same, by device and device seq
//	GET /v1/devices/{did}/records/{seq}/receipt → the record's receipt message (receiptapi.go)
//	GET /v1/records?from_gseq=A&to_gseq=B       → {"records":[{gseq,did,seq,kind,recv,salt,receipt,group,path,receipt_sig,env}],"last_gseq":N}
//	GET /v1/batches/{seq}                       → the stored batch (header, sig, records, anchor)
type ProofAPI struct {
	store  *store.Store
	blog   *batch.Log
	proofs *batch.Proofs
	log    *slog.Logger
}

// NewProofAPI serves the records of st, their batches in blog and the
// bundles proofs assembles.
func NewProofAPI(st *store.Store, blog *batch.Log, proofs *batch.Proofs, log *slog.Logger) *ProofAPI {
	return &ProofAPI{store: st, blog: blog, proofs: proofs, log: log}
}

// Routes mounts the API on mux.
func (p *ProofAPI) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/records/{gseq}/proof", p.proofByGSeq)
	mux.HandleFunc("GET /v1/devices/{did}/records/{seq}/proof", p.proofByDevice)
	mux.HandleFunc("GET /v1/devices/{did}/records/{seq}/receipt", p.receiptByDevice) // receiptapi.go
	mux.HandleFunc("GET /v1/records", p.recordRange)
	mux.HandleFunc("GET /v1/batches/{seq}", p.batch)
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
func (p *ProofAPI) deviceRecord(w http.ResponseWriter, r *http.Request) *store.Record {
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
	b, err := p.proofs.Bundle(ctx, gseq)
	var archived *store.ArchivedError
	switch {
	case errors.As(err, &archived):
		archivedAnswer(w, err)
		return
	case errors.Is(err, store.ErrNotFound):
		proofError(w, http.StatusNotFound, "no such record")
		return
	case errors.Is(err, batch.ErrNotAnchored):
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
	Archives []store.ArchiveInfo `json:"archives,omitempty"`
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
	err := p.store.Range(from, to, func(rec *store.Record) error {
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
	if ar := p.store.ArchiveOfBatch(seq); errors.Is(err, batch.ErrNotFound) && ar != nil {
		writeJSON(w, http.StatusGone, ArchivedAnswer{Error: "batch archived", Archive: *ar})
		return
	}
	if errors.Is(err, batch.ErrNotFound) {
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

// ArchiveInfo is an archive as the API names it (RangeAnswer.Archives,
// ArchivedAnswer.Archive).
type ArchiveInfo = store.ArchiveInfo

// ArchivedAnswer is the API's answer (410 Gone) for an archived record.
type ArchivedAnswer struct {
	Error   string            `json:"error"`
	GSeq    uint64            `json:"gseq,omitempty"`
	Archive store.ArchiveInfo `json:"archive"`
}

// archivedAnswer answers 410 naming the archive that holds the record.
func archivedAnswer(w http.ResponseWriter, err error) {
	var a *store.ArchivedError
	if !errors.As(err, &a) {
		proofError(w, http.StatusNotFound, "no such record")
		return
	}
	writeJSON(w, http.StatusGone, ArchivedAnswer{Error: "record archived", GSeq: a.GSeq, Archive: a.Archive})
}
