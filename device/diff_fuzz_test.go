package device

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Differential fuzz targets: Open, ParseBody and ValidateData against the
// reference (ref_test.go, the code before the fast paths). For every input
// both must accept or both refuse, with the same error text and Reason, and
// what they accept must decode to the same fields. Seeds: the golden
// envelopes, the committed corpora of the other fuzz targets and edge cases
// of every shortcut the fast paths take (diffSeeds). Run one with
//
//	go test ./device -run '^$' -fuzz '^FuzzOpenDiff$' -fuzztime 3m

// corpusValues returns the []byte and string values of every entry of the
// committed corpus of target, in file order.
func corpusValues(tb testing.TB, target string) [][][]byte {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "fuzz", target, "*"))
	if err != nil {
		tb.Fatal(err)
	}
	var out [][][]byte
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			tb.Fatal(err)
		}
		var vals [][]byte
		for _, line := range strings.Split(string(raw), "\n")[1:] {
			var q string
			switch {
			case strings.HasPrefix(line, "[]byte(") && strings.HasSuffix(line, ")"):
				q = line[len("[]byte(") : len(line)-1]
			case strings.HasPrefix(line, "string(") && strings.HasSuffix(line, ")"):
				q = line[len("string(") : len(line)-1]
			default:
				continue
			}
			v, err := strconv.Unquote(q)
			if err != nil {
				tb.Fatalf("%s: %v", file, err)
			}
			vals = append(vals, []byte(v))
		}
		out = append(out, vals)
	}
	return out
}

// goldenValidBodies returns the body of each golden valid envelope.
func goldenValidBodies(tb testing.TB) map[string][]byte {
	tb.Helper()
	out := map[string][]byte{}
	for _, kind := range Kinds() {
		env, err := os.ReadFile(filepath.Join(goldenDir, "valid-"+kind+".env.json"))
		if err != nil {
			tb.Fatal(err)
		}
		o, err := refOpen(env, 0)
		if err != nil {
			tb.Fatal(err)
		}
		out[kind] = o.Envelope.Body
	}
	return out
}

// diffSeeds returns bodies, envelopes and (kind, data) pairs around every
// shortcut of the fast paths.
func diffSeeds(tb testing.TB) (bodies, envs [][]byte, data [][2]string) {
	tb.Helper()
	did := `did:ea:9a3fb8d744867390 9e23dd0885c54f70`
	did = strings.ReplaceAll(did, " ", "")
	dust := `{"pm25_ugm3":35.2,"pm10_ugm3":71,"noise_dba":62.5}`
	body := func(seq, ts, kind, data string) string {
		return `{"did":"` + did + `","seq":` + seq + `,"ts":"` + ts + `","kind":"` + kind + `","data":` + data + `}`
	}
	const ts = "2026-11-25T10:00:00Z"
	bs := []string{
		body("1", ts, KindDust, dust),
		" \t\r\n" + body("1", ts, KindDust, dust) + " \n",
		`{ "did" : "` + did + `" , "seq" : 7 , "ts" : "` + ts + `" , "kind" : "x" , "data" : { } }`,
		`{"data":{},"kind":"k","ts":"` + ts + `","seq":2,"did":"` + did + `"}`,
		`{"\u0064id":"` + did + `","seq":1,"ts":"` + ts + `","kind":"k","data":{}}`,
		`{"did":"did:ea:9a3fb8d744867390\u0039e23dd0885c54f70","seq":1,"ts":"` + ts + `","kind":"k","data":{}}`,
		`{"did":"` + strings.ToUpper(did) + `","seq":1,"ts":"` + ts + `","kind":"k","data":{}}`,
		`{"did":"` + did + `0","seq":1,"ts":"` + ts + `","kind":"k","data":{}}`,
		`{"did":"` + did + `","did":"` + did + `","seq":1,"ts":"` + ts + `","kind":"k","data":{}}`,
		`{"did":"` + did + `","Seq":1,"ts":"` + ts + `","kind":"k","data":{}}`,
		`{"did":"` + did + `","seq":1,"ts":"` + ts + `","kind":"k"}`,
		`{"did":"` + did + `","seq":1,"ts":"` + ts + `","kind":"k","data":{},"x":1}`,
		`{"did":"` + did + `","seq":1,"ts":"` + ts + `","kind":"k","data":{}}{}`,
		`{"did":"` + did + `","seq":1,"ts":"` + ts + `","kind":"k","data":{}},`,
		`{"did":"` + did + `","seq":1,"ts":"` + ts + `","kind":"k","data":{},}`,
		`{"did":"` + did + `","seq":1,"ts":"` + ts + `","kind":"k","data":{}`,
		`{"did":"` + did + `","seq":1,"ts":"` + ts + `","kind":"","data":{}}`,
		`{"did":"` + did + `","seq":1,"ts":"` + ts + `","kind":"k\u00e9","data":{}}`,
		`{"did":"` + did + `","seq":1,"ts":"` + ts + `","kind":"ké\x7f","data":{}}`,
		`{"did":"` + did + `","seq":1,"ts":"` + ts + `","kind":"k\xff","data":{}}`,
		`{"did":"` + did + `","seq":1,"ts":"` + ts + `","kind":"k` + "\x01" + `","data":{}}`,
		`{"did":"` + did + `","seq":1,"ts":"` + ts + `","kind":null,"data":{}}`,
		`{"did":"` + did + `","seq":1,"ts":"` + ts + `","kind":"k","data":null}`,
		`{"did":"` + did + `","seq":1,"ts":"` + ts + `","kind":"k","data":[]}`,
		`{"did":"` + did + `","seq":1,"ts":"` + ts + `","kind":"k","data":"{}"}`,
	}
	for _, seq := range []string{"0", "01", "1.0", "1e2", "1E2", "-1", "18446744073709551615", "18446744073709551616",
		"9999999999999999999", "10000000000000000000", "1234567890123456789", "null", `"1"`, "true", "1 "} {
		bs = append(bs, body(seq, ts, KindDust, dust))
	}
	for _, t := range []string{"2028-02-29T00:00:00Z", "2027-02-29T00:00:00Z", "2026-11-25T23:59:60Z", "2026-11-25T24:00:00Z",
		"2026-11-25T10:00:00.Z", "2026-11-25T10:00:00.1234567890Z", "2026-11-25T10:00:00.123456789Z", "2026-11-25T10:00:00.1Z",
		"2026-11-25T10:00:00,1Z", "2026-11-25t10:00:00Z", "2026-11-25T10:00:00z", "2026-11-25T10:00:00+00:00",
		"1999-12-31T23:59:59Z", "2000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "0000-01-01T00:00:00Z",
		"2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z", "2026-11-00T00:00:00Z", "2026-11-31T00:00:00Z", "2026-11-25T10:60:00Z",
		"2026-11-25 10:00:00Z", "2026-11-25T10:00:00Z ", "+2026-11-25T10:00:00Z", "2026-11-25T10:00:00\u005a", ""} {
		bs = append(bs, body("1", t, KindDust, dust))
	}
	nest := func(n int) string { return strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n) }
	arr := func(n int) string { return `{"a":` + strings.Repeat("[", n) + strings.Repeat("]", n) + "}" }
	members := func(n int) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `"m%d":%d`, i, i)
		}
		b.WriteString("}")
		return b.String()
	}
	for _, d := range []string{
		nest(30), nest(31), nest(32), nest(33), arr(29), arr(30), arr(31), arr(32),
		members(16), members(17), `{"a":1,"a":2}`, `{"a":1,"\u0061":2}`, `{"a":{"b":1,"b":2}}`, `{"a":[{"b":1},{"b":1}]}`,
		`{"a":{"b":1},"b":{"a":1}}`, `{"a":"\u0000\ud800\"\\\/\b\f\n\r\t"}`, `{"a":"\x"}`, `{"a":"\u12"}`, `{"a":"\u12g4"}`,
		`{"a":-0,"b":-0.0e+0,"c":1E400,"d":1e-400,"e":0.1,"f":1.}`, `{"a":01}`, `{"a":-}`, `{"a":.5}`, `{"a":1e}`, `{"a":1e+}`,
		`{"a":true,"b":false,"c":null,"d":[true,false,null,"x",1.5e3,{}]}`, `{"a":tru}`, `{"a":nul}`, `{"a":falsey}`,
		`{"a":1 2}`, `{"a" 1}`, `{"a":}`, `{,}`, `{"a":1,}`, `{"a":[1,]}`, `{"a":[,1]}`, `{"a":[1 2]}`, `{1:2}`, `{"é":1,"é":2}`,
	} {
		bs = append(bs, body("1", ts, KindDust, d))
	}

	data = [][2]string{
		{KindDust, dust}, {KindDust, " " + dust + "\n"}, {KindDust, `{"pm25_ugm3":0,"pm10_ugm3":2000,"noise_dba":20}`},
		{KindDust, `{"pm25_ugm3":-0,"pm10_ugm3":2e3,"noise_dba":1.4E2}`}, {KindDust, `{"pm25_ugm3":-0.0000001,"pm10_ugm3":1,"noise_dba":20}`},
		{KindDust, `{"pm25_ugm3":1000.0000001,"pm10_ugm3":1,"noise_dba":20}`}, {KindDust, `{"pm25_ugm3":1e400,"pm10_ugm3":1,"noise_dba":20}`},
		{KindDust, `{"pm25_ugm3":1e-400,"pm10_ugm3":1,"noise_dba":20}`}, {KindDust, `{"pm25_ugm3":"1","pm10_ugm3":1,"noise_dba":20}`},
		{KindDust, `{"pm25_ugm3":1,"pm10_ugm3":1}`}, {KindDust, `{"pm25_ugm3":1,"pm10_ugm3":1,"noise_dba":20,"x":1}`},
		{KindDust, `{"pm25_ugm3":1,"pm10_ugm3":1,"noise_dba":20,"pm25_ugm3":1}`}, {KindDust, `{"pm25_ugm3":1,"pm10_ugm3":1,"noise_d\u0062a":20}`},
		{KindDust, `{"pm25_ugm3":1,"pm10_ugm3":1,"noise_dba":null}`}, {KindDust, `{"pm25_ugm3":1,"pm10_ugm3":1,"noise_dba":20}x`},
		{KindDust, `{"pm25_ugm3":1,"pm10_ugm3":1,"noise_dba":20,"n":{"a":1,"a":1}}`}, {KindDust, `null`}, {KindDust, `[]`}, {KindDust, ``},
		{"env.Dust", dust}, {"", `{}`},
	}
	gd := goldenData()
	for _, kind := range []string{KindAttendance, KindWage, KindSurvey} {
		data = append(data, [2]string{kind, gd[kind]})
	}
	w := `"worker":"` + goldenWorker + `"`
	acct := `"account":"` + goldenAccount + `"`
	wage := func(period, amount string) string {
		return `{` + w + `,"period":"` + period + `","amount_fen":` + amount + `,"payer":"P",` + acct + `}`
	}
	for _, p := range []string{"2026-10", "1900-01", "1899-12", "2199-12", "2200-01", "2026-00", "2026-13", "2026-1", "2026-010", "2026-10 ", "2026\u002d10"} {
		data = append(data, [2]string{KindWage, wage(p, "1")})
	}
	for _, a := range []string{"0", "1", "100000000", "100000001", "1.0", "-1", "1e3", `"5"`, "99999999999999999999", "123456789012345678", "0100"} {
		data = append(data, [2]string{KindWage, wage("2026-10", a)})
	}
	att := func(worker, project, direction string) string {
		return `{"worker":"` + worker + `","project":"` + project + `","gate":"g","direction":"` + direction + `","method":"card"}`
	}
	for _, a := range [][3]string{
		{goldenWorker, "p", "in"}, {goldenWorker, "p", "out"}, {goldenWorker, "p", "IN"}, {goldenWorker, "p", "i\u006e"},
		{strings.ToUpper(goldenWorker), "p", "in"}, {goldenWorker[:63], "p", "in"}, {goldenWorker + "0", "p", "in"},
		{goldenWorker, "", "in"}, {goldenWorker, strings.Repeat("x", 64), "in"}, {goldenWorker, strings.Repeat("x", 65), "in"},
		{goldenWorker, strings.Repeat("é", 32), "in"}, {goldenWorker, strings.Repeat("é", 33), "in"}, {goldenWorker, "a\x7fb", "in"},
		{goldenWorker, `a\u007fb`, "in"}, {goldenWorker, `a\tb`, "in"}, {goldenWorker, `a\"b`, "in"}, {goldenWorker, "a\xffb", "in"},
	} {
		data = append(data, [2]string{KindAttendance, att(a[0], a[1], a[2])})
	}

	for _, kd := range data {
		if strings.HasPrefix(kd[1], "{") {
			bs = append(bs, body("1", ts, kd[0], kd[1]))
		}
	}
	for _, b := range bs {
		bodies = append(bodies, []byte(b))
	}

	// Envelopes: each body in the canonical envelope, and the golden dust
	// body in envelopes with every shortcut of openFast.
	sig := b64([]byte("0123456789"))
	for _, b := range bodies {
		envs = append(envs, envelopeJSON(1, AlgSM2SM3, b64(b), sig))
	}
	gb := b64(goldenValidBodies(tb)[KindDust])
	esc := strings.ReplaceAll(gb, "/", `\/`)
	for _, e := range []string{
		`{"v":1,"alg":"SM2-SM3","body":"` + gb + `","sig":"` + sig + `"}`,
		` { "sig" : "` + sig + `" , "body" : "` + gb + `" , "alg" : "SM2-SM3" , "v" : 1 } ` + "\r\n",
		`{"v":1,"alg":"SM2-SM3","body":"` + esc + `","sig":"` + sig + `"}`,
		`{"v":1,"alg":"SM2-SM3","body":"` + gb[:8] + `\n` + gb[8:] + `","sig":"` + sig + `"}`,
		`{"v":1,"alg":"SM2-SM3","body":"` + gb[:8] + `\r` + gb[8:] + `","sig":"` + sig + `"}`,
		`{"v":1,"alg":"SM2-SM3","body":"` + gb[:8] + "\n" + gb[8:] + `","sig":"` + sig + `"}`,
		`{"v":1,"alg":"SM2-SM3","body":"` + strings.TrimRight(gb, "=") + `","sig":"` + sig + `"}`,
		`{"v":1,"alg":"SM2-SM3","body":"` + base64.URLEncoding.EncodeToString(goldenValidBodies(tb)[KindDust]) + `","sig":"` + sig + `"}`,
		`{"v":1,"alg":"SM2-SM3","body":"` + gb + `","sig":"` + nonCanonicalB64([]byte("0")) + `"}`,
		`{"v":1,"alg":"SM2-SM3","body":"` + gb + `","sig":""}`,
		`{"v":1,"alg":"SM2-SM3","body":"","sig":"` + sig + `"}`,
		`{"v":1,"alg":"SM2-SM3","body":null,"sig":"` + sig + `"}`,
		`{"v":1,"alg":"SM2-SM3","body":"` + gb + `"}`,
		`{"v":1,"alg":"SM2-SM3","body":"` + gb + `","sig":"` + sig + `","sig":"` + sig + `"}`,
		`{"v":1,"alg":"SM2-SM3","body":"` + gb + `","sig":"` + sig + `","x":0}`,
		`{"V":1,"alg":"SM2-SM3","body":"` + gb + `","sig":"` + sig + `"}`,
		`{"v":1.0,"alg":"SM2-SM3","body":"` + gb + `","sig":"` + sig + `"}`,
		`{"v":1e0,"alg":"SM2-SM3","body":"` + gb + `","sig":"` + sig + `"}`,
		`{"v":01,"alg":"SM2-SM3","body":"` + gb + `","sig":"` + sig + `"}`,
		`{"v":11,"alg":"SM2-SM3","body":"` + gb + `","sig":"` + sig + `"}`,
		`{"v":2,"alg":"SM2-SM3","body":"` + gb + `","sig":"` + sig + `"}`,
		`{"v":-1,"alg":"SM2-SM3","body":"` + gb + `","sig":"` + sig + `"}`,
		`{"v":"1","alg":"SM2-SM3","body":"` + gb + `","sig":"` + sig + `"}`,
		`{"v":null,"alg":"SM2-SM3","body":"` + gb + `","sig":"` + sig + `"}`,
		`{"v":1,"alg":"SM2\u002dSM3","body":"` + gb + `","sig":"` + sig + `"}`,
		`{"v":1,"alg":"sm2-sm3","body":"` + gb + `","sig":"` + sig + `"}`,
		`{"v":1,"alg":"SM2-SM3","body":"` + gb + `","sig":"` + sig + `"}{}`,
		`{"v":1,"alg":"SM2-SM3","body":"` + gb + `","sig":"` + sig + `"`,
		`{"v":1,"alg":"SM2-SM3","body":"` + gb + `","sig":"` + sig + `",}`,
		`[{"v":1,"alg":"SM2-SM3","body":"` + gb + `","sig":"` + sig + `"}]`,
	} {
		envs = append(envs, []byte(e))
	}
	return bodies, envs, data
}

// what names the call under test in a failure (formatted only then).
type what func() string

func sameErr(t *testing.T, w what, got, want error) {
	t.Helper()
	switch {
	case (got == nil) != (want == nil):
		t.Fatalf("%s: error %v, reference %v", w(), got, want)
	case got == nil:
		return
	case got.Error() != want.Error() || Reason(got) != Reason(want):
		t.Fatalf("%s: error %q (%s), reference %q (%s)", w(), got, Reason(got), want, Reason(want))
	}
}

func sameBody(t *testing.T, w what, got, want *Body) {
	t.Helper()
	if got.DID != want.DID || got.Seq != want.Seq || got.TS != want.TS || got.Kind != want.Kind ||
		!bytes.Equal(got.Data, want.Data) || (got.Data == nil) != (want.Data == nil) {
		t.Fatalf("%s: body %+v, reference %+v", w(), *got, *want)
	}
}

func checkOpenDiff(t *testing.T, raw []byte, maxBody int) {
	t.Helper()
	got, gerr := Open(raw, maxBody)
	want, werr := refOpen(raw, maxBody)
	w := func() string { return fmt.Sprintf("Open(%q, %d)", raw, maxBody) }
	sameErr(t, w, gerr, werr)
	if (got == nil) != (want == nil) {
		t.Fatalf("%s: %v, reference %v", w(), got, want)
	}
	if got == nil {
		return
	}
	ge, we := got.Envelope, want.Envelope
	if ge.V != we.V || ge.Alg != we.Alg || !bytes.Equal(ge.Body, we.Body) || !bytes.Equal(ge.Sig, we.Sig) {
		t.Fatalf("%s: envelope %+v, reference %+v", w(), ge, we)
	}
	sameBody(t, w, &got.Body, &want.Body)
}

// checkParseBodyDiff runs both into a zero Body and into one holding
// another body's fields: what a refused body leaves behind must match too.
func checkParseBodyDiff(t *testing.T, body []byte) {
	t.Helper()
	for _, start := range []Body{{}, {DID: "did:ea:x", Seq: 9, TS: "t", Kind: "k", Data: append(make([]byte, 0, 64), `{"old":1}`...)}} {
		got, want := start, start
		want.Data = bytes.Clone(start.Data)
		gerr := ParseBody(body, &got)
		werr := refParseBody(body, &want)
		w := func() string { return fmt.Sprintf("ParseBody(%q) into %+v", body, start) }
		sameErr(t, w, gerr, werr)
		sameBody(t, w, &got, &want)
	}
	// A nil *Body: json.Unmarshal's error once the body is well formed.
	sameErr(t, func() string { return fmt.Sprintf("ParseBody(%q, nil)", body) }, ParseBody(body, nil), refParseBody(body, nil))
}

func checkValidateDiff(t *testing.T, kind string, data []byte) {
	t.Helper()
	gerr := ValidateData(kind, data)
	werr := refValidateData(kind, data)
	w := func() string { return fmt.Sprintf("ValidateData(%q, %q)", kind, data) }
	sameErr(t, w, gerr, werr)
	if gerr != nil {
		g, r := gerr.(*FieldError), werr.(*FieldError)
		if *g != *r {
			t.Fatalf("%s: %+v, reference %+v", w(), *g, *r)
		}
	}
}

// TestFastPathsAgree runs the differential checks over every seed, so that
// plain `go test` holds the fast paths to the reference too.
func TestFastPathsAgree(t *testing.T) {
	bodies, envs, data := diffSeeds(t)
	for _, e := range envs {
		for _, max := range []int{0, -1, 40, 127, 128, 129, DefaultMaxBody, math.MaxInt / 2, math.MaxInt} {
			checkOpenDiff(t, e, max)
		}
	}
	for _, b := range bodies {
		checkParseBodyDiff(t, b)
	}
	for _, kd := range data {
		checkValidateDiff(t, kd[0], []byte(kd[1]))
	}
	// The committed corpora of every target.
	for _, target := range []string{"FuzzOpen", "FuzzOpenDiff", "FuzzParseBody", "FuzzParseBodyDiff", "FuzzCheckJSON",
		"FuzzValidateData", "FuzzValidateDataDiff"} {
		for _, vals := range corpusValues(t, target) {
			for _, v := range vals {
				checkOpenDiff(t, v, 0)
				checkParseBodyDiff(t, v)
				for _, kind := range Kinds() {
					checkValidateDiff(t, kind, v)
				}
			}
			if len(vals) == 2 {
				checkValidateDiff(t, string(vals[0]), vals[1])
			}
		}
	}
	// Every valid golden body, as a body, as an envelope and its data.
	for kind, b := range goldenValidBodies(t) {
		checkParseBodyDiff(t, b)
		checkOpenDiff(t, envelopeJSON(1, AlgSM2SM3, b64(b), b64([]byte{1})), 0)
		var o Body
		if err := refParseBody(b, &o); err != nil {
			t.Fatal(err)
		}
		checkValidateDiff(t, kind, o.Data)
	}
}

func FuzzOpenDiff(f *testing.F) {
	_, envs, _ := diffSeeds(f)
	for _, e := range append(goldenSeeds(f), envs...) {
		f.Add(e, int16(0))
	}
	f.Add([]byte(`{"v":1,"alg":"SM2-SM3","body":"e30=","sig":"AA=="}`), int16(1))
	f.Fuzz(func(t *testing.T, raw []byte, maxBody int16) {
		checkOpenDiff(t, raw, int(maxBody))
	})
}

func FuzzParseBodyDiff(f *testing.F) {
	bodies, _, _ := diffSeeds(f)
	for _, b := range append(goldenBodySeeds(f), bodies...) {
		f.Add(b)
	}
	f.Fuzz(checkParseBodyDiff)
}

func FuzzValidateDataDiff(f *testing.F) {
	_, _, data := diffSeeds(f)
	for _, kd := range data {
		f.Add(kd[0], []byte(kd[1]))
	}
	for kind, d := range goldenData() {
		f.Add(kind, []byte(d))
	}
	f.Fuzz(func(t *testing.T, kind string, data []byte) {
		checkValidateDiff(t, kind, data)
		// The same data under every kind: the fuzzer rarely guesses one.
		for _, k := range Kinds() {
			checkValidateDiff(t, k, data)
		}
	})
}

// TestFastPathsTaken: the golden valid envelopes, their bodies and data go
// through the fast paths (the differential checks above would pass
// vacuously if they never did).
func TestFastPathsTaken(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(goldenDir, "valid-*.env.json"))
	if err != nil || len(files) < len(Kinds()) {
		t.Fatalf("golden valid envelopes: %v %v", files, err)
	}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		o := openFast(raw, DefaultMaxBody)
		if o == nil {
			t.Fatalf("%s: openFast gives up", file)
		}
		var f fastBody
		if !parseBodyFast(o.Envelope.Body, &f) {
			t.Fatalf("%s: parseBodyFast gives up", file)
		}
		if !validateFast(schemas[o.Body.Kind], o.Body.Data) {
			t.Fatalf("%s: validateFast gives up on %s", file, o.Body.Data)
		}
	}
}
