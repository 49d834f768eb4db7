package anchor

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
)

const testGW = device.DID("did:ea:00112233445566778899aabbccddeeff")

func sampleHeader() *BatchHeader {
	return &BatchHeader{
		Gateway: testGW, Seq: 1, First: 1, Last: 250, Count: 250,
		Root: SM3([]byte("abc")),
		From: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
		To:   time.Date(2026, 11, 25, 10, 0, 1, 500_000_000, time.UTC),
	}
}

func TestHeaderEncodeGolden(t *testing.T) {
	h := sampleHeader()
	// root = SM3("abc"), the GB/T 32905 vector (`echo -n abc | openssl dgst -sm3`).
	want := `{"type":"AnchorBatch","v":1,"gateway":"did:ea:00112233445566778899aabbccddeeff","seq":1,` +
		`"prev":"0000000000000000000000000000000000000000000000000000000000000000","first":1,"last":250,"count":250,` +
		`"root":"66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0",` +
		`"from":"2026-11-25T10:00:00Z","to":"2026-11-25T10:00:01.5Z"}`
	if got := string(h.Encode()); got != want {
		t.Fatalf("Encode:\n got %s\nwant %s", got, want)
	}
	if got, want := h.Hash(), SM3([]byte(want)); got != want {
		t.Fatalf("Hash = %s, want %s", got, want)
	}
	back, err := ParseHeader([]byte(want))
	if err != nil {
		t.Fatalf("ParseHeader: %v", err)
	}
	if back.Hash() != h.Hash() || !back.To.Equal(h.To) || back.Count != 250 {
		t.Fatalf("round trip changed the header: %+v", back)
	}
}

func TestHeaderChain(t *testing.T) {
	h1 := sampleHeader()
	h2 := &BatchHeader{Gateway: testGW, Seq: 2, Prev: h1.Hash(), First: 251, Last: 251, Count: 1,
		Root: SM3([]byte("x")), From: h1.To, To: h1.To}
	if err := h2.Validate(); err != nil {
		t.Fatal(err)
	}
	got, err := ParseHeader(h2.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.Prev != h1.Hash() {
		t.Fatalf("prev = %s, want %s", got.Prev, h1.Hash())
	}
}

func TestParseHeaderRefuses(t *testing.T) {
	good := string(sampleHeader().Encode())
	mutate := func(f func(h *BatchHeader)) string {
		h := sampleHeader()
		f(h)
		return string(h.Encode())
	}
	cases := map[string]string{
		"empty":          ``,
		"not json":       `hello`,
		"trailing":       good + `{}`,
		"whitespace":     strings.Replace(good, `,"seq"`, `, "seq"`, 1),
		"member order":   strings.Replace(good, `"type":"AnchorBatch","v":1`, `"v":1,"type":"AnchorBatch"`, 1),
		"unknown member": strings.Replace(good, `"v":1,`, `"v":1,"x":1,`, 1),
		"duplicate":      strings.Replace(good, `"seq":1,`, `"seq":1,"seq":1,`, 1),
		"case duplicate": strings.Replace(good, `"seq":1,`, `"seq":1,"SEQ":1,`, 1),
		"wrong type":     strings.Replace(good, `AnchorBatch`, `RegisterDevice`, 1),
		"version 2":      strings.Replace(good, `"v":1`, `"v":2`, 1),
		"bad gateway":    strings.Replace(good, `did:ea:00`, `did:xx:00`, 1),
		"upper hex root": strings.Replace(good, `66c7f0f4`, `66C7F0F4`, 1),
		"short root":     strings.Replace(good, `"root":"66`, `"root":"`, 1),
		"offset time":    strings.Replace(good, `10:00:00Z`, `18:00:00+08:00`, 1),
		"padded nanos":   strings.Replace(good, `01.5Z`, `01.500Z`, 1),
		"seq 0":          mutate(func(h *BatchHeader) { h.Seq = 0 }),
		"seq 1 prev":     mutate(func(h *BatchHeader) { h.Prev = SM3(nil) }),
		"seq 2 no prev":  mutate(func(h *BatchHeader) { h.Seq = 2 }),
		"first 0":        mutate(func(h *BatchHeader) { h.First = 0 }),
		"last < first":   mutate(func(h *BatchHeader) { h.First, h.Last = 5, 4 }),
		"count":          mutate(func(h *BatchHeader) { h.Count = 249 }),
		"zero root":      mutate(func(h *BatchHeader) { h.Root = ZeroHash }),
		"to before from": mutate(func(h *BatchHeader) { h.To = h.From.Add(-time.Second) }),
		"negative":       strings.Replace(good, `"first":1`, `"first":-1`, 1),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseHeader([]byte(in)); !errors.Is(err, ErrMalformedHeader) {
				t.Fatalf("ParseHeader(%s) error = %v, want ErrMalformedHeader", in, err)
			}
		})
	}
}

func TestParseHash(t *testing.T) {
	h := SM3([]byte("abc"))
	got, err := ParseHash(h.String())
	if err != nil || got != h {
		t.Fatalf("ParseHash round trip: %v %v", got, err)
	}
	for _, bad := range []string{"", "00", strings.Repeat("g", 64), strings.Repeat("A", 64), strings.Repeat("0", 66)} {
		if _, err := ParseHash(bad); err == nil {
			t.Errorf("ParseHash(%q) accepted", bad)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add(sampleHeader().Encode())
	f.Add([]byte(`{"type":"AnchorBatch"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			return
		}
		// Whatever is accepted is canonical and valid.
		if string(h.Encode()) != string(b) {
			t.Fatalf("accepted non-canonical header %q", b)
		}
		if err := h.Validate(); err != nil {
			t.Fatalf("accepted invalid header: %v", err)
		}
	})
}
