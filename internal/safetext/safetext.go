// Package safetext makes untrusted strings safe to print on a terminal or
// in a log line: text from a proof bundle, a trust file, a ledger node or a
// gateway may hold a line break and a made-up sentence, or terminal control
// sequences, and must never print as if the program had written it.
package safetext

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s with every rune that is not graphic (line breaks, tabs,
// other control characters, Unicode format characters such as bidi
// overrides, line and paragraph separators) written as a Go escape (\n,
// \x1b, \u202e), every byte that is not UTF-8 as \xNN, and the backslash
// as \\, so that the result is one line and maps back to exactly one s.
// Printable text, including CJK and other scripts, is unchanged.
func Escape(s string) string {
	if plain(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case unicode.IsGraphic(r):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRuneToASCII(r) // 'x' with r escaped
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

// plain reports whether Escape leaves s as it is.
func plain(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\\' || (r == utf8.RuneError && size == 1) || !unicode.IsGraphic(r) {
			return false
		}
		i += size
	}
	return true
}

// Sprintf is fmt.Sprintf with Escape applied to the result: for a line
// built from untrusted values.
func Sprintf(format string, a ...any) string { return Escape(fmt.Sprintf(format, a...)) }
