package device

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"unicode"
	"unicode/utf8"
)

// DefaultJSONDepth is the deepest nesting CheckJSON accepts when
// JSONOptions.MaxDepth is 0; signed bodies and envelopes use it.
const DefaultJSONDepth = 32

// JSONOptions tunes CheckJSON. The zero value checks for exactly repeated
// member names down to DefaultJSONDepth.
type JSONOptions struct {
	// MaxDepth is the deepest nesting accepted (the top-level value is at
	// depth 0); 0 means DefaultJSONDepth.
	MaxDepth int
	// FoldCase counts two member names as the same member when
	// encoding/json would match them to the same struct field: equal under
	// Unicode simple case folding (bytes.EqualFold), so "did" and "DID" are
	// a duplicate. Without it only names equal after unescaping are.
	FoldCase bool
	// Top, when not nil, is the list of the only member names (compared
	// exactly) accepted in the top-level object.
	Top []string
}

// CheckJSON walks one JSON value and refuses objects that name a member
// twice (parsers differ on which one wins, and a signed body must mean one
// thing to everyone), nesting deeper than opts.MaxDepth, anything but white
// space after the value and, when opts.Top is not nil, a top-level member
// whose name is not exactly one of opts.Top (encoding/json alone matches
// names case-insensitively).
//
// It only finds member names; the syntax of the whole value is checked by the
// json.Unmarshal (or Decoder.Decode) that should follow it. On input that is
// not JSON it returns some error or none, but always returns.
func CheckJSON(data []byte, opts JSONOptions) error {
	s := scanner{d: data, max: opts.MaxDepth, fold: opts.FoldCase, top: opts.Top}
	if s.max <= 0 {
		s.max = DefaultJSONDepth
	}
	i, err := s.value(skipSpace(data, 0), 0)
	if err != nil {
		return err
	}
	if i = skipSpace(data, i); i != len(data) {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

// scanner holds one CheckJSON call's input and options.
type scanner struct {
	d    []byte
	max  int
	fold bool
	top  []string
}

var errEOF = errors.New("unexpected end of JSON input")

func skipSpace(d []byte, i int) int {
	for i < len(d) && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r') {
		i++
	}
	return i
}

// value scans the value starting at d[i] and returns the index after it.
func (s *scanner) value(i, depth int) (int, error) {
	d := s.d
	if depth > s.max {
		return 0, errors.New("JSON nested too deeply")
	}
	if i >= len(d) {
		return 0, errEOF
	}
	switch d[i] {
	case '{':
		return s.object(i+1, depth)
	case '[':
		i = skipSpace(d, i+1)
		if i < len(d) && d[i] == ']' {
			return i + 1, nil
		}
		for {
			var err error
			if i, err = s.value(skipSpace(d, i), depth+1); err != nil {
				return 0, err
			}
			var end bool
			if i, end, err = next(d, i, ']', "in array"); err != nil || end {
				return i, err
			}
		}
	case '"':
		_, j, err := scanString(d, i)
		return j, err
	default:
		// A number or literal: its syntax is json.Unmarshal's business.
		j := i
		for j < len(d) && !isDelim(d[j]) {
			j++
		}
		if j == i {
			return 0, fmt.Errorf("invalid character %q looking for a value", d[i])
		}
		return j, nil
	}
}

func isDelim(c byte) bool {
	switch c {
	case ',', '}', ']', ':', '"', '{', '[', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}

// object scans the members of an object whose '{' is at d[i-1].
func (s *scanner) object(i, depth int) (int, error) {
	d := s.d
	i = skipSpace(d, i)
	if i < len(d) && d[i] == '}' {
		return i + 1, nil
	}
	var (
		names []string // objects here are small; a map past 16 members
		set   map[string]bool
	)
	for {
		if i >= len(d) {
			return 0, errEOF
		}
		if d[i] != '"' {
			return 0, fmt.Errorf("invalid character %q looking for a member name", d[i])
		}
		raw, j, err := scanString(d, i)
		if err != nil {
			return 0, err
		}
		name, err := memberName(raw)
		if err != nil {
			return 0, err
		}
		if depth == 0 && s.top != nil && !slices.Contains(s.top, name) {
			return 0, fmt.Errorf("unknown member %q", name)
		}
		if s.fold {
			name = foldName(name)
		}
		if set != nil {
			if set[name] {
				return 0, fmt.Errorf("duplicate key %q", name)
			}
			set[name] = true
		} else {
			if slices.Contains(names, name) {
				return 0, fmt.Errorf("duplicate key %q", name)
			}
			if names = append(names, name); len(names) > 16 {
				set = make(map[string]bool, 2*len(names))
				for _, n := range names {
					set[n] = true
				}
			}
		}
		i = skipSpace(d, j)
		if i >= len(d) {
			return 0, errEOF
		}
		if d[i] != ':' {
			return 0, fmt.Errorf("invalid character %q after member name", d[i])
		}
		if i, err = s.value(skipSpace(d, i+1), depth+1); err != nil {
			return 0, err
		}
		var end bool
		if i, end, err = next(d, i, '}', "after object member"); err != nil || end {
			return i, err
		}
		i = skipSpace(d, i)
	}
}

// next looks past an element of an array or object at d[i:] for the ','
// before another element (it returns the index after the ',') or for the
// closing byte end (it returns the index after it and true).
func next(d []byte, i int, end byte, where string) (int, bool, error) {
	i = skipSpace(d, i)
	if i >= len(d) {
		return 0, false, errEOF
	}
	switch d[i] {
	case ',':
		return i + 1, false, nil
	case end:
		return i + 1, true, nil
	}
	return 0, false, fmt.Errorf("invalid character %q %s", d[i], where)
}

// scanString returns the string token starting at d[i] (quotes included)
// and the index after it.
func scanString(d []byte, i int) ([]byte, int, error) {
	for j := i + 1; j < len(d); j++ {
		switch d[j] {
		case '\\':
			j++ // the escaped byte cannot end the string
		case '"':
			return d[i : j+1], j + 1, nil
		}
	}
	return nil, 0, errEOF
}

// memberName is the unescaped name of a string token, so that "s\u0065q"
// and "seq" count as the same member, as they do to every JSON parser.
func memberName(tok []byte) (string, error) {
	if !slices.Contains(tok, '\\') {
		return string(tok[1 : len(tok)-1]), nil
	}
	var s string
	if err := json.Unmarshal(tok, &s); err != nil {
		return "", fmt.Errorf("bad member name %s: %v", tok, err)
	}
	return s, nil
}

// foldName maps every name in one bytes.EqualFold class to the same string,
// as encoding/json does when it matches member names to struct fields: ASCII
// letters to upper case, any other rune to the smallest rune of its simple
// folding orbit.
func foldName(name string) string {
	var b []byte
	for i := 0; i < len(name); {
		c := name[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			b = append(b, c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(name[i:])
		b = utf8.AppendRune(b, foldRune(r))
		i += n
	}
	return string(b)
}

// foldRune is the smallest rune of r's simple folding orbit.
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}
