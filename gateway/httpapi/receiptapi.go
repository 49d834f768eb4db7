package httpapi

import (
	"errors"
	"net/http"

	"github.com/edgeanchor/edgeanchor/gateway/batch"
)

// receiptByDevice answers GET /v1/devices/{did}/records/{seq}/receipt with
// the receipt message of that record exactly as the receipt topic carries
// it: once its batch is anchored, the anchor notice (with "batch",
// "height" and "tx"), else the receipt alone. A device that was away when
// either message was published fetches it here; the answer is what the
// gateway signed, so the device checks it as it checks a published one.
func (p *ProofAPI) receiptByDevice(w http.ResponseWriter, r *http.Request) {
	rec := p.deviceRecord(w, r)
	if rec == nil {
		return
	}
	m := rec.Message()
	sb, err := p.blog.ByGSeq(rec.GSeq)
	switch {
	case errors.Is(err, batch.ErrNotFound):
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
