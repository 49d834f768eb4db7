package evidence

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	cmttypes "github.com/cometbft/cometbft/types"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
)

// BundleType and BundleVersion name the proof bundle format
// (docs/proof-bundle.md).
const (
	BundleType    = "ProofBundle"
	BundleVersion = 1
	// MaxBundleBytes bounds a bundle file: a few light blocks and proofs.
	MaxBundleBytes = 8 << 20
)

// ErrMalformedBundle means the file is not a proof bundle this code speaks.
// Ask the gateway for the bundle again; nothing can be concluded from it.
var ErrMalformedBundle = errors.New("anchor: malformed proof bundle")

// ErrVerify is wrapped by every verification failure (a *StepError names
// the step).
var ErrVerify = errors.New("anchor: proof bundle does not verify")

// StepTrustFile is the check that runs before the numbered steps: the trust
// file is valid and names exactly the validator set of the bundle's blocks
// (a *TrustMismatchError otherwise). Its failure is the trust file's
// problem, not the evidence's.
const StepTrustFile = "trust file"

// The verification steps, in order (docs/proof-bundle.md).
const (
	StepEnvelope     = "envelope signature"
	StepDeviceKey    = "device key registered on the ledger"
	StepReceipt      = "gateway receipt signature and envelope hash"
	StepLeaf         = "Merkle leaf (salt and receipt)"
	StepMerklePath   = "Merkle path to the batch root"
	StepHeaderSig    = "batch header signed by the gateway"
	StepAnchorTx     = "anchor tx is the signed batch header"
	StepAnchorBlock  = "anchor tx in a block signed by 2/3+ of the trusted validators"
	StepAnchorResult = "anchor tx accepted by the ledger (result code 0)"
)

// Steps lists the step names in the order Verify runs them.
var Steps = []string{
	StepEnvelope, StepDeviceKey, StepReceipt, StepLeaf, StepMerklePath,
	StepHeaderSig, StepAnchorTx, StepAnchorBlock, StepAnchorResult,
}

// StepError is a failed verification step.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return fmt.Sprintf("%s: %v", e.Step, e.Err) }

// Unwrap returns both ErrVerify and the cause, so errors.Is works for either.
func (e *StepError) Unwrap() []error { return []error{ErrVerify, e.Err} }

// Bundle is the self-contained evidence for one record. Its JSON form is
// the proof bundle file; byte members travel as base64 (std), hashes as hex.
type Bundle struct {
	Type string `json:"type"` // BundleType
	V    int    `json:"v"`    // BundleVersion

	// Record names the record (informational: every member is checked
	// against the signed documents below).
	Record BundleRecord `json:"record"`

	// Envelope is the device's envelope exactly as the gateway received it.
	Envelope anchor.Base64 `json:"envelope"`

	// Device is the device's RegisterDevice transaction and its proof.
	Device BundleDevice `json:"device"`

	// Receipt is the gateway's receipt: body, commit group statement, path
	// and signature.
	Receipt BundleReceipt `json:"receipt"`

	// Salt is the record's 16-byte leaf salt (hex).
	Salt anchor.HexBytes `json:"salt"`

	// Merkle is the record's inclusion proof in its batch tree.
	Merkle BundleMerkle `json:"merkle"`

	// Batch is the batch header bytes and the gateway's signature over them.
	Batch BundleSigned `json:"batch"`

	// Gateway is the gateway's public key (SPKI DER).
	Gateway BundleGateway `json:"gateway"`

	// Anchor proves the AnchorBatch tx (the signed header) committed in a
	// block the consortium signed, with result code 0.
	Anchor *AnchorProof `json:"anchor"`

	// Line (after a gateway key rotation only) proves that the keys that
	// registered the device or signed the receipt are predecessors of the
	// gateway's key (line.go).
	Line []BundleLink `json:"line,omitempty"`
}

// BundleRecord names the record a bundle is about.
type BundleRecord struct {
	Gateway device.DID `json:"gateway"`
	GSeq    uint64     `json:"gseq"`
	DID     device.DID `json:"did"`
	Seq     uint64     `json:"seq"`
}

// BundleDevice holds the device's registration on the ledger.
type BundleDevice struct {
	// Tx is the RegisterDevice transaction bytes.
	Tx anchor.Base64 `json:"tx"`
	// Proof proves Tx committed with code 0 in a block the consortium signed.
	Proof *AnchorProof `json:"proof"`
}

// BundleSigned is a signed document: its exact bytes and the DER signature.
type BundleSigned struct {
	Body anchor.Base64 `json:"body"`
	Sig  anchor.Base64 `json:"sig"`
}

// BundleReceipt is the gateway's receipt of the record (docs/internals.md,
// "Records, receipts and leaves"): the receipt body, the statement of its
// commit group, the body's inclusion path in the group's tree (leaf to
// root, empty for a group of one) and the gateway's signature over the
// statement. Without Group it is the older per-record form: Sig is over
// Body and there is no path.
type BundleReceipt struct {
	Body  anchor.Base64 `json:"body"`
	Group anchor.Base64 `json:"group,omitempty"`
	Path  []anchor.Hash `json:"path,omitempty"`
	Sig   anchor.Base64 `json:"sig"`
}

// MarshalJSON writes "path" (possibly []) whenever there is a group, and
// neither member for the per-record form.
func (r BundleReceipt) MarshalJSON() ([]byte, error) {
	if r.Group == nil {
		type perRecord BundleReceipt
		return json.Marshal(perRecord(r))
	}
	path := r.Path
	if path == nil {
		path = []anchor.Hash{}
	}
	return json.Marshal(struct {
		Body  anchor.Base64 `json:"body"`
		Group anchor.Base64 `json:"group"`
		Path  []anchor.Hash `json:"path"`
		Sig   anchor.Base64 `json:"sig"`
	}{r.Body, r.Group, path, r.Sig})
}

// BundleMerkle is an RFC 6962 inclusion proof: the leaf index (gseq -
// first), the tree size (the header's count) and the sibling hashes from the
// leaf up.
type BundleMerkle struct {
	Index uint64        `json:"index"`
	Size  uint64        `json:"size"`
	Path  []anchor.Hash `json:"path"`
}

// BundleGateway is the gateway's public key. The ledger accepted an
// AnchorBatch and a RegisterDevice tx signed by this key only because the key
// belonged to a member gateway, so steps 2 and 9 prove its membership.
type BundleGateway struct {
	DID device.DID    `json:"did"`
	Pub anchor.Base64 `json:"pub"`
}

// Encode returns the bundle as indented JSON.
func (b *Bundle) Encode() ([]byte, error) {
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("anchor: encode bundle: %w", err)
	}
	return append(out, '\n'), nil
}

// ParseBundle decodes a bundle strictly (no unknown or duplicate members)
// and checks that every part is present. It verifies nothing.
func ParseBundle(data []byte) (*Bundle, error) {
	if len(data) > MaxBundleBytes {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrMalformedBundle, len(data), MaxBundleBytes)
	}
	var b Bundle
	// Duplicate members (as encoding/json matches names: case-insensitively)
	// at any depth are refused; light blocks nest deeper than signed bodies.
	if err := device.CheckJSON(data, device.JSONOptions{MaxDepth: 64, FoldCase: true}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedBundle, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedBundle, anchor.LocateBase64Error(data, err))
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data", ErrMalformedBundle)
	}
	// One record, one bundle: every value in its one encoding, no member
	// the format does not have (encoding/json alone would skip line breaks
	// in base64, match member names in any case, and CometBFT's decoder
	// takes hex in either case and skips unknown members).
	canonical, err := json.Marshal(&b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedBundle, err)
	}
	if err := anchor.CheckCanonical(data, canonical); err != nil {
		return nil, fmt.Errorf("%w: not in canonical form: %v", ErrMalformedBundle, err)
	}
	switch {
	case b.Type != BundleType:
		return nil, fmt.Errorf("%w: type %q, want %q", ErrMalformedBundle, b.Type, BundleType)
	case b.V != BundleVersion:
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformedBundle, b.V, BundleVersion)
	case len(b.Envelope) == 0:
		return nil, fmt.Errorf("%w: no envelope", ErrMalformedBundle)
	case len(b.Device.Tx) == 0 || b.Device.Proof == nil:
		return nil, fmt.Errorf("%w: no device registration tx or proof", ErrMalformedBundle)
	case len(b.Receipt.Body) == 0 || len(b.Receipt.Sig) == 0:
		return nil, fmt.Errorf("%w: no receipt", ErrMalformedBundle)
	case len(b.Batch.Body) == 0 || len(b.Batch.Sig) == 0:
		return nil, fmt.Errorf("%w: no batch header", ErrMalformedBundle)
	case len(b.Gateway.Pub) == 0:
		return nil, fmt.Errorf("%w: no gateway key", ErrMalformedBundle)
	case b.Anchor == nil:
		return nil, fmt.Errorf("%w: no anchor proof", ErrMalformedBundle)
	}
	for _, d := range []struct {
		name string
		did  device.DID
	}{{"record.gateway", b.Record.Gateway}, {"record.did", b.Record.DID}, {"gateway.did", b.Gateway.DID}} {
		if _, err := device.ParseDID(string(d.did)); err != nil {
			return nil, fmt.Errorf("%w: %s %q: %v", ErrMalformedBundle, d.name, d.did, err)
		}
	}
	if b.Record.Gateway != b.Gateway.DID {
		return nil, fmt.Errorf("%w: record.gateway %s is not gateway.did %s", ErrMalformedBundle, b.Record.Gateway, b.Gateway.DID)
	}
	return &b, nil
}

// ReadBundleFile reads and parses a bundle file.
func ReadBundleFile(path string) (*Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("anchor: read bundle: %w", err)
	}
	return ParseBundle(data)
}

// Verified is what a bundle proves once every step passed.
type Verified struct {
	Record         BundleRecord
	Kind           string
	DeviceTS       string
	Header         *anchor.BatchHeader
	HeaderHash     anchor.Hash
	RegisterHeight int64
	AnchorHeight   int64
	AnchorTxHash   string
	// BlockTime is the time in block AnchorHeight's header. CometBFT sets
	// it from the votes that committed the block before, so it is often
	// earlier than the record's receive time: it is not when the record
	// was anchored.
	BlockTime string
	// AnchoredBy is the time in the header of block AnchorHeight+1, whose
	// commit signs block AnchorHeight: the record was anchored no later
	// than this (RFC 3339, UTC).
	AnchoredBy string
}

// Verify checks the bundle offline against trust, step by step, calling
// report (if not nil) after each step with its name and its error (nil if it
// passed): first StepTrustFile, then each of Steps. It stops at the first
// failure and returns a *StepError.
func (b *Bundle) Verify(trust *Trust, report func(step string, detail string, err error)) (*Verified, error) {
	v := &verifier{b: b, trust: trust, out: &Verified{}}
	steps := []struct {
		name string
		run  func() (string, error)
	}{
		{StepTrustFile, v.trustFile},
		{StepEnvelope, v.envelope},
		{StepDeviceKey, v.deviceKey},
		{StepReceipt, v.receiptSig},
		{StepLeaf, v.leaf},
		{StepMerklePath, v.merklePath},
		{StepHeaderSig, v.headerSig},
		{StepAnchorTx, v.anchorTx},
		{StepAnchorBlock, v.anchorBlock},
		{StepAnchorResult, v.anchorResult},
	}
	for _, s := range steps {
		detail, err := s.run()
		if report != nil {
			report(s.name, detail, err)
		}
		if err != nil {
			return nil, &StepError{Step: s.name, Err: err}
		}
	}
	return v.out, nil
}

// verifier carries what one step learns to the next.
type verifier struct {
	b     *Bundle
	trust *Trust
	out   *Verified

	devicePub  *ecdsa.PublicKey
	devTx      *anchor.Tx
	reg        *credential.DeviceRegistration
	opened     *device.Opened
	gatewayPub *ecdsa.PublicKey
	rcpt       *anchor.Receipt
	line       map[device.DID]*ecdsa.PublicKey // the proven key line (line.go)
	leafHash   anchor.Hash
	header     *anchor.BatchHeader
	anchorErr  error
}

// trustFile: the trust is valid and, for each block of the bundle that is
// signed by +2/3 of its own validator set, names exactly that set (the
// header's validators_hash). A block that is not so signed is the
// evidence's problem, left to its step.
func (v *verifier) trustFile() (string, error) {
	t := v.trust
	if t == nil {
		return "", errors.New("no trust given")
	}
	if err := t.Validate(); err != nil {
		return "", err
	}
	var heights []string
	for _, p := range []*AnchorProof{v.b.Device.Proof, v.b.Anchor} {
		if p == nil || p.Header == nil || p.Header.Header == nil || p.Header.Commit == nil || p.Validators == nil {
			continue
		}
		ok, err := p.CheckTrust(t)
		if err != nil {
			return "", err
		}
		if ok {
			heights = append(heights, fmt.Sprint(p.Height))
		}
	}
	n := t.Validators.Size()
	d := fmt.Sprintf("chain %s, %s mode, %d %s (hash %X)", t.ChainID, t.Mode, n, plural(n, "validator", "validators"), t.Validators.Hash())
	if len(heights) > 0 {
		d += fmt.Sprintf(", the set of %s %s", plural(len(heights), "block", "blocks"), strings.Join(heights, " and "))
	}
	return d, nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// envelope: the envelope's signature verifies under the key that the
// registration tx names for the envelope's DID.
func (v *verifier) envelope() (string, error) {
	tx, err := anchor.DecodeTx(v.b.Device.Tx)
	if err != nil {
		return "", fmt.Errorf("registration tx: %w", err)
	}
	body, err := anchor.DecodeBody(tx.Body)
	if err != nil {
		return "", fmt.Errorf("registration tx: %w", err)
	}
	rd, ok := body.(*anchor.RegisterDeviceBody)
	if !ok {
		return "", fmt.Errorf("registration tx is a %s, not a %s", tx.Type(), anchor.TypeRegisterDevice)
	}
	reg, pub, err := credential.ParseRegistration(rd.Registration)
	if err != nil {
		return "", fmt.Errorf("registration: %w", err)
	}
	if !device.VerifySignature(pub, rd.Registration, rd.DeviceSig) {
		return "", errors.New("registration: device's proof-of-possession signature does not verify")
	}
	o, err := device.Open(v.b.Envelope, 0)
	if err != nil {
		return "", fmt.Errorf("envelope: %w", err)
	}
	if err := o.VerifySignature(pub); err != nil {
		return "", fmt.Errorf("envelope under the registered key of %s: %w", reg.DID, err)
	}
	if o.Body.DID != v.b.Record.DID || o.Body.Seq != v.b.Record.Seq {
		return "", fmt.Errorf("envelope is %s seq %d, bundle names %s seq %d", o.Body.DID, o.Body.Seq, v.b.Record.DID, v.b.Record.Seq)
	}
	v.devTx, v.reg, v.devicePub, v.opened = tx, reg, pub, o
	v.out.Kind, v.out.DeviceTS = o.Body.Kind, o.Body.TS
	return fmt.Sprintf("%s seq %d (%s, %s)", o.Body.DID, o.Body.Seq, o.Body.Kind, o.Body.TS), nil
}

// deviceKey: the registration tx committed with code 0 in a block signed by
// the trusted validators, signed by the gateway of the bundle.
func (v *verifier) deviceKey() (string, error) {
	gwPub, err := device.ParsePublicKeyDER(v.b.Gateway.Pub)
	if err != nil {
		return "", fmt.Errorf("gateway key: %w", err)
	}
	if !v.b.Gateway.DID.Matches(gwPub) {
		return "", fmt.Errorf("gateway key is %s, bundle names %s", device.DIDFromPublicKey(gwPub), v.b.Gateway.DID)
	}
	v.gatewayPub = gwPub
	p := v.b.Device.Proof
	if p == nil {
		return "", errors.New("no registration proof")
	}
	if err := p.VerifyTx(v.trust, v.b.Device.Tx); err != nil {
		return "", err
	}
	if _, err := v.lineKey(v.devTx.Signer, "registration tx signed"); err != nil {
		return "", err
	}
	v.out.RegisterHeight = p.Height
	return fmt.Sprintf("%s registered by %s at height %d (tx %X)", v.reg.DID, v.devTx.Signer, p.Height, cmttypes.Tx(p.Tx).Hash()), nil
}

// receipt: the gateway signed the receipt (once for its commit group: the
// path leads from the body to the signed statement's root); it names the
// envelope's hash, DID and seq.
func (v *verifier) receiptSig() (string, error) {
	rb := v.b.Receipt
	rpub := v.gatewayPub
	if pr, err := anchor.ParseReceipt(rb.Body); err == nil && pr.Gateway != v.b.Gateway.DID && len(v.b.Line) > 0 {
		if rpub, err = v.lineKey(pr.Gateway, "receipt signed"); err != nil { // a predecessor's receipt (key rotation)
			return "", err
		}
	}
	r, err := anchor.VerifyReceipt(rb.Body, rb.Group, rb.Path, rb.Sig, rpub)
	if err != nil {
		return "", err
	}
	if r.Gateway != device.DIDFromPublicKey(rpub) {
		return "", fmt.Errorf("receipt names gateway %s, bundle %s", r.Gateway, v.b.Gateway.DID)
	}
	if env := anchor.SM3(v.b.Envelope); r.Env != env {
		return "", fmt.Errorf("receipt env %s, envelope hashes to %s", r.Env, env)
	}
	if r.DID != v.opened.Body.DID || r.Seq != v.opened.Body.Seq {
		return "", fmt.Errorf("receipt is for %s seq %d, envelope %s seq %d", r.DID, r.Seq, v.opened.Body.DID, v.opened.Body.Seq)
	}
	if rec := v.b.Record; (r.Gateway != rec.Gateway && rpub == v.gatewayPub) || r.GSeq != rec.GSeq || r.DID != rec.DID || r.Seq != rec.Seq {
		return "", fmt.Errorf("receipt is for gseq %d of gateway %s (device %s seq %d), the bundle's record names gseq %d of %s (device %s seq %d)",
			r.GSeq, r.Gateway, r.DID, r.Seq, rec.GSeq, rec.Gateway, rec.DID, rec.Seq)
	}
	v.rcpt = r
	form := "signed alone (per-record form)"
	if g, err := anchor.ParseReceiptGroup(rb.Group); err == nil {
		form = fmt.Sprintf("in commit group %d..%d signed once", g.First, g.First+g.Count-1)
	}
	return fmt.Sprintf("gseq %d received %s by %s, %s", r.GSeq, r.Recv, r.Gateway, form), nil
}

func (v *verifier) leaf() (string, error) {
	if len(v.b.Salt) != anchor.SaltSize {
		return "", fmt.Errorf("salt of %d bytes, want %d", len(v.b.Salt), anchor.SaltSize)
	}
	v.leafHash = anchor.LeafHash(v.b.Salt, v.b.Receipt.Body)
	return "leaf " + v.leafHash.String(), nil
}

func (v *verifier) merklePath() (string, error) {
	h, err := anchor.ParseHeader(v.b.Batch.Body)
	if err != nil {
		return "", err
	}
	m := v.b.Merkle
	if v.rcpt.GSeq < h.First || v.rcpt.GSeq > h.Last {
		return "", fmt.Errorf("gseq %d outside the batch's records %d..%d", v.rcpt.GSeq, h.First, h.Last)
	}
	if m.Index != v.rcpt.GSeq-h.First {
		return "", fmt.Errorf("leaf index %d, want gseq-first = %d", m.Index, v.rcpt.GSeq-h.First)
	}
	if m.Size != h.Count {
		return "", fmt.Errorf("tree size %d, header count %d", m.Size, h.Count)
	}
	if err := anchor.VerifyInclusion(v.leafHash, m.Index, m.Size, m.Path, h.Root); err != nil {
		return "", err
	}
	v.header = h
	v.out.Header, v.out.HeaderHash = h, h.Hash()
	return fmt.Sprintf("leaf %d of %d → root %s (batch %d)", m.Index, m.Size, h.Root, h.Seq), nil
}

func (v *verifier) headerSig() (string, error) {
	if v.header.Gateway != v.b.Gateway.DID {
		return "", fmt.Errorf("header names gateway %s, bundle %s", v.header.Gateway, v.b.Gateway.DID)
	}
	if !device.VerifySignature(v.gatewayPub, v.b.Batch.Body, v.b.Batch.Sig) {
		return "", fmt.Errorf("header signature does not verify under the key of %s", v.b.Gateway.DID)
	}
	v.out.Record = BundleRecord{Gateway: v.header.Gateway, GSeq: v.rcpt.GSeq, DID: v.rcpt.DID, Seq: v.rcpt.Seq}
	return fmt.Sprintf("batch %d (gseq %d..%d) hash %s", v.header.Seq, v.header.First, v.header.Last, v.out.HeaderHash), nil
}

func (v *verifier) anchorTx() (string, error) {
	if v.b.Anchor == nil {
		return "", errors.New("no anchor proof")
	}
	tx, err := anchor.DecodeTx(v.b.Anchor.Tx)
	if err != nil {
		return "", fmt.Errorf("anchor tx: %w", err)
	}
	if tx.Signer != v.b.Gateway.DID {
		return "", fmt.Errorf("anchor tx signed by %s, not %s", tx.Signer, v.b.Gateway.DID)
	}
	if !bytes.Equal(tx.Body, v.b.Batch.Body) {
		return "", errors.New("anchor tx body is not the batch header")
	}
	if !bytes.Equal(tx.Sig, v.b.Batch.Sig) {
		return "", errors.New("anchor tx signature is not the header signature")
	}
	return "AnchorBatch body and signature = header and signature", nil
}

// anchorBlock runs the AnchorProof checks of the header, the tx proof and
// the next header; a failure of the result part is left to anchorResult.
func (v *verifier) anchorBlock() (string, error) {
	p := v.b.Anchor
	v.anchorErr = p.Verify(v.trust)
	var ve *VerifyError
	if v.anchorErr != nil && !(errors.As(v.anchorErr, &ve) && (ve.Step == StepResult || ve.Step == StepTxCode)) {
		return "", v.anchorErr
	}
	v.out.AnchorHeight = p.Height
	v.out.AnchorTxHash = fmt.Sprintf("%X", cmttypes.Tx(p.Tx).Hash())
	v.out.BlockTime = formatTime(p.Header.Time)
	v.out.AnchoredBy = formatTime(p.NextHeader.Time)
	n := p.Validators.Size()
	return fmt.Sprintf("chain %s height %d, tx %s (index %d), anchored no later than %s (the time of block %d, whose commit signs block %d), validator set of %d %s",
		p.ChainID, p.Height, v.out.AnchorTxHash, p.Index, v.out.AnchoredBy, p.NextHeader.Height, p.Height, n, plural(n, "validator", "validators")), nil
}

// anchorResult: the tx result under the next header's LastResultsHash has
// code 0.
func (v *verifier) anchorResult() (string, error) {
	if v.anchorErr != nil {
		return "", v.anchorErr
	}
	return fmt.Sprintf("code 0, proven under LastResultsHash of block %d", v.b.Anchor.NextHeader.Height), nil
}
