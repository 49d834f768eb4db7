package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/emmansun/gmsm/sm3"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/refusal"
	"github.com/edgeanchor/edgeanchor/gateway/httpapi"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// DeviceRecordKinds maps a device kind to the record kinds it may publish
// (docs/internals.md "Device kinds and record kinds").
var DeviceRecordKinds = map[string][]string{
	"payroll": {device.KindAttendance, device.KindWage},
	"survey":  {device.KindSurvey},
	"env":     {device.KindDust},
}

// KindAllowed reports whether a device of deviceKind may publish recordKind.
func KindAllowed(deviceKind, recordKind string) bool {
	return slices.Contains(DeviceRecordKinds[deviceKind], recordKind)
}

// storeRefusal names a store error's refusal reason.
func storeRefusal(kind string, err error) error {
	if errors.Is(err, store.ErrDiskFull) {
		return refuse(refusal.DiskFull, kind, err)
	}
	return refuse(refusal.StoreError, kind, err)
}

// Ingest is the ingest pipeline behind the broker's publish hook:
// decode → schema → kind → signature (once) → sequence and durable write.
type Ingest struct {
	store      *store.Store
	maxPayload int
	// cpu bounds the connections decoding and verifying at once to the
	// number of cores: with a thousand connections busy, the store's
	// single writer would otherwise get a thousandth of the CPU and the
	// group commit, not the verification, would set the pace.
	cpu chan struct{}
	// now and futureTolerance drive the timestamp plausibility rule
	// (plausible.go); zero values mean time.Now and the default.
	now             func() time.Time
	futureTolerance time.Duration
}

var _ broker.Ingester = (*Ingest)(nil)

// NewIngest returns the pipeline writing to store; envelopes whose body
// exceeds maxPayload bytes are refused as too_large.
func NewIngest(st *store.Store, maxPayload int) *Ingest {
	return &Ingest{store: st, maxPayload: maxPayload, cpu: make(chan struct{}, runtime.GOMAXPROCS(0))}
}

// kindLabel keeps metric label values to the known kinds.
func kindLabel(kind string) string {
	if slices.Contains(knownKinds, kind) {
		return kind
	}
	return "unknown"
}

var knownKinds = device.Kinds()

func refuse(reason, kind string, err error) error {
	return &broker.Refusal{Reason: reason, Kind: kind, Err: err}
}

// Ingest implements broker.Ingester: everything up to the sequence check
// runs in the caller's goroutine; the sequence check, gseq, receipt and the
// synced write happen in the store's writer, which wait waits for.
func (g *Ingest) Ingest(ctx context.Context, dev broker.DeviceInfo, payload []byte) (func() (broker.Accepted, error), error) {
	select {
	case g.cpu <- struct{}{}:
	case <-ctx.Done():
		return nil, refuse(refusal.StoreError, "", ctx.Err())
	}
	o, dup, err := g.check(dev, payload)
	<-g.cpu
	if err != nil {
		return nil, err
	}
	if dup != nil {
		acc := broker.Accepted{GSeq: dup.GSeq, Kind: dup.Kind, Duplicate: true, Receipt: dup.ReceiptMessage}
		return func() (broker.Accepted, error) { return acc, nil }, nil
	}
	kind := kindLabel(o.Body.Kind)
	sum := sm3.Sum(payload)
	waitRec, err := g.store.Enqueue(ctx, store.Pending{
		DID: dev.DID, Seq: o.Body.Seq, Kind: o.Body.Kind, Envelope: payload, EnvHash: anchor.Hash(sum),
	})
	if err != nil {
		return nil, storeRefusal(kind, err)
	}
	body := o.Body
	return func() (broker.Accepted, error) {
		rec, isDup, err := waitRec()
		switch {
		case errors.Is(err, store.ErrReplay):
			return broker.Accepted{}, refuse(refusal.Replay, kind, err)
		case err != nil:
			return broker.Accepted{}, storeRefusal(kind, err)
		case isDup:
			return broker.Accepted{GSeq: rec.GSeq, Kind: rec.Kind, Duplicate: true, Receipt: rec.ReceiptMessage}, nil
		}
		return broker.Accepted{GSeq: rec.GSeq, Kind: rec.Kind, Receipt: rec.ReceiptMessage,
			Record: func() []byte {
				view, err := json.Marshal(httpapi.NewRecordView(rec, &body))
				if err != nil {
					return nil // the record is stored; republishing is best effort
				}
				return view
			}}, nil
	}, nil
}

// check decodes payload and checks schema, kind and signature. A resend
// of a stored record (same device and seq, byte-identical envelope: a
// device whose PUBACK was lost) returns that record instead, before the
// signature check: the stored envelope was verified when it was stored.
func (g *Ingest) check(dev broker.DeviceInfo, payload []byte) (*device.Opened, *store.Record, error) {
	o, err := device.Open(payload, g.maxPayload)
	if err != nil {
		return nil, nil, refuse(device.Reason(err), "", err)
	}
	if rec := g.store.StoredDuplicate(dev.DID, o.Body.Seq, payload); rec != nil {
		return o, rec, nil
	}
	kind := kindLabel(o.Body.Kind)
	if err := g.checkPlausibleTime(&o.Body, kind); err != nil {
		return nil, nil, err
	}
	if err := device.ValidateData(o.Body.Kind, o.Body.Data); err != nil {
		return nil, nil, refuse(refusal.Schema, kind, err)
	}
	if !KindAllowed(dev.Kind, o.Body.Kind) {
		return nil, nil, refuse(refusal.KindNotAllowed, kind,
			fmt.Errorf("a %s device may not publish %s", dev.Kind, o.Body.Kind))
	}
	if o.Body.DID != dev.DID {
		return nil, nil, refuse(refusal.DIDMismatch, kind, fmt.Errorf("body names %s", o.Body.DID))
	}
	if !device.VerifySignature(dev.Pub, o.Envelope.Body, o.Envelope.Sig) {
		return nil, nil, refuse(refusal.Signature, kind, device.ErrSignature)
	}
	return o, nil, nil
}
