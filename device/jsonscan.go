package device

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// checkJSON walks one JSON value and refuses objects that name a member
// twice (parsers differ on which one wins, and a signed body must mean one
// thing to everyone), nesting deeper than maxJSONDepth and, when top is not
// nil, a top-level member whose name is not exactly one of top
// (encoding/json alone matches names case-insensitively).
//
// It only finds member names; the syntax of the whole value, including
// anything after it, is checked by the json.Unmarshal that follows it. On
// input that is not JSON it returns some error or none, but always returns.
func checkJSON(data []byte, top []string) error {
	i, err := scanValue(data, skipSpace(data, 0), 0, top)
	if err != nil {
		return err
	}
	if i = skipSpace(data, i); i != len(data) {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

const maxJSONDepth = 32

var errEOF = errors.New("unexpected end of JSON input")

func skipSpace(d []byte, i int) int {
	for i < len(d) && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r') {
		i++
	}
	return i
}

// scanValue scans the value starting at d[i] and returns the index after it.
func scanValue(d []byte, i, depth int, top []string) (int, error) {
	if depth > maxJSONDepth {
		return 0, errors.New("JSON nested too deeply")
	}
	if i >= len(d) {
		return 0, errEOF
	}
	switch d[i] {
	case '{':
		return scanObject(d, i+1, depth, top)
	case '[':
		i = skipSpace(d, i+1)
		if i < len(d) && d[i] == ']' {
			return i + 1, nil
		}
		for {
			var err error
			if i, err = scanValue(d, skipSpace(d, i), depth+1, nil); err != nil {
				return 0, err
			}
			i = skipSpace(d, i)
			if i >= len(d) {
				return 0, errEOF
			}
			switch d[i] {
			case ',':
				i++
			case ']':
				return i + 1, nil
			default:
				return 0, fmt.Errorf("invalid character %q in array", d[i])
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

// scanObject scans the members of an object whose '{' is at d[i-1].
func scanObject(d []byte, i, depth int, top []string) (int, error) {
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
		if depth == 0 && top != nil && !slices.Contains(top, name) {
			return 0, fmt.Errorf("unknown member %q", name)
		}
		i = skipSpace(d, j)
		if i >= len(d) {
			return 0, errEOF
		}
		if d[i] != ':' {
			return 0, fmt.Errorf("invalid character %q after member name", d[i])
		}
		if i, err = scanValue(d, skipSpace(d, i+1), depth+1, nil); err != nil {
			return 0, err
		}
		i = skipSpace(d, i)
		if i >= len(d) {
			return 0, errEOF
		}
		switch d[i] {
		case ',':
			i = skipSpace(d, i+1)
		case '}':
			return i + 1, nil
		default:
			return 0, fmt.Errorf("invalid character %q after object member", d[i])
		}
	}
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
