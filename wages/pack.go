package wages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/device"
)

// PackType and PackVersion name the evidence pack format (docs/wages.md).
const (
	PackType    = "WageEvidencePack"
	PackVersion = 1
	// MaxPackBytes bounds a pack file.
	MaxPackBytes = 256 << 20
)

// The steps of VerifyPack, in order.
const (
	PackStepFormat    = "pack format"
	PackStepTrust     = "trust file"
	PackStepAnchors   = "batch headers anchored on the ledger"
	PackStepChain     = "header chain from before the period through the due date"
	PackStepRecords   = "every record of those batches (receipts, Merkle roots)"
	PackStepSequences = "device sequences without gaps"
	PackStepWorker    = "the worker's records (device signatures under registered keys)"
)

// PackSteps lists the steps in order.
var PackSteps = []string{PackStepFormat, PackStepTrust, PackStepAnchors, PackStepChain, PackStepRecords, PackStepSequences, PackStepWorker}

// ErrPack is wrapped by every pack verification failure (a *PackError
// names the step).
var ErrPack = errors.New("wages: evidence pack does not verify")

// PackError is a failed step of VerifyPack.
type PackError struct {
	Step string
	Err  error
}

func (e *PackError) Error() string { return fmt.Sprintf("%s: %v", e.Step, e.Err) }

// Unwrap returns ErrPack and the cause.
func (e *PackError) Unwrap() []error { return []error{ErrPack, e.Err} }

// Pack is the evidence for one worker and period: every batch header from
// the last anchored before the period through the first anchored after the
// due date, with its anchor proof; every record of those batches (after
// the first) as its leaf preimage, receipt and envelope; the registrations
// of the devices of the worker's records.
type Pack struct {
	Type       string        `json:"type"`
	V          int           `json:"v"`
	Gateway    device.DID    `json:"gateway"`
	GatewayPub anchor.Base64 `json:"gateway_pub"`
	Worker     string        `json:"worker"`
	Period     string        `json:"period"`
	Zone       string        `json:"zone"`
	Due        string        `json:"due"`
	Devices    []PackDevice  `json:"devices"`
	Batches    []PackBatch   `json:"batches"`
	Records    []PackRecord  `json:"records"`
}

// PackDevice is a device's RegisterDevice tx and its proof.
type PackDevice struct {
	DID   device.DID            `json:"did"`
	Tx    anchor.Base64         `json:"tx"`
	Proof *evidence.AnchorProof `json:"proof"`
}

// PackBatch is a batch header, the gateway's signature and the anchor
// proof of the AnchorBatch tx.
type PackBatch struct {
	Header anchor.Base64         `json:"header"`
	Sig    anchor.Base64         `json:"sig"`
	Anchor *evidence.AnchorProof `json:"anchor"`
}

// PackRecord is one record: salt and receipt body (the leaf preimage), the
// receipt's group statement, path and signature, and the envelope.
type PackRecord struct {
	Salt    anchor.HexBytes `json:"salt"`
	Receipt anchor.Base64   `json:"receipt"`
	Group   anchor.Base64   `json:"group,omitempty"`
	Path    []anchor.Hash   `json:"path,omitempty"`
	Sig     anchor.Base64   `json:"sig"`
	Env     anchor.Base64   `json:"env"`
}

// MakePack assembles the pack of worker from evidence that is complete
// through the due date.
func MakePack(ev *Evidence, o Options, worker string) (*Pack, error) {
	_, _, due, err := o.Window()
	if err != nil {
		return nil, err
	}
	if len(ev.Missing) > 0 {
		return nil, fmt.Errorf("wages: the log is not complete through the due date, no pack proves absence: %s", ev.Missing[0])
	}
	p := &Pack{Type: PackType, V: PackVersion, Gateway: ev.Gateway, GatewayPub: ev.GatewayPub, Worker: worker,
		Period: o.Period, Zone: ZoneName(o.Zone), Due: anchor.FormatTime(due), Devices: []PackDevice{}}
	for _, b := range ev.Batches[:ev.Closing+1] {
		p.Batches = append(p.Batches, PackBatch{Header: b.bundle.Batch.Body, Sig: b.bundle.Batch.Sig, Anchor: b.bundle.Anchor})
	}
	last := ev.Batches[ev.Closing].Header.Last
	seen := map[device.DID]bool{}
	found := false
	for _, r := range ev.raw {
		if r.GSeq > last {
			break
		}
		p.Records = append(p.Records, PackRecord{Salt: r.Salt, Receipt: r.Receipt, Group: r.Group, Path: r.Path, Sig: r.ReceiptSig, Env: r.Envelope})
	}
	for _, rec := range ev.Records {
		if rec.Worker != worker || rec.GSeq > last {
			continue
		}
		found = true
		if !seen[rec.DID] {
			seen[rec.DID] = true
			di := ev.devices[rec.DID]
			p.Devices = append(p.Devices, PackDevice{DID: rec.DID, Tx: di.bundle.Device.Tx, Proof: di.bundle.Device.Proof})
		}
	}
	if !found {
		return nil, fmt.Errorf("wages: no record of worker %s through the closing batch", worker)
	}
	return p, nil
}

// Encode returns the pack as JSON.
func (p *Pack) Encode() ([]byte, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// PackResult is what a verified pack proves.
type PackResult struct {
	Worker     string
	Period     string
	Due        string
	Days       int
	OnTime     []Wage // wage records for the period anchored by the due date
	Late       []Wage // anchored after it, up to the closing batch
	Batches    int
	Records    int
	Conclusion string
}

// VerifyPack checks a pack offline against trust, step by step (report,
// if not nil, is called after each step), and returns what it proves.
func VerifyPack(data []byte, trust *evidence.Trust, report func(step, detail string, err error)) (*PackResult, error) {
	v := &packVerifier{trust: trust, data: data, res: &PackResult{}}
	for _, s := range []struct {
		name string
		run  func() (string, error)
	}{
		{PackStepFormat, v.format}, {PackStepTrust, v.trustFile}, {PackStepAnchors, v.anchors}, {PackStepChain, v.chain},
		{PackStepRecords, v.records}, {PackStepSequences, v.sequences}, {PackStepWorker, v.worker},
	} {
		detail, err := s.run()
		if report != nil {
			report(s.name, detail, err)
		}
		if err != nil {
			return nil, &PackError{Step: s.name, Err: err}
		}
	}
	return v.res, nil
}

type packVerifier struct {
	trust   *evidence.Trust
	data    []byte
	res     *PackResult
	p       Pack
	zone    *time.Location
	start   time.Time
	end     time.Time
	due     time.Time
	headers []*anchor.BatchHeader
	by      []time.Time
	from    int // index of the first batch whose records are in the pack
	opened  []*device.Opened
	batchOf []int
}

func (v *packVerifier) format() (string, error) {
	if len(v.data) > MaxPackBytes {
		return "", fmt.Errorf("%d bytes > %d", len(v.data), MaxPackBytes)
	}
	if err := device.CheckJSON(v.data, device.JSONOptions{MaxDepth: 64, FoldCase: true}); err != nil {
		return "", err
	}
	dec := json.NewDecoder(bytes.NewReader(v.data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v.p); err != nil {
		return "", err
	}
	if dec.More() {
		return "", errors.New("trailing data")
	}
	p := &v.p
	if p.Type != PackType || p.V != PackVersion {
		return "", fmt.Errorf("type %q v %d, want %q v %d", p.Type, p.V, PackType, PackVersion)
	}
	var err error
	if v.zone, err = ParseZone(p.Zone); err != nil {
		return "", fmt.Errorf("zone %q: %v", p.Zone, err)
	}
	o := Options{Period: p.Period, Zone: v.zone}
	if o.Due, err = anchor.ParseTime(p.Due); err != nil {
		return "", fmt.Errorf("due: %v", err)
	}
	if v.start, v.end, v.due, err = o.Window(); err != nil {
		return "", err
	}
	if len(p.Batches) == 0 {
		return "", errors.New("no batch")
	}
	v.res.Worker, v.res.Period, v.res.Due = p.Worker, p.Period, p.Due
	return fmt.Sprintf("worker %s, period %s (%s), due %s: %d batches, %d records, %d devices", p.Worker, p.Period, p.Zone, p.Due, len(p.Batches), len(p.Records), len(p.Devices)), nil
}

func (v *packVerifier) trustFile() (string, error) {
	if v.trust == nil {
		return "", errors.New("no trust given")
	}
	if err := v.trust.Validate(); err != nil {
		return "", err
	}
	for _, b := range v.p.Batches {
		if b.Anchor == nil {
			continue
		}
		if _, err := b.Anchor.CheckTrust(v.trust); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("chain %s, %d validators", v.trust.ChainID, v.trust.Validators.Size()), nil
}

func (v *packVerifier) anchors() (string, error) {
	pub, err := device.ParsePublicKeyDER(v.p.GatewayPub)
	if err != nil {
		return "", fmt.Errorf("gateway key: %v", err)
	}
	if !v.p.Gateway.Matches(pub) {
		return "", fmt.Errorf("gateway key is not %s's", v.p.Gateway)
	}
	for i, b := range v.p.Batches {
		if b.Anchor == nil {
			return "", fmt.Errorf("batch %d of the pack: no anchor proof", i)
		}
		h, err := anchor.ParseHeader(b.Header)
		if err != nil {
			return "", fmt.Errorf("batch %d of the pack: %v", i, err)
		}
		if h.Gateway != v.p.Gateway || !device.VerifySignature(pub, b.Header, b.Sig) {
			return "", fmt.Errorf("batch %d: header not signed by %s", h.Seq, v.p.Gateway)
		}
		tx, err := anchor.DecodeTx(b.Anchor.Tx)
		if err != nil {
			return "", fmt.Errorf("batch %d: anchor tx: %v", h.Seq, err)
		}
		if tx.Signer != v.p.Gateway || !bytes.Equal(tx.Body, b.Header) || !bytes.Equal(tx.Sig, b.Sig) {
			return "", fmt.Errorf("batch %d: the anchor tx is not its signed header", h.Seq)
		}
		if err := b.Anchor.Verify(v.trust); err != nil {
			return "", fmt.Errorf("batch %d: %v", h.Seq, err)
		}
		v.headers = append(v.headers, h)
		v.by = append(v.by, b.Anchor.NextHeader.Time)
	}
	return fmt.Sprintf("batches %d..%d, each in a block signed by the trusted validators", v.headers[0].Seq, v.headers[len(v.headers)-1].Seq), nil
}

func (v *packVerifier) chain() (string, error) {
	hs := v.headers
	switch {
	case v.by[0].Before(v.start):
		v.from = 1
	case hs[0].Seq == 1 && hs[0].Prev.IsZero():
		v.from = 0
	default:
		return "", fmt.Errorf("the first batch, %d, was anchored by %s, not before the period started (%s), and is not batch 1", hs[0].Seq, anchor.FormatTime(v.by[0]), anchor.FormatTime(v.start))
	}
	for i := 1; i < len(hs); i++ {
		if hs[i].Seq != hs[i-1].Seq+1 || hs[i].Prev != hs[i-1].Hash() || hs[i].First != hs[i-1].Last+1 {
			return "", fmt.Errorf("batch %d does not follow batch %d", hs[i].Seq, hs[i-1].Seq)
		}
		if i < len(hs)-1 && v.by[i].After(v.due) {
			return "", fmt.Errorf("batch %d was anchored after the due date, before the last batch of the pack", hs[i].Seq)
		}
	}
	last := len(hs) - 1
	if !v.by[last].After(v.due) {
		return "", fmt.Errorf("the last batch, %d, was anchored by %s, not after the due date %s: later batches may hold records anchored by it", hs[last].Seq, anchor.FormatTime(v.by[last]), v.p.Due)
	}
	v.res.Batches = len(hs)
	return fmt.Sprintf("batches %d..%d chained; %d anchored after the due date (by %s)", hs[0].Seq, hs[last].Seq, hs[last].Seq, anchor.FormatTime(v.by[last])), nil
}

func (v *packVerifier) records() (string, error) {
	pub, _ := device.ParsePublicKeyDER(v.p.GatewayPub)
	rc := &anchor.ReceiptChecker{Pub: pub}
	k := 0
	for i := v.from; i < len(v.headers); i++ {
		h := v.headers[i]
		leaves := make([]anchor.Hash, 0, h.Count)
		for g := h.First; g <= h.Last; g++ {
			if k >= len(v.p.Records) {
				return "", fmt.Errorf("batch %d: gseq %d is not in the pack", h.Seq, g)
			}
			r := v.p.Records[k]
			k++
			body, err := rc.Verify(r.Receipt, r.Group, r.Path, r.Sig)
			if err != nil {
				return "", fmt.Errorf("batch %d, gseq %d: %v", h.Seq, g, err)
			}
			if body.GSeq != g {
				return "", fmt.Errorf("batch %d: the pack's record for gseq %d is gseq %d", h.Seq, g, body.GSeq)
			}
			if anchor.SM3(r.Env) != body.Env {
				return "", fmt.Errorf("gseq %d: the envelope does not hash to the receipt's env", g)
			}
			o, err := device.Open(r.Env, 0)
			if err != nil {
				return "", fmt.Errorf("gseq %d: envelope: %v", g, err)
			}
			if o.Body.DID != body.DID || o.Body.Seq != body.Seq {
				return "", fmt.Errorf("gseq %d: envelope is %s seq %d, receipt %s seq %d", g, o.Body.DID, o.Body.Seq, body.DID, body.Seq)
			}
			leaves = append(leaves, anchor.LeafHash(r.Salt, r.Receipt))
			v.opened = append(v.opened, o)
			v.batchOf = append(v.batchOf, i)
		}
		if root := anchor.MerkleRoot(leaves); root != h.Root {
			return "", fmt.Errorf("batch %d: the pack's records hash to %s, the anchored root is %s", h.Seq, root, h.Root)
		}
	}
	if k != len(v.p.Records) {
		return "", fmt.Errorf("%d records beyond the pack's batches", len(v.p.Records)-k)
	}
	v.res.Records = k
	return fmt.Sprintf("%d records, every gseq of batches %d..%d, roots recomputed", k, v.headers[v.from].Seq, v.headers[len(v.headers)-1].Seq), nil
}

func (v *packVerifier) sequences() (string, error) {
	seqs := map[device.DID][]uint64{}
	for _, o := range v.opened {
		seqs[o.Body.DID] = append(seqs[o.Body.DID], o.Body.Seq)
	}
	dids := make([]device.DID, 0, len(seqs))
	for d := range seqs {
		dids = append(dids, d)
	}
	slices.Sort(dids)
	for _, d := range dids {
		s := seqs[d]
		slices.Sort(s)
		for i := 1; i < len(s); i++ {
			if s[i] != s[i-1]+1 {
				return "", fmt.Errorf("device %s: seq %d then %d", d, s[i-1], s[i])
			}
		}
	}
	return fmt.Sprintf("%d devices, each's seqs contiguous", len(dids)), nil
}

func (v *packVerifier) worker() (string, error) {
	keys := map[device.DID]*deviceInfo{}
	for _, d := range v.p.Devices {
		if d.Proof == nil {
			return "", fmt.Errorf("device %s: no registration proof", d.DID)
		}
		if err := d.Proof.VerifyTx(v.trust, d.Tx); err != nil {
			return "", fmt.Errorf("device %s: registration: %v", d.DID, err)
		}
		tx, err := anchor.DecodeTx(d.Tx)
		if err != nil || tx.Signer != v.p.Gateway {
			return "", fmt.Errorf("device %s: registration tx not signed by %s", d.DID, v.p.Gateway)
		}
		di, _, err := parseRegistration(d.Tx)
		if err != nil {
			return "", fmt.Errorf("device %s: %v", d.DID, err)
		}
		if device.DIDFromPublicKey(di.pub) != d.DID {
			return "", fmt.Errorf("device %s: registration names another key", d.DID)
		}
		keys[d.DID] = di
	}
	days := map[string]bool{}
	for i, o := range v.opened {
		if o.Body.Kind != device.KindAttendance && o.Body.Kind != device.KindWage {
			continue
		}
		rec, err := decode(checked{r: wireRecord{GSeq: 0}, o: o}, "payroll")
		if err != nil || rec.Worker != v.p.Worker {
			continue // not the worker's (a record that does not decode names no one)
		}
		di := keys[o.Body.DID]
		if di == nil {
			return "", fmt.Errorf("device %s seq %d: a record of the worker from a device whose registration is not in the pack", o.Body.DID, o.Body.Seq)
		}
		if di.kind != "payroll" {
			return "", fmt.Errorf("device %s is a %s device", o.Body.DID, di.kind)
		}
		if err := o.VerifySignature(di.pub); err != nil {
			return "", fmt.Errorf("device %s seq %d: %v", o.Body.DID, o.Body.Seq, err)
		}
		by := v.by[v.batchOf[i]]
		switch rec.Kind {
		case device.KindAttendance:
			if rec.Direction == "in" && !rec.TS.Before(v.start) && rec.TS.Before(v.end) && !by.After(v.due) && !rec.TS.After(by.Add(ClockTolerance)) {
				days[rec.TS.In(v.zone).Format("2006-01-02")] = true
			}
		case device.KindWage:
			if rec.Period != v.p.Period {
				continue
			}
			w := Wage{Batch: v.headers[v.batchOf[i]].Seq, Device: rec.DID, Seq: rec.Seq, AmountFen: rec.AmountFen, Payer: rec.Payer, AnchoredBy: anchor.FormatTime(by), OnTime: !by.After(v.due)}
			if w.OnTime {
				v.res.OnTime = append(v.res.OnTime, w)
			} else {
				v.res.Late = append(v.res.Late, w)
			}
		}
	}
	v.res.Days = len(days)
	if v.res.Days == 0 && len(v.res.OnTime)+len(v.res.Late) == 0 {
		return "", fmt.Errorf("the pack holds no record of worker %s", v.p.Worker)
	}
	c := fmt.Sprintf("worker %s attended %d day(s) in %s; ", v.p.Worker, v.res.Days, v.p.Period)
	if len(v.res.OnTime) == 0 {
		c += fmt.Sprintf("no wage record for %s was anchored by %s", v.p.Period, v.p.Due)
	} else {
		var sum int64
		for _, w := range v.res.OnTime {
			sum += w.AmountFen
		}
		c += fmt.Sprintf("%d wage record(s) for %s, %d fen, were anchored by %s", len(v.res.OnTime), v.p.Period, sum, v.p.Due)
	}
	if len(v.res.Late) > 0 {
		c += fmt.Sprintf("; %d more anchored after it (the first by %s)", len(v.res.Late), v.res.Late[0].AnchoredBy)
	}
	v.res.Conclusion = c
	return fmt.Sprintf("%d device(s) of the worker's records, every signature verified", len(keys)), nil
}
