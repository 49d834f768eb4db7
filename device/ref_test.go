package device

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// The reference: Open and ParseBody as they were before the single-pass
// decoders (commit e0fab0c), kept verbatim but for the names so that the
// differential fuzz targets (diff_fuzz_test.go) can hold the current code
// to them (the strict path's timestamp check changed too: the reference
// keeps the old regular expression). CheckJSON and the schema's strict
// path are shared: they did not change.

func refOpen(raw []byte, maxBody int) (*Opened, error) {
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	if len(raw) > maxBody*4/3+maxBody/2+1024 {
		return nil, fmt.Errorf("%w: envelope of %d bytes (body limit %d)", ErrTooLarge, len(raw), maxBody)
	}
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
	if e.Body, err = refDecodeBase64(w.Body); err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrMalformed, err)
	}
	if e.Sig, err = refDecodeBase64(w.Sig); err != nil {
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
	if err := refParseBody(e.Body, &o.Body); err != nil {
		return nil, err
	}
	return &o, nil
}

func refParseBody(body []byte, b *Body) error {
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
	if err := refCheckTimestamp(b.TS); err != nil {
		return err
	}
	return nil
}

var refTSPattern = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$`)

func refCheckTimestamp(ts string) error {
	if !refTSPattern.MatchString(ts) {
		return fmt.Errorf("%w: %q is not RFC 3339 UTC (YYYY-MM-DDThh:mm:ss[.fraction]Z)", ErrTimestamp, ts)
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return fmt.Errorf("%w: %q: %v", ErrTimestamp, ts, err)
	}
	if t.Year() < 2000 || t.Year() > 9999 {
		return fmt.Errorf("%w: %q out of range", ErrTimestamp, ts)
	}
	return nil
}

func refDecodeBase64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("line break in base64")
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}

// refValidateData is validateStrict: the schema's strict path (field.check)
// did not change with the fast path, so it is its own reference.
func refValidateData(kind string, data []byte) error {
	fields, ok := schemas[kind]
	if !ok {
		return &FieldError{Kind: kind, Reason: "unknown kind"}
	}
	return validateStrict(kind, fields, data)
}
