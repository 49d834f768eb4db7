package device

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Golden envelopes: testdata/golden holds envelopes, the key that signed them
// and manifest.json naming the verdict each must get from Verify with that
// key. Regenerate with
//
//	EDGEANCHOR_UPDATE_GOLDEN=1 go test ./device -run TestGolden
//
// (signatures are randomised, so every regeneration changes the sig bytes;
// the verdicts must not change). EDGEANCHOR_UPDATE_GOLDEN is the one switch
// of every package's golden files (docs/internals.md, "Golden files").

// update: EDGEANCHOR_UPDATE_GOLDEN=1 rewrites device/testdata/golden.
var update = os.Getenv("EDGEANCHOR_UPDATE_GOLDEN") != ""

const goldenDir = "testdata/golden"

// goldenManifest is testdata/golden/manifest.json.
type goldenManifest struct {
	Comment string       `json:"comment"`
	Key     string       `json:"key"`      // public key file (SPKI PEM)
	MaxBody int          `json:"max_body"` // the limit Verify runs with
	Cases   []goldenCase `json:"cases"`
}

type goldenCase struct {
	File    string `json:"file"`
	Verdict string `json:"verdict"`         // "valid" or a device.Reason label
	Field   string `json:"field,omitempty"` // for schema verdicts: the field named, "" for the kind itself
	Kind    string `json:"kind,omitempty"`  // for valid ones: the record kind
	Note    string `json:"note"`
}

// A worker reference and a wage account reference, as PersonRef makes them.
var (
	goldenWorker  = PersonRef([]byte("site-a salt"), "110101199003074514")
	goldenAccount = PersonRef([]byte("site-a salt"), "6222020200112233445")
)

// goldenBodies returns the data of a valid body per kind, as compact JSON.
func goldenData() map[string]string {
	return map[string]string{
		KindAttendance: `{"worker":"` + goldenWorker + `","project":"Metro Line 7 lot 3","gate":"north-2","direction":"in","method":"face"}`,
		KindWage:       `{"worker":"` + goldenWorker + `","period":"2026-10","amount_fen":861250,"payer":"Huadong Construction Co.","account":"` + goldenAccount + `"}`,
		KindSurvey:     `{"instrument":"gnss-rtk","point":"JD-0413","x_m":3378215.482,"y_m":39512044.917,"h_m":12.306,"h_prec_m":0.008,"v_prec_m":0.015,"parcel":"320506-004-0112","operator":"surveyor-17"}`,
		KindDust:       `{"pm25_ugm3":35.2,"pm10_ugm3":71,"noise_dba":62.5}`,
	}
}

func goldenBody(did DID, seq int, ts, kind, data string) []byte {
	return fmt.Appendf(nil, `{"did":"%s","seq":%d,"ts":"%s","kind":"%s","data":%s}`, did, seq, ts, kind, data)
}

func envelopeJSON(v int, alg, body, sig string) []byte {
	return fmt.Appendf(nil, `{"v":%d,"alg":"%s","body":"%s","sig":"%s"}`, v, alg, body, sig)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// nonCanonicalB64 encodes b (len(b)%3 == 1) and sets an unused bit of the
// last character before "==".
func nonCanonicalB64(b []byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	e := []byte(b64(b))
	i := len(e) - 3
	e[i] = alphabet[strings.IndexByte(alphabet, e[i])^1]
	return string(e)
}

// writeGolden regenerates testdata/golden (keeping key.pem if present).
func writeGolden(t *testing.T) {
	t.Helper()
	if err := os.MkdirAll(goldenDir, 0o755); err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(goldenDir, "key.pem")
	if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
		priv, err := GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if err := WritePrivateKeyFile(keyPath, priv); err != nil {
			t.Fatal(err)
		}
	}
	s, err := loadGoldenKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := MarshalPublicKeyPEM(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(goldenDir, "key.pub.pem"), pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	// Remove the old envelopes so that renamed cases leave nothing behind.
	old, _ := filepath.Glob(filepath.Join(goldenDir, "*.env.json"))
	for _, f := range old {
		os.Remove(f)
	}

	did := s.DID()
	const ts = "2026-11-25T10:00:00Z"
	data := goldenData()
	sign := func(body []byte) string {
		sig, err := s.Sign(body)
		if err != nil {
			t.Fatal(err)
		}
		return b64(sig)
	}
	sealed := func(body []byte) []byte { return envelopeJSON(1, AlgSM2SM3, b64(body), sign(body)) }

	m := goldenManifest{
		Comment: "Envelopes signed by key.pem; each must get its verdict from device.Verify(file, key.pub.pem, max_body). Regenerate: EDGEANCHOR_UPDATE_GOLDEN=1 go test ./device -run TestGolden",
		Key:     "key.pub.pem",
		MaxBody: DefaultMaxBody,
	}
	add := func(file string, env []byte, c goldenCase) {
		c.File = file + ".env.json"
		if err := os.WriteFile(filepath.Join(goldenDir, c.File), env, 0o644); err != nil {
			t.Fatal(err)
		}
		m.Cases = append(m.Cases, c)
	}

	for i, kind := range Kinds() {
		add("valid-"+kind, sealed(goldenBody(did, i+1, ts, kind, data[kind])),
			goldenCase{Verdict: "valid", Kind: kind, Note: "one valid record of kind " + kind})
	}
	add("valid-nanoseconds", sealed(goldenBody(did, 9, "2026-11-25T10:00:00.123456789Z", KindDust, data[KindDust])),
		goldenCase{Verdict: "valid", Kind: KindDust, Note: "ts with nanoseconds"})

	good := goldenBody(did, 10, ts, KindDust, data[KindDust])
	full := sealed(good)
	add("malformed-json", full[:len(full)-7], goldenCase{Verdict: "malformed", Note: "envelope JSON cut short"})
	add("malformed-trailing", append(append([]byte{}, full...), []byte(` {}`)...), goldenCase{Verdict: "malformed", Note: "a second JSON value after the envelope"})
	add("bad-base64", envelopeJSON(1, AlgSM2SM3, "eyJkaWQiOi*!", sign(good)), goldenCase{Verdict: "malformed", Note: "body is not base64"})
	add("bad-base64-sig", envelopeJSON(1, AlgSM2SM3, b64(good), "MEUCIQ"), goldenCase{Verdict: "malformed", Note: "sig is unpadded base64"})
	add("base64-line-break", envelopeJSON(1, AlgSM2SM3, b64(good)[:40]+`\n`+b64(good)[40:], sign(good)),
		goldenCase{Verdict: "malformed", Note: "a JSON-escaped line break inside the body's base64"})
	padded := good
	for len(padded)%3 != 1 {
		padded = append(bytes.Clone(padded), ' ')
	}
	add("base64-noncanonical", envelopeJSON(1, AlgSM2SM3, nonCanonicalB64(padded), sign(padded)),
		goldenCase{Verdict: "malformed", Note: "body base64 with non-zero padding bits (decodes, but is not the canonical form)"})
	add("unknown-version", envelopeJSON(2, AlgSM2SM3, b64(good), sign(good)), goldenCase{Verdict: "version", Note: `"v":2`})
	add("unknown-alg", envelopeJSON(1, "SM2-SHA256", b64(good), sign(good)), goldenCase{Verdict: "algorithm", Note: `"alg":"SM2-SHA256"`})
	add("envelope-unknown-member", fmt.Appendf(nil, `{"v":1,"alg":"SM2-SM3","body":"%s","sig":"%s","key":"x"}`, b64(good), sign(good)),
		goldenCase{Verdict: "malformed", Note: "envelope member not in the format"})
	add("bad-signature", envelopeJSON(1, AlgSM2SM3, b64(good), sign(goldenBody(did, 11, ts, KindDust, data[KindDust]))),
		goldenCase{Verdict: "signature", Note: "signature over another body (seq 11)"})
	add("did-mismatch", sealed(goldenBody("did:ea:00112233445566778899aabbccddeeff", 10, ts, KindDust, data[KindDust])),
		goldenCase{Verdict: "did_mismatch", Note: "body names a DID that is not the key's, signed by the key"})
	big := goldenBody(did, 10, ts, KindDust, `{"pm25_ugm3":35.2,"pm10_ugm3":71,"noise_dba":62.5,"pad":"`+strings.Repeat("x", DefaultMaxBody)+`"}`)
	add("too-large", sealed(big), goldenCase{Verdict: "too_large", Note: "body over 16 KiB"})
	add("bad-timestamp", sealed(goldenBody(did, 10, "2026-11-25T18:00:00+08:00", KindDust, data[KindDust])),
		goldenCase{Verdict: "timestamp", Note: "ts with an offset instead of Z"})
	add("bad-timestamp-date", sealed(goldenBody(did, 10, "2026-02-30T10:00:00Z", KindDust, data[KindDust])),
		goldenCase{Verdict: "timestamp", Note: "ts on a day that does not exist"})
	add("seq-zero", sealed(goldenBody(did, 0, ts, KindDust, data[KindDust])),
		goldenCase{Verdict: "malformed", Note: "seq starts at 1"})
	add("duplicate-key", sealed(fmt.Appendf(nil, `{"did":"%s","seq":10,"seq":11,"ts":"%s","kind":"env.dust","data":%s}`, did, ts, data[KindDust])),
		goldenCase{Verdict: "malformed", Note: "body names seq twice"})
	add("duplicate-key-data", sealed(goldenBody(did, 10, ts, KindDust, `{"pm25_ugm3":35.2,"pm10_ugm3":71,"noise_dba":62.5,"noise_dba":30}`)),
		goldenCase{Verdict: "malformed", Note: "data names noise_dba twice"})
	add("member-case", sealed(fmt.Appendf(nil, `{"DID":"%s","seq":10,"ts":"%s","kind":"env.dust","data":%s}`, did, ts, data[KindDust])),
		goldenCase{Verdict: "malformed", Note: `"DID" is not "did" (encoding/json alone would match it)`})
	add("schema-unknown-kind", sealed(goldenBody(did, 10, ts, "payroll.bonus", data[KindWage])),
		goldenCase{Verdict: "schema", Field: "", Note: "kind payroll.bonus does not exist"})
	add("schema-missing-field", sealed(goldenBody(did, 10, ts, KindDust, `{"pm25_ugm3":35.2,"pm10_ugm3":71}`)),
		goldenCase{Verdict: "schema", Field: "noise_dba", Note: "noise_dba missing"})
	add("schema-out-of-range", sealed(goldenBody(did, 10, ts, KindDust, `{"pm25_ugm3":5000,"pm10_ugm3":71,"noise_dba":62.5}`)),
		goldenCase{Verdict: "schema", Field: "pm25_ugm3", Note: "PM2.5 of 5000 µg/m³"})
	add("schema-fraction-of-fen", sealed(goldenBody(did, 10, ts, KindWage, strings.Replace(data[KindWage], "861250", "861250.5", 1))),
		goldenCase{Verdict: "schema", Field: "amount_fen", Note: "half a fen"})
	add("schema-unknown-field", sealed(goldenBody(did, 10, ts, KindDust, `{"pm25_ugm3":35.2,"pm10_ugm3":71,"noise_dba":62.5,"temp_c":21}`)),
		goldenCase{Verdict: "schema", Field: "temp_c", Note: "field not in env.dust"})
	add("schema-raw-worker-id", sealed(goldenBody(did, 10, ts, KindAttendance, strings.Replace(data[KindAttendance], goldenWorker, "110101199003074514", 1))),
		goldenCase{Verdict: "schema", Field: "worker", Note: "a raw ID-card number instead of a salted reference"})
	add("schema-bad-enum", sealed(goldenBody(did, 10, ts, KindSurvey, strings.Replace(data[KindSurvey], "gnss-rtk", "theodolite", 1))),
		goldenCase{Verdict: "schema", Field: "instrument", Note: "instrument not one of total-station/gnss-rtk/level"})

	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(goldenDir, "manifest.json"), append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func loadGolden(t testing.TB) (goldenManifest, *ecdsa.PublicKey) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(goldenDir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m goldenManifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	pub, err := ReadPublicKeyFile(filepath.Join(goldenDir, m.Key))
	if err != nil {
		t.Fatal(err)
	}
	return m, pub
}

func TestGolden(t *testing.T) {
	if update {
		writeGolden(t)
	}
	m, pub := loadGolden(t)
	if len(m.Cases) == 0 {
		t.Fatal("manifest lists no cases")
	}
	// The key in the directory is the one that made the public key file.
	s, err := loadGoldenKey(filepath.Join(goldenDir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Public().Equal(pub) {
		t.Fatal("key.pem and key.pub.pem differ")
	}
	listed := map[string]bool{}
	verdicts := map[string]bool{}
	for _, c := range m.Cases {
		listed[c.File] = true
		verdicts[c.Verdict] = true
		t.Run(strings.TrimSuffix(c.File, ".env.json"), func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(goldenDir, c.File))
			if err != nil {
				t.Fatal(err)
			}
			o, err := Verify(raw, pub, m.MaxBody)
			got := "valid"
			if err != nil {
				got = Reason(err)
			}
			if got != c.Verdict {
				t.Fatalf("verdict %q (%v), want %q (%s)", got, err, c.Verdict, c.Note)
			}
			switch {
			case err == nil:
				if o.Body.Kind != c.Kind || o.Body.DID != DIDFromPublicKey(pub) {
					t.Fatalf("opened kind %q DID %s, want %q %s", o.Body.Kind, o.Body.DID, c.Kind, DIDFromPublicKey(pub))
				}
			case c.Verdict == "schema":
				var fe *FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("schema error %v is not a *FieldError", err)
				}
				if fe.Field != c.Field {
					t.Fatalf("schema error names field %q, want %q (%v)", fe.Field, c.Field, err)
				}
			}
		})
	}
	// Every envelope in the directory is in the manifest.
	files, _ := filepath.Glob(filepath.Join(goldenDir, "*.env.json"))
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s is not in manifest.json", f)
		}
	}
	// Every reason Verify can give has at least one golden envelope.
	for _, r := range []string{"valid", "malformed", "version", "algorithm", "too_large", "timestamp", "did_mismatch", "signature", "schema"} {
		if !verdicts[r] {
			t.Errorf("no golden envelope with verdict %q", r)
		}
	}
	if kinds := Kinds(); !slices.Equal(kinds, []string{KindDust, KindAttendance, KindWage, KindSurvey}) {
		t.Errorf("Kinds() = %v: add a golden envelope for each new kind", kinds)
	}
}

// loadGoldenKey reads the golden vectors' key. It is published test data,
// checked out with the repository's file mode (0644), so it is read without
// the private key file mode check that ReadPrivateKeyFile makes.
func loadGoldenKey(path string) (*KeySigner, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	priv, err := ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, err
	}
	return NewKeySigner(priv), nil
}
