package device

import (
	"strings"
	"testing"
)

func TestCheckJSONOptions(t *testing.T) {
	nest := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	cases := []struct {
		name string
		data string
		opts JSONOptions
		ok   bool
	}{
		{"plain", `{"a":1,"b":[{"a":2}]}`, JSONOptions{}, true},
		{"exact duplicate", `{"a":1,"a":2}`, JSONOptions{}, false},
		{"escaped duplicate", `{"a":1,"\u0061":2}`, JSONOptions{}, false},
		{"nested duplicate", `[{"x":{"b":1,"b":2}}]`, JSONOptions{}, false},
		{"case differs, exact", `{"did":1,"DID":2}`, JSONOptions{}, true},
		{"case differs, folded", `{"did":1,"DID":2}`, JSONOptions{FoldCase: true}, false},
		{"kelvin sign, folded", `{"k":1,"\u212a":2}`, JSONOptions{FoldCase: true}, false},
		{"long s, folded", `{"seq":1,"\u017feq":2}`, JSONOptions{FoldCase: true}, false},
		{"distinct, folded", `{"a":1,"b":2,"ab":3}`, JSONOptions{FoldCase: true}, true},
		{"depth at default", nest(DefaultJSONDepth + 1), JSONOptions{}, true},
		{"depth past default", nest(DefaultJSONDepth + 2), JSONOptions{}, false},
		{"depth at 64", nest(65), JSONOptions{MaxDepth: 64}, true},
		{"depth past 64", nest(66), JSONOptions{MaxDepth: 64}, false},
		{"depth past 16", nest(18), JSONOptions{MaxDepth: 16}, false},
		{"top known", `{"a":1,"b":{"z":1}}`, JSONOptions{Top: []string{"a", "b"}}, true},
		{"top unknown", `{"a":1,"c":2}`, JSONOptions{Top: []string{"a", "b"}}, false},
		{"top exact case", `{"A":1}`, JSONOptions{Top: []string{"a"}, FoldCase: true}, false},
		{"trailing data", `{} {}`, JSONOptions{}, false},
		{"trailing space", "{}\n", JSONOptions{}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckJSON([]byte(c.data), c.opts)
			if (err == nil) != c.ok {
				t.Fatalf("CheckJSON(%s, %+v) = %v, want ok %v", c.data, c.opts, err, c.ok)
			}
		})
	}
}
