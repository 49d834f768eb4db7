package device

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"unicode/utf8"

	"github.com/emmansun/gmsm/sm3"
)

// Record kinds a device may publish.
const (
	KindAttendance = "payroll.attendance"
	KindWage       = "payroll.wage"
	KindSurvey     = "survey.point"
	KindDust       = "env.dust"
)

// ErrSchema means a body's data does not fit its kind. The wrapped
// *FieldError names the field.
var ErrSchema = errors.New("schema")

// FieldError says which field of which kind is wrong and why.
type FieldError struct {
	Kind   string
	Field  string
	Reason string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("schema %s: %s", e.Kind, e.Reason)
	}
	return fmt.Sprintf("schema %s: field %q: %s", e.Kind, e.Field, e.Reason)
}

// Unwrap makes errors.Is(err, ErrSchema) hold.
func (e *FieldError) Unwrap() error { return ErrSchema }

type fieldType int

const (
	tText fieldType = iota
	tEnum
	tRef // salted SM3 reference: 64 lowercase hex
	tFen // integer amount in fen
	tNumber
	tPeriod // YYYY-MM
)

type field struct {
	name     string
	typ      fieldType
	enum     []string
	min, max float64
}

// schemas lists each kind's fields. Every field is required and no other
// field is allowed.
var schemas = map[string][]field{
	KindAttendance: {
		{name: "worker", typ: tRef},
		{name: "project", typ: tText},
		{name: "gate", typ: tText},
		{name: "direction", typ: tEnum, enum: []string{"in", "out"}},
		{name: "method", typ: tEnum, enum: []string{"face", "card", "fingerprint"}},
	},
	KindWage: {
		{name: "worker", typ: tRef},
		{name: "period", typ: tPeriod},
		{name: "amount_fen", typ: tFen, min: 1, max: 100_000_000}, // up to ¥1,000,000
		{name: "payer", typ: tText},
		{name: "account", typ: tRef},
	},
	KindSurvey: {
		{name: "instrument", typ: tEnum, enum: []string{"total-station", "gnss-rtk", "level"}},
		{name: "point", typ: tText},
		// CGCS2000 Gauss-Krüger: northing within 0–10,000 km; easting with
		// the zone number prefixed reaches 45,500 km in 3° zones.
		{name: "x_m", typ: tNumber, min: 0, max: 10_000_000},
		{name: "y_m", typ: tNumber, min: 0, max: 46_000_000},
		{name: "h_m", typ: tNumber, min: -500, max: 9_000},
		{name: "h_prec_m", typ: tNumber, min: 0, max: 10},
		{name: "v_prec_m", typ: tNumber, min: 0, max: 10},
		{name: "parcel", typ: tText},
		{name: "operator", typ: tText},
	},
	KindDust: {
		{name: "pm25_ugm3", typ: tNumber, min: 0, max: 1_000},
		{name: "pm10_ugm3", typ: tNumber, min: 0, max: 2_000},
		{name: "noise_dba", typ: tNumber, min: 20, max: 140},
	},
}

// Kinds returns the known record kinds, sorted.
func Kinds() []string {
	out := make([]string, 0, len(schemas))
	for k := range schemas {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// PersonalData reports whether records of kind carry data about a person, so
// that their Merkle leaves must be salted.
func PersonalData(kind string) bool {
	return kind == KindAttendance || kind == KindWage
}

const maxText = 64

var (
	refPattern    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	periodPattern = regexp.MustCompile(`^(19|20|21)[0-9]{2}-(0[1-9]|1[0-2])$`)
	fenPattern    = regexp.MustCompile(`^[0-9]+$`)
)

// ValidateData checks data against the schema of kind: a JSON object (no
// member named twice) holding every field of the kind and no other, each of
// its type and within its range. The error is a *FieldError wrapping
// ErrSchema.
func ValidateData(kind string, data []byte) error {
	fields, ok := schemas[kind]
	if !ok {
		return &FieldError{Kind: kind, Reason: "unknown kind"}
	}
	if validateFast(fields, data) {
		return nil
	}
	return validateStrict(kind, fields, data)
}

// validateStrict is ValidateData for anything validateFast leaves:
// CheckJSON, then encoding/json into a map, then each field in schema
// order, each refusal with its own error.
func validateStrict(kind string, fields []field, data []byte) error {
	if !utf8.Valid(data) {
		return &FieldError{Kind: kind, Reason: "data is not valid UTF-8"}
	}
	if err := CheckJSON(data, JSONOptions{}); err != nil {
		return &FieldError{Kind: kind, Reason: "data is not a JSON object: " + err.Error()}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
		return &FieldError{Kind: kind, Reason: "data is not a JSON object"}
	}
	for _, f := range fields {
		raw, ok := obj[f.name]
		if !ok {
			return &FieldError{Kind: kind, Field: f.name, Reason: "missing"}
		}
		if reason := f.check(raw); reason != "" {
			return &FieldError{Kind: kind, Field: f.name, Reason: reason}
		}
	}
	if len(obj) != len(fields) {
		for name := range obj {
			if !hasField(fields, name) {
				return &FieldError{Kind: kind, Field: name, Reason: "unknown field"}
			}
		}
	}
	return nil
}

// validateFast is ValidateData's fast path, one pass over data: true means
// data holds every field of the kind once, with no escapes in its member
// names and string values, numbers where numbers belong, each within its
// range, and nothing else. False means "leave it to validateStrict".
func validateFast(fields []field, data []byte) bool {
	if len(fields) > 32 || !utf8.Valid(data) {
		return false
	}
	s := fscan{d: data}
	if !s.eat('{') {
		return false
	}
	var seen uint32
	for {
		name, ok := s.plainStr()
		if !ok || !s.eat(':') {
			return false
		}
		k := -1
		for j := range fields {
			if fields[j].name == string(name) {
				k = j
				break
			}
		}
		if k < 0 || seen&(1<<k) != 0 || !fields[k].checkFast(&s) {
			return false
		}
		seen |= 1 << k
		more, ok := s.more('}')
		if !ok {
			return false
		}
		if !more {
			break
		}
	}
	return seen == 1<<len(fields)-1 && s.end()
}

// checkFast scans the value of f at s and reports whether check accepts
// it; false also when the value is of a form left to check.
func (f field) checkFast(s *fscan) bool {
	switch f.typ {
	case tNumber:
		num, ok := s.number()
		if !ok {
			return false
		}
		v, err := strconv.ParseFloat(string(num), 64)
		return err == nil && !math.IsNaN(v) && !math.IsInf(v, 0) && v >= f.min && v <= f.max
	case tFen:
		num, ok := s.number()
		if !ok || len(num) > 18 {
			return false
		}
		var v int64
		for _, c := range num {
			if !isDigit(c) {
				return false
			}
			v = v*10 + int64(c-'0')
		}
		return float64(v) >= f.min && float64(v) <= f.max
	}
	str, ok := s.plainStr()
	if !ok {
		return false
	}
	switch f.typ {
	case tText:
		// No escapes: no control character below 0x20 either.
		return len(str) > 0 && len(str) <= maxText && !slices.Contains(str, 0x7f)
	case tEnum:
		return slices.Contains(f.enum, string(str))
	case tRef:
		if len(str) != 64 {
			return false
		}
		for _, c := range str {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
		return true
	case tPeriod:
		return len(str) == 7 &&
			(str[0] == '1' && str[1] == '9' || str[0] == '2' && (str[1] == '0' || str[1] == '1')) &&
			isDigit(str[2]) && isDigit(str[3]) && str[4] == '-' &&
			(str[5] == '0' && '1' <= str[6] && str[6] <= '9' || str[5] == '1' && '0' <= str[6] && str[6] <= '2')
	}
	return false
}

func hasField(fields []field, name string) bool {
	for _, f := range fields {
		if f.name == name {
			return true
		}
	}
	return false
}

func (f field) check(raw json.RawMessage) string {
	switch f.typ {
	case tNumber:
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil || len(raw) == 0 || raw[0] == '"' {
			return "must be a number"
		}
		v, err := strconv.ParseFloat(string(n), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return "must be a finite number"
		}
		if v < f.min || v > f.max {
			return fmt.Sprintf("%v out of range [%v, %v]", v, f.min, f.max)
		}
		return ""
	case tFen:
		s := string(raw)
		if !fenPattern.MatchString(s) {
			return "must be a whole number of fen (no fraction, sign or exponent)"
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || float64(v) < f.min || float64(v) > f.max {
			return fmt.Sprintf("%s out of range [%v, %v]", s, f.min, f.max)
		}
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "must be a string"
	}
	switch f.typ {
	case tText:
		if s == "" {
			return "must not be empty"
		}
		if len(s) > maxText || !utf8.ValidString(s) {
			return fmt.Sprintf("must be valid UTF-8 of at most %d bytes", maxText)
		}
		for _, r := range s {
			if r < 0x20 || r == 0x7f {
				return "must not hold control characters"
			}
		}
	case tEnum:
		for _, e := range f.enum {
			if s == e {
				return ""
			}
		}
		return fmt.Sprintf("%q is not one of %v", s, f.enum)
	case tRef:
		if !refPattern.MatchString(s) {
			return "must be a salted SM3 reference (64 lowercase hex digits), never a raw identifier"
		}
	case tPeriod:
		if !periodPattern.MatchString(s) {
			return "must be a pay period YYYY-MM"
		}
	}
	return ""
}

// PersonRef makes the reference a device publishes instead of a raw
// identifier (an ID-card number, a bank account): lowercase hex of
// SM3(salt ‖ id). The salt is the site's secret; without it a low-entropy
// identifier cannot be recovered from the reference.
func PersonRef(salt []byte, id string) string {
	h := sm3.New()
	h.Write(salt)
	h.Write([]byte(id))
	return hex.EncodeToString(h.Sum(nil))
}
