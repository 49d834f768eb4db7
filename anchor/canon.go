package anchor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/edgeanchor/edgeanchor/device"
)

// Base64 is a byte string that travels in JSON as standard, padded base64
// and is decoded strictly (device.DecodeBase64): one encoding per value,
// as in the envelope. It encodes as encoding/json encodes []byte.
type Base64 []byte

// UnmarshalText decodes the canonical base64 form only.
func (b *Base64) UnmarshalText(t []byte) error {
	out, err := device.DecodeBase64(string(t))
	if err != nil {
		return &base64Error{value: string(t), err: err}
	}
	*b = out
	return nil
}

// HexBytes travels in JSON as lowercase hex.
type HexBytes []byte

// MarshalText encodes b as lowercase hex.
func (b HexBytes) MarshalText() ([]byte, error) {
	return fmt.Appendf(nil, "%x", []byte(b)), nil
}

// UnmarshalText decodes lowercase hex.
func (b *HexBytes) UnmarshalText(t []byte) error {
	out := make([]byte, len(t)/2)
	if len(t)%2 != 0 {
		return fmt.Errorf("hex of odd length %d", len(t))
	}
	for i := 0; i < len(t); i += 2 {
		hi, ok1 := unhex(t[i])
		lo, ok2 := unhex(t[i+1])
		if !ok1 || !ok2 {
			return fmt.Errorf("want lowercase hex digits")
		}
		out[i/2] = hi<<4 | lo
	}
	*b = out
	return nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// base64Error is a Base64 member that is not canonical base64.
// encoding/json does not say which member a TextUnmarshaler failed on;
// LocateBase64Error finds it.
type base64Error struct {
	value string
	err   error
}

func (e *base64Error) Error() string { return "base64: " + e.err.Error() }
func (e *base64Error) Unwrap() error { return e.err }

// LocateBase64Error names the member of data that holds the value a
// *base64Error in err is about: "anchor.tx: base64: line break in base64".
// Other errors are returned as they are.
func LocateBase64Error(data []byte, err error) error {
	var be *base64Error
	if !errors.As(err, &be) {
		return err
	}
	v, derr := decodeGeneric(data)
	if derr != nil {
		return err
	}
	if path := findString("", v, be.value); path != "" {
		return fmt.Errorf("%s: %w", path, be)
	}
	return err
}

// findString is the path of the first string in v equal to s, or "".
func findString(path string, v any, s string) string {
	switch x := v.(type) {
	case string:
		if x == s {
			return path
		}
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(x)) {
			if p := findString(join(path, k), x[k], s); p != "" {
				return p
			}
		}
	case []any:
		for i, e := range x {
			if p := findString(fmt.Sprintf("%s[%d]", path, i), e, s); p != "" {
				return p
			}
		}
	}
	return ""
}

// CheckCanonical reports the first place where the JSON value got differs
// from canonical, the encoding of what got decoded to: a member that the
// format does not have (or does not write when empty), a missing one, or a
// value written in another form than its one encoding (a number such as
// -0, hex in the other case, a time, base64 or a number string written
// another way). Member names are compared exactly; white space and member
// order are not significant, nor are JSON string escapes.
func CheckCanonical(got, canonical []byte) error {
	g, err := decodeGeneric(got)
	if err != nil {
		return err
	}
	c, err := decodeGeneric(canonical)
	if err != nil {
		return fmt.Errorf("canonical form: %w", err)
	}
	return diffJSON("", g, c)
}

func decodeGeneric(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// diffJSON walks want (canonical) and got side by side.
func diffJSON(path string, got, want any) error {
	at := path
	if at == "" {
		at = "the top level"
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object", at)
		}
		for _, k := range slices.Sorted(maps.Keys(g)) {
			if _, ok := w[k]; !ok {
				return fmt.Errorf("%s: member %q is not part of the format (or is written only when not empty)", at, k)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(w)) {
			if _, ok := g[k]; !ok {
				return fmt.Errorf("%s: member %q is missing", at, k)
			}
			if err := diffJSON(join(path, k), g[k], w[k]); err != nil {
				return err
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok {
			return fmt.Errorf("%s: want an array", at)
		}
		if len(g) != len(w) {
			return fmt.Errorf("%s: %d elements, the canonical form has %d", at, len(g), len(w))
		}
		for i := range w {
			if err := diffJSON(fmt.Sprintf("%s[%d]", path, i), g[i], w[i]); err != nil {
				return err
			}
		}
		return nil
	case json.Number:
		if g, ok := got.(json.Number); !ok || g != w {
			return fmt.Errorf("%s: %s is not the canonical form %s", at, short(got), w)
		}
		return nil
	case string:
		g, ok := got.(string)
		if !ok || g != w {
			hint := ""
			if ok && len(g) == len(w) && bytes.EqualFold([]byte(g), []byte(w)) {
				hint = " (letter case differs: CometBFT writes hashes and addresses in upper-case hex)"
			}
			return fmt.Errorf("%s: %s is not the canonical form %s%s", at, short(got), short(w), hint)
		}
		return nil
	default: // bool or nil
		if got != want {
			return fmt.Errorf("%s: %s is not the canonical form %s", at, short(got), short(want))
		}
		return nil
	}
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// short quotes a value for an error message, cut to 48 characters.
func short(v any) string {
	var s string
	switch x := v.(type) {
	case string:
		s = fmt.Sprintf("%q", x)
	case json.Number:
		s = string(x)
	case nil:
		s = "null"
	case map[string]any:
		s = "an object"
	case []any:
		s = "an array"
	default:
		s = fmt.Sprint(x)
	}
	if len(s) > 48 {
		s = s[:45] + "…"
	}
	return s
}
