package device

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Fuzz targets for every decoder. Seeds: the golden envelopes; the corpus
// they grew is committed under testdata/fuzz/<FuzzName>/. Run one with
//
//	go test ./device -run '^$' -fuzz '^FuzzOpen$' -fuzztime 20s

// goldenSeeds returns the bytes of every golden envelope.
func goldenSeeds(f *testing.F) [][]byte {
	f.Helper()
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.env.json"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no golden envelopes to seed from (%v)", err)
	}
	var out [][]byte
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// goldenBodySeeds returns the body bytes of every golden envelope whose
// envelope decodes.
func goldenBodySeeds(f *testing.F) [][]byte {
	var out [][]byte
	for _, raw := range goldenSeeds(f) {
		var e Envelope
		if json.Unmarshal(raw, &e) == nil && len(e.Body) > 0 {
			out = append(out, e.Body)
		}
	}
	return out
}

func FuzzOpen(f *testing.F) {
	for _, s := range goldenSeeds(f) {
		f.Add(s)
	}
	f.Add([]byte(`{"v":1,"alg":"SM2-SM3","body":null,"sig":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		o, err := Open(raw, 0)
		if err != nil {
			if Reason(err) == "other" {
				t.Fatalf("Open error without a reason: %v", err)
			}
			if o != nil {
				t.Fatal("Open returned an envelope with an error")
			}
			return
		}
		// What Open accepts is self-consistent: the body parses again to
		// the same fields, and a re-encoded envelope opens the same.
		if len(o.Envelope.Body) > DefaultMaxBody || len(o.Envelope.Sig) == 0 {
			t.Fatalf("accepted body of %d bytes, sig of %d", len(o.Envelope.Body), len(o.Envelope.Sig))
		}
		var b Body
		if err := ParseBody(o.Envelope.Body, &b); err != nil {
			t.Fatalf("accepted body does not parse again: %v", err)
		}
		if b.DID != o.Body.DID || b.Seq != o.Body.Seq || b.TS != o.Body.TS || b.Kind != o.Body.Kind || !bytes.Equal(b.Data, o.Body.Data) {
			t.Fatalf("body parses differently: %+v vs %+v", b, o.Body)
		}
		re, err := json.Marshal(o.Envelope)
		if err != nil {
			t.Fatal(err)
		}
		o2, err := Open(re, 0)
		if err != nil {
			t.Fatalf("re-encoded envelope does not open: %v", err)
		}
		if !bytes.Equal(o2.Envelope.Body, o.Envelope.Body) || !bytes.Equal(o2.Envelope.Sig, o.Envelope.Sig) {
			t.Fatal("re-encoded envelope carries other bytes")
		}
		if _, err := ParseDID(string(o.Body.DID)); err != nil || o.Body.Seq == 0 || o.Body.Time().IsZero() {
			t.Fatalf("accepted body with did %q seq %d ts %q", o.Body.DID, o.Body.Seq, o.Body.TS)
		}
	})
}

func FuzzParseBody(f *testing.F) {
	for _, s := range goldenBodySeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var b Body
		if err := ParseBody(body, &b); err != nil {
			if Reason(err) != "malformed" && Reason(err) != "timestamp" {
				t.Fatalf("ParseBody error with reason %q: %v", Reason(err), err)
			}
			return
		}
		// An accepted body re-encodes (compact, as NewBody makes them) to
		// bytes that parse to the same fields.
		var data any
		if err := json.Unmarshal(b.Data, &data); err != nil {
			t.Fatalf("accepted data is not JSON: %v", err)
		}
		re, err := NewBody(b.DID, b.Seq, b.Time(), b.Kind, json.RawMessage(b.Data))
		if err != nil {
			t.Fatalf("NewBody of an accepted body: %v", err)
		}
		var b2 Body
		if err := ParseBody(re, &b2); err != nil {
			t.Fatalf("re-encoded body %s does not parse: %v", re, err)
		}
		if b2.DID != b.DID || b2.Seq != b.Seq || b2.Kind != b.Kind || !b2.Time().Equal(b.Time()) {
			t.Fatalf("re-encoded body differs: %+v vs %+v", b2, b)
		}
	})
}

func FuzzValidateData(f *testing.F) {
	for _, s := range goldenBodySeeds(f) {
		var b struct {
			Kind string          `json:"kind"`
			Data json.RawMessage `json:"data"`
		}
		if json.Unmarshal(s, &b) == nil {
			f.Add(b.Kind, []byte(b.Data))
		}
	}
	for kind, data := range goldenData() {
		f.Add(kind, []byte(data))
	}
	f.Fuzz(func(t *testing.T, kind string, data []byte) {
		err := ValidateData(kind, data)
		if err == nil {
			if !slices.Contains(Kinds(), kind) {
				t.Fatalf("accepted unknown kind %q", kind)
			}
			var obj map[string]any
			if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
				t.Fatalf("accepted data that is not a JSON object: %q", data)
			}
			// Accepted data stays accepted when re-encoded compactly.
			var buf bytes.Buffer
			if err := json.Compact(&buf, data); err != nil {
				t.Fatal(err)
			}
			if err := ValidateData(kind, buf.Bytes()); err != nil {
				t.Fatalf("compact form of accepted data refused: %v", err)
			}
			return
		}
		var fe *FieldError
		if !asFieldError(err, &fe) || Reason(err) != "schema" {
			t.Fatalf("ValidateData error is not a schema *FieldError: %v", err)
		}
	})
}

func asFieldError(err error, fe **FieldError) bool {
	e, ok := err.(*FieldError)
	if ok {
		*fe = e
	}
	return ok
}

// FuzzCheckJSON compares the byte scanner behind duplicate-key detection
// with a reference built on encoding/json's tokenizer, on valid JSON, with
// exact and with case-folded member names.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range goldenBodySeeds(f) {
		f.Add(s)
	}
	f.Add([]byte(`{"a":{"b":1,"b":2}}`))
	f.Add([]byte(`[{"a":1},{"a":1,"\u0061":2}]`))
	f.Add([]byte(`{"s\"q":"}{][","x":[1,"a\\",{"y":null}]}`))
	f.Add([]byte(`{"did":1,"DID":2}`))
	f.Add([]byte(`{"k":1,"\u212a":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, fold := range []bool{false, true} {
			got := CheckJSON(data, JSONOptions{FoldCase: fold})
			if !json.Valid(data) {
				return // json.Unmarshal refuses it whatever CheckJSON says
			}
			want := referenceDupCheck(data, fold)
			if (got == nil) != (want == nil) {
				t.Fatalf("CheckJSON(%q, FoldCase %v) = %v, reference %v", data, fold, got, want)
			}
		}
	})
}

// referenceDupCheck is the slow, obviously right version of CheckJSON for
// valid JSON: names compared pairwise, with strings.EqualFold when fold.
func referenceDupCheck(data []byte, fold bool) error {
	same := func(a, b string) bool { return a == b }
	if fold {
		same = strings.EqualFold
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // a number too large for a float64 is still valid JSON
	var walk func(depth int) error
	walk = func(depth int) error {
		if depth > DefaultJSONDepth {
			return errors.New("too deep")
		}
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			var seen []string
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return err
				}
				for _, s := range seen {
					if same(s, k.(string)) {
						return errors.New("duplicate")
					}
				}
				seen = append(seen, k.(string))
				if err := walk(depth + 1); err != nil {
					return err
				}
			}
			_, err = dec.Token()
			return err
		case json.Delim('['):
			for dec.More() {
				if err := walk(depth + 1); err != nil {
					return err
				}
			}
			_, err = dec.Token()
			return err
		}
		return nil
	}
	return walk(0)
}
