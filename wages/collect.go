// Package wages reads a site's anchored payroll records as a labour
// inspector would: per worker and pay period, the days attended, the wage
// records and their anchoring time, and whether the worker was paid by the
// due date (docs/wages.md). Every record it uses is verified against the
// inspector's trust file; where the gateway's anchored log is not complete
// through the due date it says which batch or record is missing and
// concludes nothing about absence.
package wages

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
)

// ErrOptions means the report options are invalid; the error names the
// option.
var ErrOptions = errors.New("wages: invalid options")

// DefaultDueDays is how many days after the period's end wages are due
// when the options do not say.
const DefaultDueDays = 15

// ClockTolerance is how far a device's timestamp may lie after the time
// its record was anchored by (a terminal's clock running fast); a record
// further in its own future is not counted.
const ClockTolerance = 5 * time.Minute

// Options select the site, the period and the rules of one report.
type Options struct {
	Gateway device.DID     // the site's gateway
	Period  string         // pay period, YYYY-MM
	Zone    *time.Location // the site's time zone (days attended are its local dates)
	// DueDays: wages are due at 00:00 site time DueDays days after the
	// period's last day (DefaultDueDays when 0).
	DueDays int
	// Due, when set, is the due date itself (it overrides DueDays).
	Due time.Time
	// FloorFen is the daily floor: a worker paid less than FloorFen per day
	// attended is below the floor (0: no floor).
	FloorFen int64
	// Trust is the inspector's trust file: every record is verified
	// against it.
	Trust *evidence.Trust
	// Progress, when set, is called by Collect (on its own goroutine) as
	// it goes: phase is ProgressBatches, ProgressRecords or
	// ProgressSignatures, done of total in that phase.
	Progress func(phase string, done, total int)
}

// Phases of Options.Progress.
const (
	ProgressBatches    = "batches"    // batch anchors verified
	ProgressRecords    = "records"    // batches whose records were fetched and checked
	ProgressSignatures = "signatures" // payroll device signatures verified
)

// progress reports through o.Progress, if set.
func (o *Options) progress(phase string, done, total int) {
	if o.Progress != nil {
		o.Progress(phase, done, total)
	}
}

// Window returns the period's first instant, the instant after its last
// day, and the due date, in the site's zone.
func (o *Options) Window() (start, end, due time.Time, err error) {
	p, err := time.ParseInLocation("2006-01", o.Period, time.UTC)
	if err != nil || p.Format("2006-01") != o.Period {
		return start, end, due, fmt.Errorf("%w: period %q: want YYYY-MM", ErrOptions, o.Period)
	}
	if o.Zone == nil {
		return start, end, due, fmt.Errorf("%w: no site time zone", ErrOptions)
	}
	if o.DueDays < 0 || o.DueDays > 366 {
		return start, end, due, fmt.Errorf("%w: due days %d: want 0..366", ErrOptions, o.DueDays)
	}
	if o.FloorFen < 0 {
		return start, end, due, fmt.Errorf("%w: floor %d fen: want 0 or more", ErrOptions, o.FloorFen)
	}
	start = time.Date(p.Year(), p.Month(), 1, 0, 0, 0, 0, o.Zone)
	end = start.AddDate(0, 1, 0)
	days := o.DueDays
	if days == 0 {
		days = DefaultDueDays
	}
	due = end.AddDate(0, 0, days)
	if !o.Due.IsZero() {
		due = o.Due
	}
	if due.Before(end) {
		return start, end, due, fmt.Errorf("%w: due date %s is before the period ends (%s)", ErrOptions, anchor.FormatTime(due), anchor.FormatTime(end))
	}
	return start, end, due, nil
}

// Record is one verified payroll record.
type Record struct {
	GSeq       uint64     `json:"gseq"`
	Batch      uint64     `json:"batch"`
	DID        device.DID `json:"did"`
	Seq        uint64     `json:"seq"`
	Kind       string     `json:"kind"`
	TS         time.Time  `json:"ts"`          // the device's clock
	AnchoredBy time.Time  `json:"anchored_by"` // the ledger's: block H+1 of the anchor
	Worker     string     `json:"worker"`
	Direction  string     `json:"direction,omitempty"` // attendance: in or out
	Period     string     `json:"period,omitempty"`    // wage
	AmountFen  int64      `json:"amount_fen,omitempty"`
	Payer      string     `json:"payer,omitempty"`
}

// Batch is a verified batch header with the anchor's times.
type Batch struct {
	Header     *anchor.BatchHeader
	Hash       anchor.Hash
	Height     int64
	AnchoredBy time.Time
	bundle     *evidence.Bundle // the verified bundle of its first record
}

// Evidence is what Collect verified, and what it found missing.
type Evidence struct {
	Gateway    device.DID
	GatewayPub []byte
	Site       string
	// Batches examined, in order: the last batch anchored before the
	// period started (when there is one), then each batch after it.
	Batches []*Batch
	// Closing is the index in Batches of the first batch anchored after the
	// due date (-1: none yet). Every batch anchored by the due date comes
	// before it.
	Closing int
	Records []Record
	// Missing lists what keeps the log from being complete through the
	// due date (a batch not anchored, a gseq not served, a record that
	// does not verify, a device sequence gap still open).
	Missing []string
	// Later lists problems after the closing batch: late payments there
	// may be missing from the report, conclusions at the due date hold.
	Later []string
	// Checked counts what was verified.
	Checked Counts
	// devices: registration of each payroll device seen.
	devices map[device.DID]*deviceInfo
	// raw: the records of Batches[rawFrom:], as the gateway served them,
	// for evidence packs.
	raw     []wireRecord
	rawFrom int
}

// Counts are the verification figures of a report.
type Counts struct {
	Batches          int `json:"batches"`
	Records          int `json:"records"`
	PayrollRecords   int `json:"payroll_records"`
	DeviceSignatures int `json:"device_signatures"`
	Devices          int `json:"devices"`
}

type deviceInfo struct {
	pub    *ecdsa.PublicKey
	kind   string
	bundle *evidence.Bundle
}

// Collect reads the gateway's anchored log from the last batch anchored
// before the period starts through its newest anchored batch, verifies
// every batch's anchor (through the proof bundle of its first record,
// checked against o.Trust) and every record (receipt, Merkle root, and for
// payroll records the device signature under the key registered on the
// ledger), and returns the payroll records and whatever is missing.
// An error means the report could not run (gateway unreachable, options).
func Collect(ctx context.Context, gw *Gateway, o Options) (*Evidence, error) {
	start, _, due, err := o.Window()
	if err != nil {
		return nil, err
	}
	if o.Trust == nil {
		return nil, fmt.Errorf("%w: no trust file", ErrOptions)
	}
	if err := o.Trust.Validate(); err != nil {
		return nil, fmt.Errorf("%w: trust file: %v", ErrOptions, err)
	}
	c := &collector{gw: gw, o: o, ev: &Evidence{Gateway: o.Gateway, Closing: -1, devices: map[device.DID]*deviceInfo{}}}
	if err := c.walk(ctx, start, due); err != nil {
		return nil, err
	}
	if err := c.records(ctx); err != nil {
		return nil, err
	}
	return c.ev, nil
}

type collector struct {
	gw       *Gateway
	o        Options
	ev       *Evidence
	receipts *anchor.ReceiptChecker
}

// problem records a finding about batch index i (or the whole log with
// i < 0).
func (c *collector) problem(i int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if i >= 0 && c.ev.Closing >= 0 && i > c.ev.Closing {
		c.ev.Later = append(c.ev.Later, msg)
		return
	}
	c.ev.Missing = append(c.ev.Missing, msg)
}

// lastBatch finds the gateway's newest batch (0: none) by probing
// doubling seqs, then bisecting.
func (c *collector) lastBatch(ctx context.Context) (uint64, error) {
	exists := func(seq uint64) (bool, error) {
		_, err := c.gw.batch(ctx, seq)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		if errors.Is(err, ErrArchived) {
			return true, nil // archived batches are the oldest
		}
		return err == nil, err
	}
	lo, hi := uint64(0), uint64(1) // lo exists (or 0), hi to probe
	for {
		ok, err := exists(hi)
		if err != nil {
			return 0, err
		}
		if !ok {
			break
		}
		lo, hi = hi, hi*2
		if hi > 1<<40 {
			return 0, errors.New("wages: the gateway claims over 2^40 batches")
		}
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		ok, err := exists(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// firstFrom finds the first batch whose (unverified) header window ends
// at or after t, in 1..last (last+1 when none does). Only a starting
// point: the anchors decide.
func (c *collector) firstFrom(ctx context.Context, t time.Time, last uint64) (uint64, error) {
	lo, hi := uint64(1), last+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		wb, err := c.gw.batch(ctx, mid)
		if errors.Is(err, ErrArchived) {
			lo = mid + 1 // archived batches are older than every kept one
			continue
		}
		if err != nil {
			return 0, err
		}
		h, err := anchor.ParseHeader(wb.Header)
		if err != nil {
			return mid, nil // verification will name it
		}
		if h.To.Before(t) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// verifyBatch verifies batch seq's header and anchor through the proof
// bundle of its first record.
func (c *collector) verifyBatch(ctx context.Context, seq uint64) (*Batch, error) {
	wb, err := c.gw.batch(ctx, seq)
	if err != nil {
		return nil, err
	}
	b, err := c.gw.bundle(ctx, wb.First)
	if err != nil {
		return nil, err
	}
	v, err := b.Verify(c.o.Trust, nil)
	if err != nil {
		return nil, fmt.Errorf("batch %d: proof bundle of gseq %d: %w", seq, wb.First, err)
	}
	if v.Header.Gateway != c.o.Gateway || v.Header.Seq != seq {
		return nil, fmt.Errorf("batch %d: the bundle of gseq %d is of batch %d of gateway %s", seq, wb.First, v.Header.Seq, v.Header.Gateway)
	}
	if c.ev.GatewayPub == nil {
		c.ev.GatewayPub = b.Gateway.Pub
		pub, err := device.ParsePublicKeyDER(b.Gateway.Pub)
		if err != nil {
			return nil, fmt.Errorf("batch %d: gateway key: %w", seq, err)
		}
		c.receipts = &anchor.ReceiptChecker{Pub: pub}
	} else if !bytes.Equal(c.ev.GatewayPub, b.Gateway.Pub) {
		return nil, fmt.Errorf("batch %d: the bundle names another key for gateway %s", seq, c.o.Gateway)
	}
	by, err := anchor.ParseTime(v.AnchoredBy)
	if err != nil {
		return nil, fmt.Errorf("batch %d: anchored-by time: %w", seq, err)
	}
	return &Batch{Header: v.Header, Hash: v.HeaderHash, Height: v.AnchorHeight, AnchoredBy: by, bundle: b}, nil
}

// walk verifies the chain of batches from the last one anchored before
// start through the newest anchored one.
func (c *collector) walk(ctx context.Context, start, due time.Time) error {
	last, err := c.lastBatch(ctx)
	if err != nil {
		return err
	}
	if last == 0 {
		c.problem(-1, "the gateway has no batch")
		return nil
	}
	s, err := c.firstFrom(ctx, start, last)
	if err != nil {
		return err
	}
	// Walk back to a batch anchored before the period started: its
	// successors hold every record anchored since.
	prevHash, prevLast := anchor.ZeroHash, uint64(0)
	b := s - 1
	for ; b >= 1; b-- {
		vb, err := c.verifyBatch(ctx, b)
		if err != nil {
			c.problem(-1, "batch %d (before the period): %v", b, err)
			return nil
		}
		if vb.AnchoredBy.Before(start) {
			c.ev.Batches = append(c.ev.Batches, vb)
			prevHash, prevLast = vb.Hash, vb.Header.Last
			break
		}
	}
	for seq := b + 1; seq <= last; seq++ {
		c.o.progress(ProgressBatches, int(seq-b-1), int(last-b))
		i := len(c.ev.Batches)
		vb, err := c.verifyBatch(ctx, seq)
		if errors.Is(err, ErrNotAnchored) {
			c.problem(i, "batch %d (gseq from %d) is not anchored on the ledger", seq, prevLast+1)
			return nil
		}
		if err != nil {
			c.problem(i, "batch %d: %v", seq, err)
			return nil
		}
		h := vb.Header
		switch {
		case h.Prev != prevHash:
			c.problem(i, "batch %d: its prev %s is not the hash %s of batch %d", seq, h.Prev, prevHash, seq-1)
			return nil
		case h.First != prevLast+1:
			c.problem(i, "batch %d: first gseq %d, want %d", seq, h.First, prevLast+1)
			return nil
		}
		c.ev.Batches = append(c.ev.Batches, vb)
		if c.ev.Closing < 0 && vb.AnchoredBy.After(due) {
			c.ev.Closing = i
		}
		prevHash, prevLast = vb.Hash, h.Last
	}
	c.o.progress(ProgressBatches, int(last-b), int(last-b))
	if c.ev.Closing < 0 {
		c.problem(-1, "no batch anchored after the due date %s yet (the newest, %d, was anchored by %s)",
			anchor.FormatTime(due), last, anchor.FormatTime(c.ev.Batches[len(c.ev.Batches)-1].AnchoredBy))
	}
	return nil
}

// checked is a record whose receipt and leaf verified, waiting for its
// device signature.
type checked struct {
	batch int
	r     wireRecord
	o     *device.Opened
}

// records fetches and verifies the records of every examined batch after
// the first (the first was anchored before the period).
func (c *collector) records(ctx context.Context) error {
	bs := c.ev.Batches
	from := 0
	// The first examined batch is the one before the period when the walk
	// found one: its records were anchored before the period started.
	if start, _, _, _ := c.o.Window(); len(bs) > 0 && bs[0].AnchoredBy.Before(start) {
		from = 1
	}
	c.ev.rawFrom = from
	var payroll []checked
	for i := from; i < len(bs); i++ {
		c.o.progress(ProgressRecords, i-from, len(bs)-from)
		h := bs[i].Header
		var recs []wireRecord
		for f := h.First; f <= h.Last; f += maxRange {
			t := min(h.Last, f+maxRange-1)
			rs, err := c.gw.records(ctx, f, t)
			if err != nil {
				return err
			}
			recs = append(recs, rs...)
		}
		c.ev.Checked.Batches++
		c.ev.raw = append(c.ev.raw, recs...)
		got, ok := c.batchRecords(i, h, recs)
		if ok {
			payroll = append(payroll, got...)
		}
	}
	c.o.progress(ProgressRecords, len(bs)-from, len(bs)-from)
	return c.verifyPayroll(ctx, payroll)
}

// batchRecords checks one batch's records: every gseq present, the root
// recomputed, each receipt. It returns the batch's payroll records and
// whether the batch is whole.
func (c *collector) batchRecords(i int, h *anchor.BatchHeader, recs []wireRecord) ([]checked, bool) {
	want := h.First
	leaves := make([]anchor.Hash, 0, h.Count)
	var out []checked
	for _, r := range recs {
		if r.GSeq != want {
			if r.GSeq > want && r.GSeq <= h.Last {
				c.problem(i, "batch %d: gseq %d..%d missing from the gateway", h.Seq, want, r.GSeq-1)
			} else {
				c.problem(i, "batch %d: the gateway answered gseq %d out of order", h.Seq, r.GSeq)
			}
			return nil, false
		}
		want++
		leaves = append(leaves, anchor.LeafHash(r.Salt, r.Receipt))
		rc, err := c.receipts.Verify(r.Receipt, r.Group, r.Path, r.ReceiptSig)
		if err == nil && (rc.GSeq != r.GSeq || rc.DID != r.DID || rc.Seq != r.Seq) {
			err = fmt.Errorf("receipt is for gseq %d, %s seq %d", rc.GSeq, rc.DID, rc.Seq)
		}
		if err == nil && anchor.SM3(r.Envelope) != rc.Env {
			err = errors.New("envelope does not hash to the receipt's env")
		}
		var o *device.Opened
		if err == nil {
			o, err = device.Open(r.Envelope, 0)
		}
		if err == nil && (o.Body.DID != r.DID || o.Body.Seq != r.Seq) {
			err = fmt.Errorf("envelope is %s seq %d", o.Body.DID, o.Body.Seq)
		}
		if err != nil {
			c.problem(i, "batch %d gseq %d: %v", h.Seq, r.GSeq, err)
			continue
		}
		if strings.HasPrefix(o.Body.Kind, "payroll.") {
			out = append(out, checked{batch: i, r: r, o: o})
		}
	}
	if want != h.Last+1 {
		c.problem(i, "batch %d: gseq %d..%d missing from the gateway", h.Seq, want, h.Last)
		return nil, false
	}
	if root := anchor.MerkleRoot(leaves); root != h.Root {
		c.problem(i, "batch %d: its records hash to root %s, the anchored header holds %s", h.Seq, root, h.Root)
		return nil, false
	}
	c.ev.Checked.Records += len(recs)
	return out, true
}

// verifyPayroll verifies the device signature of each payroll record under
// its device's registered key (in parallel), decodes its data and checks
// each payroll device's sequence.
func (c *collector) verifyPayroll(ctx context.Context, recs []checked) error {
	// One proof bundle per device, fetched in parallel (the gateway asks
	// the ledger for each registration proof), checked in order.
	type fetched struct {
		r   checked
		b   *evidence.Bundle
		err error
	}
	var todo []*fetched
	seen := map[device.DID]bool{}
	for _, r := range recs {
		if !seen[r.r.DID] {
			seen[r.r.DID] = true
			todo = append(todo, &fetched{r: r})
		}
	}
	var fw sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, f := range todo {
		fw.Add(1)
		go func() {
			defer fw.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			f.b, f.err = c.gw.deviceBundle(ctx, f.r.r.DID, f.r.r.Seq)
		}()
	}
	fw.Wait()
	for _, f := range todo {
		r, b, err := f.r, f.b, f.err
		if err != nil {
			if errors.Is(err, ErrNotAnchored) || errors.Is(err, ErrNotFound) || errors.Is(err, evidence.ErrMalformedBundle) {
				c.ev.devices[r.r.DID] = nil
				c.problem(r.batch, "device %s: no registration proof: %v", r.r.DID, err)
				continue
			}
			return err
		}
		di, err := c.registration(b)
		if err != nil {
			c.ev.devices[r.r.DID] = nil
			c.problem(r.batch, "device %s: %v", r.r.DID, err)
			continue
		}
		c.ev.devices[r.r.DID] = di
	}
	c.ev.Checked.Devices = len(c.ev.devices)
	ok := make([]bool, len(recs))
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				if di := c.ev.devices[recs[j].r.DID]; di != nil {
					ok[j] = recs[j].o.VerifySignature(di.pub) == nil
				}
			}
		}()
	}
	for j := range recs {
		if j%256 == 0 {
			c.o.progress(ProgressSignatures, j, len(recs))
		}
		next <- j
	}
	close(next)
	wg.Wait()
	c.o.progress(ProgressSignatures, len(recs), len(recs))
	seqs := map[device.DID][]uint64{}
	for j, r := range recs {
		di := c.ev.devices[r.r.DID]
		if di == nil {
			continue // named once above
		}
		seqs[r.r.DID] = append(seqs[r.r.DID], r.r.Seq)
		h := c.ev.Batches[r.batch].Header
		if !ok[j] {
			c.problem(r.batch, "batch %d gseq %d: device signature does not verify under %s's registered key", h.Seq, r.r.GSeq, r.r.DID)
			continue
		}
		c.ev.Checked.DeviceSignatures++
		rec, err := decode(r, di.kind)
		if err != nil {
			c.problem(r.batch, "batch %d gseq %d: %v", h.Seq, r.r.GSeq, err)
			continue
		}
		rec.Batch = h.Seq
		rec.AnchoredBy = c.ev.Batches[r.batch].AnchoredBy
		c.ev.Records = append(c.ev.Records, rec)
	}
	c.ev.Checked.PayrollRecords = len(c.ev.Records)
	dids := make([]device.DID, 0, len(seqs))
	for did := range seqs {
		dids = append(dids, did)
	}
	slices.Sort(dids)
	for _, did := range dids {
		s := seqs[did]
		slices.Sort(s)
		for k := 1; k < len(s); k++ {
			switch {
			case s[k] == s[k-1]:
				c.problem(-1, "device %s: seq %d stored twice", did, s[k])
			case s[k] > s[k-1]+1:
				c.problem(-1, "device %s: seqs %d..%d missing (an open sequence gap)", did, s[k-1]+1, s[k]-1)
			}
		}
	}
	return nil
}

// registration verifies a device's proof bundle and returns its registered
// key and kind.
func (c *collector) registration(b *evidence.Bundle) (*deviceInfo, error) {
	if _, err := b.Verify(c.o.Trust, nil); err != nil {
		return nil, fmt.Errorf("proof bundle: %w", err)
	}
	if b.Gateway.DID != c.o.Gateway {
		return nil, fmt.Errorf("registered by %s, not %s", b.Gateway.DID, c.o.Gateway)
	}
	di, site, err := parseRegistration(b.Device.Tx)
	if err != nil {
		return nil, err
	}
	if c.ev.Site == "" {
		c.ev.Site = site
	}
	di.bundle = b
	return di, nil
}

// parseRegistration reads the device key, kind and site of a
// RegisterDevice tx (verified by the caller).
func parseRegistration(regTx []byte) (*deviceInfo, string, error) {
	tx, err := anchor.DecodeTx(regTx)
	if err != nil {
		return nil, "", err
	}
	body, err := anchor.DecodeBody(tx.Body)
	if err != nil {
		return nil, "", err
	}
	rd, ok := body.(*anchor.RegisterDeviceBody)
	if !ok {
		return nil, "", fmt.Errorf("registration tx is a %s", tx.Type())
	}
	reg, pub, err := credential.ParseRegistration(rd.Registration)
	if err != nil {
		return nil, "", err
	}
	if !device.VerifySignature(pub, rd.Registration, rd.DeviceSig) {
		return nil, "", errors.New("the device's proof-of-possession signature does not verify")
	}
	return &deviceInfo{pub: pub, kind: reg.Kind}, reg.Site, nil
}

// decode reads a verified payroll record's data.
func decode(r checked, devKind string) (Record, error) {
	b := r.o.Body
	rec := Record{GSeq: r.r.GSeq, DID: b.DID, Seq: b.Seq, Kind: b.Kind}
	if devKind != "payroll" {
		return rec, fmt.Errorf("a %s record from a %q device", b.Kind, devKind)
	}
	if err := device.ValidateData(b.Kind, b.Data); err != nil {
		return rec, err
	}
	ts, err := time.Parse(time.RFC3339Nano, b.TS)
	if err != nil {
		return rec, fmt.Errorf("device timestamp %q: %v", b.TS, err)
	}
	rec.TS = ts
	switch b.Kind {
	case device.KindAttendance:
		var a struct {
			Worker    string `json:"worker"`
			Direction string `json:"direction"`
		}
		if err := json.Unmarshal(b.Data, &a); err != nil {
			return rec, err
		}
		rec.Worker, rec.Direction = a.Worker, a.Direction
	case device.KindWage:
		var w struct {
			Worker    string `json:"worker"`
			Period    string `json:"period"`
			AmountFen int64  `json:"amount_fen"`
			Payer     string `json:"payer"`
		}
		if err := json.Unmarshal(b.Data, &w); err != nil {
			return rec, err
		}
		rec.Worker, rec.Period, rec.AmountFen, rec.Payer = w.Worker, w.Period, w.AmountFen, w.Payer
	default:
		return rec, fmt.Errorf("unknown payroll kind %q", b.Kind)
	}
	return rec, nil
}

// sortRecords orders records by gseq.
func sortRecords(rs []Record) {
	sort.Slice(rs, func(a, b int) bool { return rs[a].GSeq < rs[b].GSeq })
}

// ParseZone reads a site time zone: an IANA name (Asia/Shanghai) or a
// fixed offset from UTC (+08:00).
func ParseZone(s string) (*time.Location, error) {
	if len(s) == 6 && (s[0] == '+' || s[0] == '-') && s[3] == ':' {
		t, err := time.Parse("-07:00", s)
		if err == nil {
			_, off := t.Zone()
			return time.FixedZone(s, off), nil
		}
	}
	loc, err := time.LoadLocation(s)
	if err != nil {
		return nil, fmt.Errorf("%w: time zone %q: want an IANA name or ±hh:mm", ErrOptions, s)
	}
	return loc, nil
}

// ZoneName names loc so that ParseZone reads it back: its IANA name, or
// its fixed offset.
func ZoneName(loc *time.Location) string {
	if l, err := time.LoadLocation(loc.String()); err == nil && l.String() == loc.String() && loc.String() != "Local" {
		return loc.String()
	}
	return time.Date(2000, 1, 1, 0, 0, 0, 0, loc).Format("-07:00")
}
