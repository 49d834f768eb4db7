package gateway

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/edgeanchor/edgeanchor/device"
)

// receiptByDevice answers GET /v1/devices/{did}/records/{seq}/receipt with
// the receipt message of that record exactly as the receipt topic carries
// it: once its batch is anchored, the anchor notice (with "batch",
// "height" and "tx"), else the receipt alone. A device that was away when
// either message was published fetches it here; the answer is what the
// gateway signed, so the device checks it as it checks a published one.
func (p *ProofAPI) receiptByDevice(w http.ResponseWriter, r *http.Request) {
	did, err := device.ParseDID(r.PathValue("did"))
	if err != nil {
		proofError(w, http.StatusBadRequest, err.Error())
		return
	}
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		proofError(w, http.StatusBadRequest, "seq must be a positive integer")
		return
	}
	recs, err := p.store.DeviceRecords(did, seq, seq, 1)
	if err != nil {
		p.log.Error("device record lookup failed", "did", did, "seq", seq, "error", err)
		proofError(w, http.StatusInternalServerError, "record lookup failed")
		return
	}
	if len(recs) == 0 {
		proofError(w, http.StatusNotFound, "no such record")
		return
	}
	rec := recs[0]
	m := rec.receiptMessage()
	sb, err := p.blog.ByGSeq(rec.GSeq)
	switch {
	case errors.Is(err, ErrNoBatch):
	case err != nil:
		p.log.Error("batch lookup failed", "gseq", rec.GSeq, "error", err)
		proofError(w, http.StatusInternalServerError, "batch lookup failed")
		return
	case sb.Anchor != nil:
		m.Batch, m.Height, m.TX = sb.Seq, sb.Anchor.Height, sb.Anchor.TxHash
	}
	b, err := m.MarshalJSON()
	if err != nil {
		p.log.Error("receipt encoding failed", "gseq", rec.GSeq, "error", err)
		proofError(w, http.StatusInternalServerError, "receipt encoding failed")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}
