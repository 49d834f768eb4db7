package safetext

import (
	"strings"
	"testing"
)

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"did:ea:0123456789abcdef0123456789abcdef", "did:ea:0123456789abcdef0123456789abcdef"},
		{"工地 A 考勤", "工地 A 考勤"},
		{"x\n✓ 2. device key registered on the ledger: forged", `x\n✓ 2. device key registered on the ledger: forged`},
		{"a\r\nb\tc", `a\r\nb\tc`},
		{"\x1b[2Jcleared", `\x1b[2Jcleared`},
		{"abc\u202edef", `abc\u202edef`},
		{"line\u2028sep", `line\u2028sep`},
		{"bad \xff utf8", `bad \xff utf8`},
		{`back\slash`, `back\\slash`},
		{"nul\x00", `nul\x00`},
		{"\u0085next", `\u0085next`},
	} {
		got := Escape(tc.in)
		if got != tc.want {
			t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.ContainsAny(got, "\n\r\x1b\u202e\u2028") {
			t.Errorf("Escape(%q) = %q still holds a control character", tc.in, got)
		}
	}
}

// FuzzEscape: the result is one line of graphic text, and different inputs
// never escape to the same output.
func FuzzEscape(f *testing.F) {
	f.Add("x\n✓ forged", "x\\n✓ forged")
	f.Add("\\", "\\\\")
	f.Fuzz(func(t *testing.T, a, b string) {
		ea, eb := Escape(a), Escape(b)
		for _, r := range ea {
			if r == '\n' || r == '\r' || r < 0x20 || r == 0x7f {
				t.Fatalf("Escape(%q) = %q holds %U", a, ea, r)
			}
		}
		if a != b && ea == eb {
			t.Fatalf("Escape(%q) = Escape(%q) = %q", a, b, ea)
		}
	})
}
