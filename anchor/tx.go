package anchor

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgeanchor/edgeanchor/device"
)

// Body types: the "type" member of every signed JSON document the ledger
// takes (docs/internals.md, "Ledger transactions").
const (
	TypeRegisterDevice = "RegisterDevice"
	TypeRevokeDevice   = "RevokeDevice"
	TypeAnchorBatch    = "AnchorBatch"
)

// Limits on what the ledger stores.
const (
	// MaxTxBytes bounds a whole encoded transaction.
	MaxTxBytes = 16 << 10
	// MaxTextLen bounds free-text members (site, name, reason).
	MaxTextLen = 128
)

// Errors of decoding. Each is wrapped with detail; test with errors.Is.
var (
	// ErrMalformedTx means bytes are not a ledger transaction, or its body is
	// not a well-formed body of its type. The submitter must fix its encoder.
	ErrMalformedTx = errors.New("anchor: malformed ledger transaction")
	// ErrUnknownTxType means the body's "type" names no transaction this
	// ledger knows; the submitter speaks a newer protocol.
	ErrUnknownTxType = errors.New("anchor: unknown transaction type")
)

// Tx is a ledger transaction: a body, the DID of its signer and the signer's
// SM2 signature over the exact body bytes. Encoded as compact JSON
// {"body":"<b64>","signer":"did:ea:…","sig":"<b64 DER>"}.
type Tx struct {
	Body   []byte     `json:"body"`
	Signer device.DID `json:"signer"`
	Sig    []byte     `json:"sig"`

	typ string // body type, set by DecodeTx
}

// EncodeTx signs body with signer and returns the transaction bytes.
func EncodeTx(signer device.Signer, body []byte) ([]byte, error) {
	if len(body) == 0 {
		return nil, fmt.Errorf("%w: empty body", ErrMalformedTx)
	}
	sig, err := signer.Sign(body)
	if err != nil {
		return nil, fmt.Errorf("anchor: sign tx: %w", err)
	}
	return (&Tx{Body: body, Signer: signer.DID(), Sig: sig}).Encode(), nil
}

// Encode returns the compact JSON of tx.
func (tx *Tx) Encode() []byte {
	b, err := json.Marshal(tx)
	if err != nil { // cannot happen: bytes and strings only
		panic("anchor: encode tx: " + err.Error())
	}
	return b
}

// DecodeTx parses transaction bytes strictly: one JSON object, no unknown or
// duplicate members, a well-formed signer DID, non-empty body and signature,
// and a body that is a JSON object with a known "type". It does not check the
// signature: who may sign what is the ledger's business.
func DecodeTx(b []byte) (*Tx, error) {
	if len(b) > MaxTxBytes {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrMalformedTx, len(b), MaxTxBytes)
	}
	tx, ok := decodeCanonicalTx(b)
	if !ok {
		tx = &Tx{}
		if err := decodeStrict(b, tx); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformedTx, err)
		}
	}
	if _, err := device.ParseDID(string(tx.Signer)); err != nil {
		return nil, fmt.Errorf("%w: signer: %v", ErrMalformedTx, err)
	}
	if len(tx.Body) == 0 {
		return nil, fmt.Errorf("%w: empty body", ErrMalformedTx)
	}
	if len(tx.Sig) == 0 {
		return nil, fmt.Errorf("%w: empty sig", ErrMalformedTx)
	}
	typ, err := BodyType(tx.Body)
	if err != nil {
		return nil, err
	}
	tx.typ = typ
	return tx, nil
}

// decodeCanonicalTx decodes the exact layout Encode writes,
// {"body":"…","signer":"…","sig":"…"} with printable ASCII strings and no
// escapes, without the general decoder's duplicate-member walk (a quarter
// of a validator's decoding time). For those bytes encoding/json would give
// the same Tx; anything else reports false and takes the general path
// (FuzzDecodeTx compares the two).
func decodeCanonicalTx(b []byte) (*Tx, bool) {
	rest, ok := bytes.CutPrefix(b, []byte(`{"body":"`))
	body, rest, ok2 := cutPlainString(rest, `,"signer":"`)
	signer, rest, ok3 := cutPlainString(rest, `,"sig":"`)
	sig, rest, ok4 := cutPlainString(rest, `}`)
	if !ok || !ok2 || !ok3 || !ok4 || len(rest) != 0 {
		return nil, false
	}
	tx := &Tx{Signer: device.DID(signer)}
	var err error
	if tx.Body, err = decodeB64(body); err != nil {
		return nil, false
	}
	if tx.Sig, err = decodeB64(sig); err != nil {
		return nil, false
	}
	return tx, true
}

// cutPlainString splits s at its first '"', which must be followed by
// next; the string before it must be printable ASCII without '\\' (so that
// its JSON decoding is itself).
func cutPlainString(s []byte, next string) (str, rest []byte, ok bool) {
	i := bytes.IndexByte(s, '"')
	if i < 0 || !bytes.HasPrefix(s[i+1:], []byte(next)) {
		return nil, nil, false
	}
	for _, c := range s[:i] {
		if c < 0x20 || c > 0x7e || c == '\\' {
			return nil, nil, false
		}
	}
	return s[:i], s[i+1+len(next):], true
}

// decodeB64 decodes like encoding/json decodes a []byte member.
func decodeB64(s []byte) ([]byte, error) {
	out := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(out, s)
	return out[:n], err
}

// Type returns the type of the transaction's body ("" if it has none).
func (tx *Tx) Type() string {
	if tx.typ != "" {
		return tx.typ
	}
	t, _ := BodyType(tx.Body)
	return t
}

// DecodeBody decodes the transaction's body like the package-level
// DecodeBody, without probing its type again.
func (tx *Tx) DecodeBody() (any, error) {
	if tx.typ == "" {
		return DecodeBody(tx.Body)
	}
	return decodeBodyOfType(tx.typ, tx.Body)
}

// VerifySignature reports whether tx.Sig is pub's signature over tx.Body and
// pub is the key of tx.Signer.
func (tx *Tx) VerifySignature(pub *ecdsa.PublicKey) bool {
	return tx.Signer.Matches(pub) && device.VerifySignature(pub, tx.Body, tx.Sig)
}

// BodyHash is SM3 over the body bytes: the ledger refuses a body whose hash
// was applied before.
func (tx *Tx) BodyHash() Hash { return SM3(tx.Body) }

// BodyType reads the "type" member of a body and checks it is known.
func BodyType(body []byte) (string, error) {
	var probe struct {
		Type string `json:"type"`
	}
	if len(body) == 0 || body[0] != '{' {
		return "", fmt.Errorf("%w: body is not a JSON object", ErrMalformedTx)
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return "", fmt.Errorf("%w: body: %v", ErrMalformedTx, err)
	}
	switch probe.Type {
	case TypeProposal, TypeApproval, TypeRegisterDevice, TypeRevokeDevice, TypeAnchorBatch:
		return probe.Type, nil
	case "":
		return "", fmt.Errorf("%w: body has no type", ErrMalformedTx)
	default:
		return "", fmt.Errorf("%w: %q", ErrUnknownTxType, probe.Type)
	}
}

// RegisterDeviceBody registers a device. Signed by the member gateway named
// in Gateway; Registration holds the device-made registration bytes
// (credential.DeviceRegistration, made and parsed by package
// device/credential) and DeviceSig the device's signature over them (proof of possession).
type RegisterDeviceBody struct {
	Type         string     `json:"type"`
	Gateway      device.DID `json:"gateway"`
	Registration []byte     `json:"registration"`
	DeviceSig    []byte     `json:"device_sig"`
	TS           string     `json:"ts"`
}

// RevokeDeviceBody revokes a device. Signed by the gateway that registered it
// or by a regulator named in genesis.
type RevokeDeviceBody struct {
	Type   string     `json:"type"`
	DID    device.DID `json:"did"`
	Reason string     `json:"reason"`
	TS     string     `json:"ts"`
}

// NewRegisterDeviceBody returns the body bytes a gateway signs to register a
// device, given the device's registration bytes and its signature over them.
func NewRegisterDeviceBody(gateway device.DID, registration, deviceSig []byte, ts time.Time) ([]byte, error) {
	return encodeBody(&RegisterDeviceBody{
		Type: TypeRegisterDevice, Gateway: gateway, Registration: registration,
		DeviceSig: deviceSig, TS: FormatTime(ts),
	})
}

// NewRevokeDeviceBody returns the body bytes a gateway or regulator signs to
// revoke a device.
func NewRevokeDeviceBody(did device.DID, reason string, ts time.Time) ([]byte, error) {
	return encodeBody(&RevokeDeviceBody{Type: TypeRevokeDevice, DID: did, Reason: reason, TS: FormatTime(ts)})
}

func encodeBody(v interface{ validate() error }) ([]byte, error) {
	if err := v.validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("anchor: encode body: %w", err)
	}
	return b, nil
}

// DecodeBody parses a body strictly and checks its own members (not the
// ledger state). It returns one of *ProposalBody, *ApprovalBody,
// *RegisterDeviceBody, *RevokeDeviceBody or *BatchHeader.
func DecodeBody(body []byte) (any, error) {
	typ, err := BodyType(body)
	if err != nil {
		return nil, err
	}
	return decodeBodyOfType(typ, body)
}

func decodeBodyOfType(typ string, body []byte) (any, error) {
	var v interface{ validate() error }
	switch typ {
	case TypeAnchorBatch:
		h, err := ParseHeader(body)
		if err != nil {
			return nil, err
		}
		return h, nil
	case TypeProposal:
		v = &ProposalBody{}
	case TypeApproval:
		v = &ApprovalBody{}
	case TypeRegisterDevice:
		v = &RegisterDeviceBody{}
	case TypeRevokeDevice:
		v = &RevokeDeviceBody{}
	}
	if err := decodeStrict(body, v); err != nil {
		return nil, fmt.Errorf("%w: %s body: %v", ErrMalformedTx, typ, err)
	}
	if err := v.validate(); err != nil {
		return nil, err
	}
	return v, nil
}

func (b *RegisterDeviceBody) validate() error {
	if b.Type != TypeRegisterDevice {
		return fmt.Errorf("%w: type %q", ErrMalformedTx, b.Type)
	}
	if _, err := device.ParseDID(string(b.Gateway)); err != nil {
		return fmt.Errorf("%w: RegisterDevice gateway: %v", ErrMalformedTx, err)
	}
	if len(b.Registration) == 0 {
		return fmt.Errorf("%w: RegisterDevice registration is empty", ErrMalformedTx)
	}
	return checkTS(b.TS)
}

func (b *RevokeDeviceBody) validate() error {
	if b.Type != TypeRevokeDevice {
		return fmt.Errorf("%w: type %q", ErrMalformedTx, b.Type)
	}
	if _, err := device.ParseDID(string(b.DID)); err != nil {
		return fmt.Errorf("%w: RevokeDevice did: %v", ErrMalformedTx, err)
	}
	if err := checkText("reason", b.Reason, false); err != nil {
		return err
	}
	return checkTS(b.TS)
}

func checkText(name, s string, required bool) error {
	switch {
	case required && s == "":
		return fmt.Errorf("%w: %s is required", ErrMalformedTx, name)
	case len(s) > MaxTextLen:
		return fmt.Errorf("%w: %s longer than %d bytes", ErrMalformedTx, name, MaxTextLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not UTF-8", ErrMalformedTx, name)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s holds control characters", ErrMalformedTx, name)
		}
	}
	return nil
}

func checkTS(ts string) error {
	if !strings.HasSuffix(ts, "Z") {
		return fmt.Errorf("%w: ts %q is not RFC 3339 UTC (must end in Z)", ErrMalformedTx, ts)
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return fmt.Errorf("%w: ts: %v", ErrMalformedTx, err)
	}
	if t.Year() < 2000 || t.Year() > 9999 {
		return fmt.Errorf("%w: ts %q out of range", ErrMalformedTx, ts)
	}
	return nil
}

// GenesisState is the ledger's genesis app_state:
//
//	{"committee":{"members":["<b64 SPKI DER>"],"threshold":1},
//	 "regulators":["<b64 SPKI DER>"],
//	 "gateways":[{"did":"…","pub":"…","site":"…","name":"…"}]}
type GenesisState struct {
	Committee  Committee        `json:"committee"`
	Regulators [][]byte         `json:"regulators"`
	Gateways   []GenesisGateway `json:"gateways"`
}

// GenesisGateway is a consortium member from the first block.
type GenesisGateway = GatewayAction

// ParseGenesisState decodes app_state strictly and checks every key and DID.
func ParseGenesisState(b []byte) (*GenesisState, error) {
	var g GenesisState
	if err := decodeStrict(b, &g); err != nil {
		return nil, fmt.Errorf("anchor: genesis app_state: %w", err)
	}
	if err := g.Committee.validate(); err != nil {
		return nil, fmt.Errorf("anchor: genesis app_state: committee: %w", err)
	}
	if err := (&RegulatorsAction{Regulators: append([][]byte{}, g.Regulators...)}).validate(); err != nil {
		return nil, fmt.Errorf("anchor: genesis app_state: %w", err)
	}
	seen := map[device.DID]bool{}
	for i, gw := range g.Gateways {
		if err := gw.validate(); err != nil {
			return nil, fmt.Errorf("anchor: genesis app_state: gateway %d: %w", i, err)
		}
		if seen[gw.DID] {
			return nil, fmt.Errorf("anchor: genesis app_state: gateway %s listed twice", gw.DID)
		}
		seen[gw.DID] = true
	}
	return &g, nil
}

// decodeStrict decodes exactly one JSON object with no unknown or duplicate
// members and nothing after it.
func decodeStrict(data []byte, v any) error {
	if err := checkNoDuplicateKeys(data); err != nil {
		return err
	}
	return decodeNoUnknown(data, v)
}

// decodeNoUnknown is decodeStrict without the duplicate-member walk, for
// callers that then require the canonical encoding (which has none).
func decodeNoUnknown(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if len(bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n")) != 0 {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

const maxJSONDepth = 16

// checkNoDuplicateKeys refuses a member named twice, comparing names the
// way encoding/json matches them (case-insensitively), so "did" and "DID"
// cannot both appear.
func checkNoDuplicateKeys(data []byte) error {
	return device.CheckJSON(data, device.JSONOptions{MaxDepth: maxJSONDepth, FoldCase: true})
}
