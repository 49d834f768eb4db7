package device

import (
	"bytes"
	"encoding/base64"
	"strings"
	"time"
	"unicode/utf8"
)

// The fast paths of Open, ParseBody and ValidateData: one pass over the
// bytes for the shapes devices actually send (exact member names without
// escapes, each once; strings without escapes where a value is used as a
// string; canonical base64). Each either accepts, producing exactly what
// the strict path (encoding/json after CheckJSON) would, or gives up and
// leaves the input to the strict path, which then accepts or refuses it
// with its own error. A fast path never refuses anything itself, so
// errors and reasons are the strict path's by construction; the
// differential fuzz targets (diff_fuzz_test.go) check that what it
// accepts, the reference accepts the same.

// fscan is a validating JSON scanner over d. Every method returns false
// (give up) on anything it does not accept: bad syntax, or syntax that is
// valid but left to the strict path.
type fscan struct {
	d []byte
	i int
}

func (s *fscan) ws() {
	for s.i < len(s.d) {
		switch s.d[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// eat consumes c, after white space.
func (s *fscan) eat(c byte) bool {
	s.ws()
	if s.i < len(s.d) && s.d[s.i] == c {
		s.i++
		return true
	}
	return false
}

// more reads what follows a member or element, after white space: ','
// (true, true) or the closing byte end (false, true).
func (s *fscan) more(end byte) (more, ok bool) {
	s.ws()
	if s.i < len(s.d) {
		switch s.d[s.i] {
		case ',':
			s.i++
			return true, true
		case end:
			s.i++
			return false, true
		}
	}
	return false, false
}

// str scans a string token at s.d[s.i] (after white space) and returns its
// content between the quotes and whether it holds escapes. Escapes are
// checked for syntax as encoding/json does (\uXXXX with any four hex digits,
// lone surrogates included); bytes below 0x20 are refused; the UTF-8 of the
// content is the caller's business.
func (s *fscan) str() (content []byte, escaped, ok bool) {
	s.ws()
	d := s.d
	if s.i >= len(d) || d[s.i] != '"' {
		return nil, false, false
	}
	start := s.i + 1
	for j := start; j < len(d); j++ {
		for j < len(d) && plainByte[d[j]] {
			j++
		}
		if j == len(d) {
			break
		}
		c := d[j]
		switch {
		case c == '"':
			s.i = j + 1
			return d[start:j], escaped, true
		case c < 0x20:
			return nil, false, false
		case c == '\\':
			escaped = true
			j++
			if j >= len(d) {
				return nil, false, false
			}
			switch d[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(d) {
					return nil, false, false
				}
				for k := j + 1; k <= j+4; k++ {
					if !isHex(d[k]) {
						return nil, false, false
					}
				}
				j += 4
			default:
				return nil, false, false
			}
		}
	}
	return nil, false, false
}

// plainByte marks the bytes that stand for themselves inside a string:
// all but '"', '\\' and those below 0x20.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plainStr is str for a string that must hold no escapes.
func (s *fscan) plainStr() ([]byte, bool) {
	c, esc, ok := s.str()
	return c, ok && !esc
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// number scans a JSON number token (after white space):
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? followed by a byte that
// cannot continue a token (checked by the caller's next step).
func (s *fscan) number() ([]byte, bool) {
	s.ws()
	d, i := s.d, s.i
	start := i
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && '1' <= d[i] && d[i] <= '9':
		for i++; i < len(d) && isDigit(d[i]); i++ {
		}
	default:
		return nil, false
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) || !isDigit(d[i]) {
			return nil, false
		}
		for i++; i < len(d) && isDigit(d[i]); i++ {
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || !isDigit(d[i]) {
			return nil, false
		}
		for i++; i < len(d) && isDigit(d[i]); i++ {
		}
	}
	s.i = i
	return d[start:i], true
}

// literal consumes lit (true, false or null).
func (s *fscan) literal(lit string) bool {
	if len(s.d)-s.i >= len(lit) && string(s.d[s.i:s.i+len(lit)]) == lit {
		s.i += len(lit)
		return true
	}
	return false
}

// fastMaxMembers is the most members an object may have on the fast path;
// the duplicate check is pairwise.
const fastMaxMembers = 16

// value scans any JSON value at depth (the top-level value is at depth 0)
// and gives up past DefaultJSONDepth, on a member name with escapes, on an
// object of more than fastMaxMembers members and on a repeated member name.
func (s *fscan) value(depth int) bool {
	if depth > DefaultJSONDepth {
		return false
	}
	s.ws()
	if s.i >= len(s.d) {
		return false
	}
	switch c := s.d[s.i]; c {
	case '{':
		return s.object(depth)
	case '[':
		s.i++
		if s.eat(']') {
			return true
		}
		for {
			if !s.value(depth + 1) {
				return false
			}
			more, ok := s.more(']')
			if !ok {
				return false
			}
			if !more {
				return true
			}
		}
	case '"':
		_, _, ok := s.str()
		return ok
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	default:
		_, ok := s.number()
		return ok
	}
}

// object scans an object whose '{' is at s.d[s.i].
func (s *fscan) object(depth int) bool {
	s.i++
	if s.eat('}') {
		return true
	}
	var names [fastMaxMembers][]byte
	n := 0
	for {
		name, ok := s.plainStr()
		if !ok || n == fastMaxMembers {
			return false
		}
		for _, prev := range names[:n] {
			if string(prev) == string(name) {
				return false
			}
		}
		names[n] = name
		n++
		if !s.eat(':') || !s.value(depth+1) {
			return false
		}
		more, ok := s.more('}')
		if !ok {
			return false
		}
		if !more {
			return true
		}
	}
}

// end reports whether only white space is left.
func (s *fscan) end() bool {
	s.ws()
	return s.i == len(s.d)
}

// strictB64 is the canonical standard encoding (Strict allocates a copy of
// the encoding on every call).
var strictB64 = base64.StdEncoding.Strict()

// b64Value scans a string member value meant for base64 up to the next
// '"', with no raw line break in it (encoding/base64 would skip those, and
// JSON does not allow them in a string). Every other byte that JSON does
// not take as itself in a string ('\\' and the rest below 0x20) is outside
// the base64 alphabet: the caller's strict decode refuses it.
func (s *fscan) b64Value() ([]byte, bool) {
	s.ws()
	d := s.d
	if s.i >= len(d) || d[s.i] != '"' {
		return nil, false
	}
	start := s.i + 1
	n := bytes.IndexByte(d[start:], '"')
	if n < 0 {
		return nil, false
	}
	content := d[start : start+n]
	if bytes.IndexByte(content, '\n') >= 0 || bytes.IndexByte(content, '\r') >= 0 {
		return nil, false
	}
	s.i = start + n + 1
	return content, true
}

// Member bits of the envelope and body objects.
const (
	envV = 1 << iota
	envAlg
	envBody
	envSig
	envAll = envV | envAlg | envBody | envSig
)

const (
	bodyDID = 1 << iota
	bodySeq
	bodyTS
	bodyKind
	bodyData
	bodyAll = bodyDID | bodySeq | bodyTS | bodyKind | bodyData
)

// openFast is Open's fast path for raw no larger than Open's limit: nil
// means "leave it to the strict path".
func openFast(raw []byte, maxBody int) *Opened {
	s := fscan{d: raw}
	if !s.eat('{') {
		return nil
	}
	var body64, sig64 []byte
	seen := 0
	for {
		name, ok := s.plainStr()
		if !ok || !s.eat(':') {
			return nil
		}
		var bit int
		switch string(name) {
		case "v":
			bit = envV
			// Exactly the token 1: anything else is another version, or
			// 1 spelt in a way an int field refuses.
			s.ws()
			if !s.literal("1") {
				return nil
			}
		case "alg":
			bit = envAlg
			alg, ok := s.plainStr()
			if !ok || string(alg) != AlgSM2SM3 {
				return nil
			}
		case "body":
			bit = envBody
			if body64, ok = s.b64Value(); !ok {
				return nil
			}
		case "sig":
			bit = envSig
			if sig64, ok = s.b64Value(); !ok {
				return nil
			}
		default:
			return nil
		}
		if seen&bit != 0 {
			return nil
		}
		seen |= bit
		more, ok := s.more('}')
		if !ok {
			return nil
		}
		if !more {
			break
		}
	}
	if seen != envAll || !s.end() {
		return nil
	}
	nb, ns := strictB64.DecodedLen(len(body64)), strictB64.DecodedLen(len(sig64))
	if nb == 0 || ns == 0 || nb-2 > maxBody { // padding: at most 2 bytes less
		return nil
	}
	buf := make([]byte, nb+ns)
	nb, err := strictB64.Decode(buf, body64)
	if err != nil || nb == 0 || nb > maxBody {
		return nil
	}
	ns, err = strictB64.Decode(buf[nb:], sig64)
	if err != nil || ns == 0 {
		return nil
	}
	body := buf[:nb:nb]
	var f fastBody
	if !parseBodyFast(body, &f) {
		return nil
	}
	o := &Opened{Envelope: Envelope{
		V:    EnvelopeVersion,
		Alg:  AlgSM2SM3,
		Body: body,
		Sig:  buf[nb : nb+ns : nb+ns],
	}}
	f.store(&o.Body, false)
	return o
}

// fastBody holds the fields of a body the fast path accepted, as slices of
// the body bytes.
type fastBody struct {
	did, ts, kind, data []byte
	seq                 uint64
}

// store sets b's fields: the three strings in one allocation and data
// copied into b.Data's array (as json.RawMessage's UnmarshalJSON does) when
// copyData, else shared with the body bytes.
func (f *fastBody) store(b *Body, copyData bool) {
	var sb strings.Builder
	sb.Grow(len(f.did) + len(f.ts) + len(f.kind))
	sb.Write(f.did)
	sb.Write(f.ts)
	sb.Write(f.kind)
	all := sb.String()
	n1, n2 := len(f.did), len(f.did)+len(f.ts)
	b.DID, b.TS, b.Kind = DID(all[:n1]), all[n1:n2], all[n2:]
	b.Seq = f.seq
	if copyData {
		b.Data = append(b.Data[:0], f.data...)
	} else {
		b.Data = f.data[:len(f.data):len(f.data)]
	}
}

// parseBodyFast is ParseBody's fast path: false means "leave it to the
// strict path".
func parseBodyFast(body []byte, f *fastBody) bool {
	if !utf8.Valid(body) {
		return false
	}
	s := fscan{d: body}
	if !s.eat('{') {
		return false
	}
	seen := 0
	for {
		name, ok := s.plainStr()
		if !ok || !s.eat(':') {
			return false
		}
		var bit int
		switch string(name) {
		case "did":
			bit = bodyDID
			if f.did, ok = s.plainStr(); !ok || !validDID(f.did) {
				return false
			}
		case "seq":
			bit = bodySeq
			if f.seq, ok = s.seq(); !ok {
				return false
			}
		case "ts":
			bit = bodyTS
			if f.ts, ok = s.plainStr(); !ok || !tsOK(f.ts) {
				return false
			}
		case "kind":
			bit = bodyKind
			if f.kind, ok = s.plainStr(); !ok || len(f.kind) == 0 {
				return false
			}
		case "data":
			bit = bodyData
			s.ws()
			start := s.i
			if start >= len(body) || body[start] != '{' || !s.object(1) {
				return false
			}
			f.data = body[start:s.i]
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		more, ok := s.more('}')
		if !ok {
			return false
		}
		if !more {
			break
		}
	}
	return seen == bodyAll && s.end()
}

// seq scans a sequence number: 1 to 19 digits without a leading zero (so
// at least 1 and within uint64), ending where a number token must end.
func (s *fscan) seq() (uint64, bool) {
	s.ws()
	d := s.d
	var v uint64
	i := s.i
	if i >= len(d) || d[i] < '1' || d[i] > '9' {
		return 0, false
	}
	for ; i < len(d) && isDigit(d[i]); i++ {
		if i-s.i == 19 {
			return 0, false
		}
		v = v*10 + uint64(d[i]-'0')
	}
	if i < len(d) && (d[i] == '.' || d[i] == 'e' || d[i] == 'E') {
		return 0, false
	}
	s.i = i
	return v, true
}

// tsOK reports whether checkTimestamp accepts ts.
func tsOK(ts []byte) bool {
	if !tsShape(ts) {
		return false
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	return err == nil && tsYearOK(t)
}
