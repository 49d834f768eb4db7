package httpapi

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// RecordView is a stored record as the HTTP API serves it and as it is
// republished to site applications: the verified body fields, the envelope
// exactly as received (so anyone can check the device signature) and the
// gateway's receipt.
type RecordView struct {
	GSeq     uint64               `json:"gseq"`
	DID      device.DID           `json:"did"`
	Seq      uint64               `json:"seq"`
	Kind     string               `json:"kind"`
	TS       string               `json:"ts"`
	Recv     string               `json:"recv"`
	Gap      uint64               `json:"gap,omitempty"`
	Data     json.RawMessage      `json:"data"`
	Envelope json.RawMessage      `json:"envelope"`
	Receipt  store.ReceiptMessage `json:"receipt"`
}

// NewRecordView is the view of r, whose envelope opened to b.
func NewRecordView(r *store.Record, b *device.Body) RecordView {
	return RecordView{
		GSeq: r.GSeq, DID: r.DID, Seq: r.Seq, Kind: r.Kind, TS: b.TS,
		Recv: r.Recv.UTC().Format(time.RFC3339Nano), Gap: r.Gap, Data: b.Data,
		Envelope: r.Envelope, Receipt: r.Message(),
	}
}

// ViewRecord builds the RecordView of a stored record.
func ViewRecord(r *store.Record) (RecordView, error) {
	o, err := device.Open(r.Envelope, len(r.Envelope)+1)
	if err != nil {
		return RecordView{}, fmt.Errorf("gateway: stored record %d: %w", r.GSeq, err)
	}
	return NewRecordView(r, &o.Body), nil
}
