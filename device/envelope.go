package device

import (
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgeanchor/edgeanchor/device/refusal"
)

// Envelope constants: the only version and algorithm this code speaks, and the
// default ceiling on the body size.
const (
	EnvelopeVersion = 1
	AlgSM2SM3       = "SM2-SM3"
	DefaultMaxBody  = 16 << 10
)

// Reasons a message fails verification. Each is wrapped with detail; test
// with errors.Is and turn into a metric label with Reason.
var (
	// ErrMalformed: the envelope or body is not the JSON (or base64) the
	// format requires. The sender must fix its encoder.
	ErrMalformed = errors.New("malformed envelope")
	// ErrVersion: "v" is not 1. The sender speaks a newer format.
	ErrVersion = errors.New("unknown envelope version")
	// ErrAlgorithm: "alg" is not SM2-SM3.
	ErrAlgorithm = errors.New("unknown signature algorithm")
	// ErrTooLarge: the body exceeds the configured maximum.
	ErrTooLarge = errors.New("body too large")
	// ErrTimestamp: "ts" is not an RFC 3339 UTC time.
	ErrTimestamp = errors.New("bad timestamp")
	// ErrDIDMismatch: the body names a DID that is not the key's.
	ErrDIDMismatch = errors.New("body DID does not match the key")
	// ErrSignature: the signature does not verify over the body bytes.
	ErrSignature = errors.New("bad signature")
)

// Envelope is the MQTT payload a device publishes. Body holds the exact bytes
// that were signed; Sig the DER signature over them.
type Envelope struct {
	V    int    `json:"v"`
	Alg  string `json:"alg"`
	Body []byte `json:"body"`
	Sig  []byte `json:"sig"`
}

// Body is the parsed content of an envelope body.
type Body struct {
	DID  DID             `json:"did"`
	Seq  uint64          `json:"seq"`
	TS   string          `json:"ts"`
	Kind string          `json:"kind"`
	Data json.RawMessage `json:"data"`
}

// Time returns the device timestamp. Valid only after ParseBody succeeded.
func (b *Body) Time() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, b.TS)
	return t
}

// Opened is an envelope whose structure and body have been checked but whose
// signature has not: the caller looks the key up by Body.DID and then calls
// VerifySignature. Body.Data may share memory with Envelope.Body (both
// are read-only views of the decoded body bytes).
type Opened struct {
	Envelope Envelope
	Body     Body
}

// NewBody encodes a body as compact JSON, the bytes a device signs.
func NewBody(did DID, seq uint64, ts time.Time, kind string, data any) ([]byte, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("device: encode data: %w", err)
	}
	return json.Marshal(Body{DID: did, Seq: seq, TS: ts.UTC().Format(time.RFC3339Nano), Kind: kind, Data: raw})
}

// Seal signs body with s and returns the envelope JSON.
func Seal(s Signer, body []byte) ([]byte, error) {
	sig, err := s.Sign(body)
	if err != nil {
		return nil, err
	}
	return json.Marshal(Envelope{V: EnvelopeVersion, Alg: AlgSM2SM3, Body: body, Sig: sig})
}

// Open decodes raw and checks everything but the signature and the schema of
// the data: the envelope's shape, version and algorithm, the body size, and
// the body's fields. maxBody <= 0 means DefaultMaxBody.
func Open(raw []byte, maxBody int) (*Opened, error) {
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	// base64 grows data by 4/3; anything far past that cannot hold a legal body.
	if len(raw) > maxBody*4/3+maxBody/2+1024 {
		return nil, fmt.Errorf("%w: envelope of %d bytes (body limit %d)", ErrTooLarge, len(raw), maxBody)
	}
	if o := openFast(raw, maxBody); o != nil {
		return o, nil
	}
	return openStrict(raw, maxBody)
}

// openStrict is Open past the size check for anything openFast leaves:
// CheckJSON, then encoding/json, then the field checks, each refusal with
// its own error.
func openStrict(raw []byte, maxBody int) (*Opened, error) {
	var o Opened
	if err := CheckJSON(raw, JSONOptions{Top: envelopeKeys}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var w struct {
		V    int    `json:"v"`
		Alg  string `json:"alg"`
		Body string `json:"body"`
		Sig  string `json:"sig"`
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	e := &o.Envelope
	e.V, e.Alg = w.V, w.Alg
	var err error
	if e.Body, err = decodeBase64(w.Body); err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrMalformed, err)
	}
	if e.Sig, err = decodeBase64(w.Sig); err != nil {
		return nil, fmt.Errorf("%w: sig: %v", ErrMalformed, err)
	}
	if e.V != EnvelopeVersion {
		return nil, fmt.Errorf("%w: %d", ErrVersion, e.V)
	}
	if e.Alg != AlgSM2SM3 {
		return nil, fmt.Errorf("%w: %q", ErrAlgorithm, e.Alg)
	}
	if len(e.Body) > maxBody {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, len(e.Body), maxBody)
	}
	if len(e.Body) == 0 || len(e.Sig) == 0 {
		return nil, fmt.Errorf("%w: empty body or sig", ErrMalformed)
	}
	if err := parseBodyStrict(e.Body, &o.Body); err != nil {
		return nil, err
	}
	return &o, nil
}

// Member names of the envelope and of the body, exactly as they must be
// spelt. encoding/json matches names case-insensitively; a signed document
// must mean one thing to every parser, so other spellings are refused.
var (
	envelopeKeys = []string{"v", "alg", "body", "sig"}
	bodyKeys     = []string{"did", "seq", "ts", "kind", "data"}
)

// ParseBody decodes body bytes into b and checks its fields: a JSON object
// of valid UTF-8 with exactly the members did, seq, ts, kind and data, no
// member named twice, a well-formed DID, seq >= 1, ts in RFC 3339 UTC and data
// a JSON object. It does not check data against the kind's schema
// (ValidateData does).
func ParseBody(body []byte, b *Body) error {
	var f fastBody
	if b != nil && parseBodyFast(body, &f) {
		f.store(b, true)
		return nil
	}
	return parseBodyStrict(body, b)
}

// parseBodyStrict is ParseBody for anything parseBodyFast leaves.
func parseBodyStrict(body []byte, b *Body) error {
	if !utf8.Valid(body) {
		return fmt.Errorf("%w: body is not valid UTF-8", ErrMalformed)
	}
	if err := CheckJSON(body, JSONOptions{Top: bodyKeys}); err != nil {
		return fmt.Errorf("%w: body: %v", ErrMalformed, err)
	}
	if err := json.Unmarshal(body, b); err != nil {
		return fmt.Errorf("%w: body: %v", ErrMalformed, err)
	}
	if _, err := ParseDID(string(b.DID)); err != nil {
		return fmt.Errorf("%w: body did: %v", ErrMalformed, err)
	}
	if b.Seq == 0 {
		return fmt.Errorf("%w: body seq must start at 1", ErrMalformed)
	}
	if b.Kind == "" {
		return fmt.Errorf("%w: body kind missing", ErrMalformed)
	}
	if len(b.Data) == 0 || b.Data[0] != '{' {
		return fmt.Errorf("%w: body data must be a JSON object", ErrMalformed)
	}
	if err := checkTimestamp(b.TS); err != nil {
		return err
	}
	return nil
}

// tsShape reports whether ts is RFC 3339 date-time in UTC with an
// upper-case T and Z and at most nanosecond precision, digit by digit:
// YYYY-MM-DDThh:mm:ss[.fraction]Z (the ranges are time.Parse's to check).
// time.Parse alone also takes a comma before the fraction.
func tsShape[T string | []byte](ts T) bool {
	const shape = "0000-00-00T00:00:00"
	n := len(ts)
	if n < len(shape)+1 || n > len(shape)+11 || ts[n-1] != 'Z' {
		return false
	}
	for i := 0; i < len(shape); i++ {
		if shape[i] == '0' {
			if !isDigit(ts[i]) {
				return false
			}
		} else if ts[i] != shape[i] {
			return false
		}
	}
	frac := ts[len(shape) : n-1]
	if len(frac) == 0 {
		return true
	}
	if len(frac) < 2 || frac[0] != '.' {
		return false
	}
	for i := 1; i < len(frac); i++ {
		if !isDigit(frac[i]) {
			return false
		}
	}
	return true
}

func tsYearOK(t time.Time) bool { return t.Year() >= 2000 && t.Year() <= 9999 }

func checkTimestamp(ts string) error {
	if !tsShape(ts) {
		return fmt.Errorf("%w: %q is not RFC 3339 UTC (YYYY-MM-DDThh:mm:ss[.fraction]Z)", ErrTimestamp, ts)
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return fmt.Errorf("%w: %q: %v", ErrTimestamp, ts, err)
	}
	if !tsYearOK(t) {
		return fmt.Errorf("%w: %q out of range", ErrTimestamp, ts)
	}
	return nil
}

// VerifySignature checks that the body names pub's DID and that the signature
// verifies over the exact body bytes.
func (o *Opened) VerifySignature(pub *ecdsa.PublicKey) error {
	if pub == nil {
		return fmt.Errorf("%w: no public key to verify with", ErrSignature)
	}
	if !o.Body.DID.Matches(pub) {
		return fmt.Errorf("%w: body names %s, key is %s", ErrDIDMismatch, o.Body.DID, DIDFromPublicKey(pub))
	}
	if !VerifySignature(pub, o.Envelope.Body, o.Envelope.Sig) {
		return ErrSignature
	}
	return nil
}

// Verify opens raw, checks the signature against pub and the data against
// its kind's schema. It is what `edgeanchor envelope verify` runs.
func Verify(raw []byte, pub *ecdsa.PublicKey, maxBody int) (*Opened, error) {
	o, err := Open(raw, maxBody)
	if err != nil {
		return nil, err
	}
	if err := ValidateData(o.Body.Kind, o.Body.Data); err != nil {
		return nil, err
	}
	if err := o.VerifySignature(pub); err != nil {
		return nil, err
	}
	return o, nil
}

// Reason names the way err failed for logs and metric labels (a Publish
// reason of device/refusal): one of
// malformed, version, algorithm, too_large, timestamp, did_mismatch,
// signature, schema, or "other".
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrMalformed):
		return refusal.Malformed
	case errors.Is(err, ErrVersion):
		return refusal.Version
	case errors.Is(err, ErrAlgorithm):
		return refusal.Algorithm
	case errors.Is(err, ErrTooLarge):
		return refusal.TooLarge
	case errors.Is(err, ErrTimestamp):
		return refusal.Timestamp
	case errors.Is(err, ErrDIDMismatch):
		return refusal.DIDMismatch
	case errors.Is(err, ErrSignature):
		return refusal.Signature
	case errors.Is(err, ErrSchema):
		return refusal.Schema
	default:
		return "other"
	}
}

// decodeBase64 accepts only the canonical standard encoding: padded, the
// unused bits of the last character zero, no line breaks (which
// encoding/base64 would otherwise skip). Each byte string then has exactly
// one envelope form.
func decodeBase64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("line break in base64")
	}
	return strictB64.DecodeString(s)
}

// DecodeBase64 decodes a byte string of a signed document or of evidence
// about one (a proof bundle) in its only accepted form: standard base64,
// padded, the unused bits of the last character zero, no line breaks.
func DecodeBase64(s string) ([]byte, error) { return decodeBase64(s) }

// EncodeSig is the base64 form of a signature as it appears in JSON.
func EncodeSig(sig []byte) string { return base64.StdEncoding.EncodeToString(sig) }
