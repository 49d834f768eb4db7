package device

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"
)

var goldenTime = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func newSigner(t testing.TB) *KeySigner {
	t.Helper()
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return NewKeySigner(priv)
}

func TestNewBodyBytes(t *testing.T) {
	did := DID("did:ea:00112233445566778899aabbccddeeff")
	got, err := NewBody(did, 42, time.Date(2026, 11, 25, 18, 0, 0, 5000, time.FixedZone("CST", 8*3600)), KindDust,
		map[string]any{"pm25_ugm3": 1.5})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"did":"did:ea:00112233445566778899aabbccddeeff","seq":42,"ts":"2026-11-25T10:00:00.000005Z","kind":"env.dust","data":{"pm25_ugm3":1.5}}`
	if string(got) != want {
		t.Fatalf("NewBody =\n%s\nwant\n%s", got, want)
	}
}

func TestSealVerifyEachKind(t *testing.T) {
	s := newSigner(t)
	for i, kind := range Kinds() {
		body := goldenBody(s.DID(), i+1, "2026-11-25T10:00:00Z", kind, goldenData()[kind])
		env, err := Seal(s, body)
		if err != nil {
			t.Fatal(err)
		}
		o, err := Verify(env, s.Public(), 0)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if string(o.Envelope.Body) != string(body) || o.Body.Kind != kind || o.Body.Seq != uint64(i+1) {
			t.Fatalf("%s: opened %+v", kind, o.Body)
		}
		if !o.Body.Time().Equal(goldenTime) {
			t.Fatalf("%s: Time() = %v", kind, o.Body.Time())
		}
		// The envelope is exactly the documented shape.
		var m map[string]any
		if err := json.Unmarshal(env, &m); err != nil || len(m) != 4 || m["v"] != 1.0 || m["alg"] != "SM2-SM3" {
			t.Fatalf("%s: envelope %s", kind, env)
		}
	}
}

// The signature covers the exact bytes: the same content re-serialised with
// other whitespace does not verify.
func TestSignatureCoversExactBytes(t *testing.T) {
	s := newSigner(t)
	body := goldenBody(s.DID(), 1, "2026-11-25T10:00:00Z", KindDust, goldenData()[KindDust])
	sig, err := s.Sign(body)
	if err != nil {
		t.Fatal(err)
	}
	spaced := strings.Replace(string(body), `"seq":1`, `"seq": 1`, 1)
	env := envelopeJSON(1, AlgSM2SM3, b64([]byte(spaced)), b64(sig))
	if _, err := Verify(env, s.Public(), 0); !errors.Is(err, ErrSignature) {
		t.Fatalf("re-spaced body: err = %v, want ErrSignature", err)
	}
	// Trailing whitespace is part of the signed bytes and is allowed.
	nl := append(body, '\n')
	sig, err = s.Sign(nl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(envelopeJSON(1, AlgSM2SM3, b64(nl), b64(sig)), s.Public(), 0); err != nil {
		t.Fatalf("body with a trailing newline, signed as is: %v", err)
	}
}

func TestOpenMaxBody(t *testing.T) {
	s := newSigner(t)
	body := goldenBody(s.DID(), 1, "2026-11-25T10:00:00Z", KindDust, goldenData()[KindDust])
	env, err := Seal(s, body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(env, len(body)); err != nil {
		t.Fatalf("body at the limit: %v", err)
	}
	if _, err := Open(env, len(body)-1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("body one byte over: %v", err)
	}
	// A huge envelope is refused before it is decoded.
	huge := make([]byte, 1<<20)
	if _, err := Open(huge, 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("1 MiB of zeros: %v", err)
	}
}

func TestParseBodyErrors(t *testing.T) {
	did := "did:ea:00112233445566778899aabbccddeeff"
	ok := func(ts string) string {
		return `{"did":"` + did + `","seq":1,"ts":"` + ts + `","kind":"env.dust","data":{}}`
	}
	tests := []struct {
		name, body string
		want       error
	}{
		{"ok", ok("2026-11-25T10:00:00Z"), nil},
		{"ok fraction", ok("2026-11-25T10:00:00.5Z"), nil},
		{"ok nanoseconds", ok("2026-11-25T10:00:00.123456789Z"), nil},
		{"lower-case z", ok("2026-11-25T10:00:00z"), ErrTimestamp},
		{"lower-case t", ok("2026-11-25t10:00:00Z"), ErrTimestamp},
		{"comma fraction", ok("2026-11-25T10:00:00,5Z"), ErrTimestamp},
		{"offset", ok("2026-11-25T10:00:00+00:00"), ErrTimestamp},
		{"no seconds", ok("2026-11-25T10:00Z"), ErrTimestamp},
		{"ten fraction digits", ok("2026-11-25T10:00:00.1234567890Z"), ErrTimestamp},
		{"hour 24", ok("2026-11-25T24:00:00Z"), ErrTimestamp},
		{"year 1999", ok("1999-12-31T23:59:59Z"), ErrTimestamp},
		{"ts missing", `{"did":"` + did + `","seq":1,"kind":"env.dust","data":{}}`, ErrTimestamp},
		{"ts a number", `{"did":"` + did + `","seq":1,"ts":1,"kind":"env.dust","data":{}}`, ErrMalformed},
		{"not an object", `[]`, ErrMalformed},
		{"null", `null`, ErrMalformed},
		{"bad did", strings.Replace(ok("2026-11-25T10:00:00Z"), "did:ea:0", "did:ea:X", 1), ErrMalformed},
		{"upper-case did", strings.Replace(ok("2026-11-25T10:00:00Z"), "aabbcc", "AABBCC", 1), ErrMalformed},
		{"seq negative", strings.Replace(ok("2026-11-25T10:00:00Z"), `"seq":1`, `"seq":-1`, 1), ErrMalformed},
		{"seq fraction", strings.Replace(ok("2026-11-25T10:00:00Z"), `"seq":1`, `"seq":1.5`, 1), ErrMalformed},
		{"seq string", strings.Replace(ok("2026-11-25T10:00:00Z"), `"seq":1`, `"seq":"1"`, 1), ErrMalformed},
		{"kind empty", strings.Replace(ok("2026-11-25T10:00:00Z"), `"env.dust"`, `""`, 1), ErrMalformed},
		{"data array", strings.Replace(ok("2026-11-25T10:00:00Z"), `"data":{}`, `"data":[]`, 1), ErrMalformed},
		{"data null", strings.Replace(ok("2026-11-25T10:00:00Z"), `"data":{}`, `"data":null`, 1), ErrMalformed},
		{"unknown member", strings.Replace(ok("2026-11-25T10:00:00Z"), `"data":{}`, `"data":{},"x":1`, 1), ErrMalformed},
		{"member case", strings.Replace(ok("2026-11-25T10:00:00Z"), `"kind"`, `"Kind"`, 1), ErrMalformed},
		{"invalid UTF-8", strings.Replace(ok("2026-11-25T10:00:00Z"), `"data":{}`, "\"data\":{\"a\":\"\xff\"}", 1), ErrMalformed},
		{"trailing data", ok("2026-11-25T10:00:00Z") + "{}", ErrMalformed},
		{"too deep", strings.Replace(ok("2026-11-25T10:00:00Z"), `"data":{}`, `"data":{"a":`+strings.Repeat("[", 40)+strings.Repeat("]", 40)+`}`, 1), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b Body
			err := ParseBody([]byte(tt.body), &b)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("ParseBody(%s) = %v, want %v", tt.body, err, tt.want)
			}
		})
	}
}

func TestOpenEnvelopeErrors(t *testing.T) {
	s := newSigner(t)
	body := goldenBody(s.DID(), 1, "2026-11-25T10:00:00Z", KindDust, goldenData()[KindDust])
	sig, err := s.Sign(body)
	if err != nil {
		t.Fatal(err)
	}
	b, g := b64(body), b64(sig)
	tests := []struct {
		name, env string
		want      string
	}{
		{"ok", `{"v":1,"alg":"SM2-SM3","body":"` + b + `","sig":"` + g + `"}`, "valid"},
		{"ok with spaces and newline", "{ \"v\": 1, \"alg\": \"SM2-SM3\", \"body\": \"" + b + "\", \"sig\": \"" + g + "\" }\n", "valid"},
		{"members reordered", `{"sig":"` + g + `","body":"` + b + `","alg":"SM2-SM3","v":1}`, "valid"},
		{"v missing", `{"alg":"SM2-SM3","body":"` + b + `","sig":"` + g + `"}`, "version"},
		{"v string", `{"v":"1","alg":"SM2-SM3","body":"` + b + `","sig":"` + g + `"}`, "malformed"},
		{"alg lower case", `{"v":1,"alg":"sm2-sm3","body":"` + b + `","sig":"` + g + `"}`, "algorithm"},
		{"sig empty", `{"v":1,"alg":"SM2-SM3","body":"` + b + `","sig":""}`, "malformed"},
		{"sig missing", `{"v":1,"alg":"SM2-SM3","body":"` + b + `"}`, "malformed"},
		{"body url-safe base64", `{"v":1,"alg":"SM2-SM3","body":"` + strings.NewReplacer("+", "-", "/", "_").Replace(b) + `","sig":"` + g + `"}`, "?"},
		{"duplicate v", `{"v":1,"v":2,"alg":"SM2-SM3","body":"` + b + `","sig":"` + g + `"}`, "malformed"},
		{"member case", `{"V":1,"alg":"SM2-SM3","body":"` + b + `","sig":"` + g + `"}`, "malformed"},
		{"sig garbage DER", `{"v":1,"alg":"SM2-SM3","body":"` + b + `","sig":"AAAA"}`, "signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Verify([]byte(tt.env), s.Public(), 0)
			got := "valid"
			if err != nil {
				got = Reason(err)
			}
			if tt.want == "?" {
				// url-safe base64 only decodes by chance (no + or / in
				// this body); either way it must not be "other".
				if got == "other" {
					t.Fatalf("reason other: %v", err)
				}
				return
			}
			if got != tt.want {
				t.Fatalf("Verify = %q (%v), want %q", got, err, tt.want)
			}
		})
	}
}

func TestVerifyWrongKeyAndNilKey(t *testing.T) {
	a, b := newSigner(t), newSigner(t)
	body := goldenBody(a.DID(), 1, "2026-11-25T10:00:00Z", KindDust, goldenData()[KindDust])
	env, err := Seal(a, body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(env, b.Public(), 0); !errors.Is(err, ErrDIDMismatch) {
		t.Fatalf("other key: %v", err)
	}
	o, err := Open(env, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.VerifySignature(nil); !errors.Is(err, ErrSignature) {
		t.Fatalf("nil key: %v", err)
	}
	// A body naming b's DID but signed by a: the DID matches b, the
	// signature does not.
	forged := goldenBody(b.DID(), 1, "2026-11-25T10:00:00Z", KindDust, goldenData()[KindDust])
	sig, err := a.Sign(forged)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(envelopeJSON(1, AlgSM2SM3, b64(forged), b64(sig)), b.Public(), 0); !errors.Is(err, ErrSignature) {
		t.Fatalf("body for b signed by a: %v", err)
	}
}

func TestReason(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("x: %w", ErrMalformed), "malformed"},
		{fmt.Errorf("x: %w", ErrVersion), "version"},
		{ErrAlgorithm, "algorithm"},
		{ErrTooLarge, "too_large"},
		{ErrTimestamp, "timestamp"},
		{ErrDIDMismatch, "did_mismatch"},
		{ErrSignature, "signature"},
		{fmt.Errorf("wrapped: %w", &FieldError{Kind: "k", Field: "f", Reason: "r"}), "schema"},
		{errors.New("disk full"), "other"},
	} {
		if got := Reason(tt.err); got != tt.want {
			t.Errorf("Reason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestKeySignerConcurrent(t *testing.T) {
	s := newSigner(t)
	body := []byte(`{"x":1}`)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 5 {
				sig, err := s.Sign(body)
				if err != nil {
					errs <- err
					return
				}
				if !VerifySignature(s.Public(), body, sig) {
					errs <- errors.New("signature does not verify")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestParseDID(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"did:ea:00112233445566778899aabbccddeeff", true},
		{"did:ea:00112233445566778899AABBCCDDEEFF", false},
		{"did:ea:00112233445566778899aabbccddeef", false},
		{"did:ea:00112233445566778899aabbccddeeff0", false},
		{"did:eb:00112233445566778899aabbccddeeff", false},
		{"did:ea:0011223344556677889-aabbccddeeff", false},
		{"", false},
	} {
		_, err := ParseDID(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseDID(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadDID) {
			t.Errorf("ParseDID(%q) error %v is not ErrBadDID", tt.in, err)
		}
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	kp, pp := filepath.Join(dir, "sub", "k.pem"), filepath.Join(dir, "sub", "k.pub.pem")
	if err := WritePrivateKeyFile(kp, priv); err != nil {
		t.Fatal(err)
	}
	if err := WritePublicKeyFile(pp, &priv.PublicKey); err != nil {
		t.Fatal(err)
	}
	if err := WritePublicKeyFile(pp, &priv.PublicKey); err == nil {
		t.Fatal("public key file overwritten")
	}
	s, err := LoadKeySigner(kp)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ReadPublicKeyFile(pp)
	if err != nil {
		t.Fatal(err)
	}
	if s.DID() != DIDFromPublicKey(pub) || !priv.Equal(s.priv) {
		t.Fatal("keys read back differ")
	}
	if _, err := ReadPrivateKeyFile(pp); err == nil {
		t.Fatal("a public key file loads as a private key")
	}
	if _, err := ReadPublicKeyFile(kp); err == nil {
		t.Fatal("a private key file loads as a public key")
	}
	if _, err := ReadPrivateKeyFile(filepath.Join(dir, "missing.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}

	// SEC 1 "EC PRIVATE KEY" form is read too.
	sec1, err := smx509.MarshalSM2PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := ParsePrivateKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}))
	if err != nil || !p2.Equal(priv) {
		t.Fatalf("SEC 1 key: %v", err)
	}

	// NIST P-256 keys are refused with ErrNotSM2.
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(p256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParsePrivateKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err == nil {
		t.Fatal("P-256 private key accepted")
	}
	pder, err := x509.MarshalPKIXPublicKey(&p256.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParsePublicKeyDER(pder); !errors.Is(err, ErrNotSM2) {
		t.Fatalf("P-256 public key: %v", err)
	}
	if _, err := MarshalPublicKeyDER(&p256.PublicKey); !errors.Is(err, ErrNotSM2) {
		t.Fatalf("marshal P-256 public key: %v", err)
	}
	for name, data := range map[string]string{"empty": "", "garbage": "not a key", "certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"} {
		if _, err := ParsePrivateKeyPEM([]byte(data)); err == nil {
			t.Errorf("%s accepted as private key", name)
		}
		if _, err := ParsePublicKeyPEM([]byte(data)); err == nil {
			t.Errorf("%s accepted as public key", name)
		}
	}
}

func TestParsePublicKeyRaw(t *testing.T) {
	s := newSigner(t)
	raw := PublicKeyRaw(s.Public())
	pub, err := ParsePublicKeyRaw(raw)
	if err != nil || !pub.Equal(s.Public()) {
		t.Fatalf("round trip: %v", err)
	}
	off := append([]byte{}, raw...)
	off[64] ^= 1
	if _, err := ParsePublicKeyRaw(off); err == nil {
		t.Fatal("point off the curve accepted")
	}
	if _, err := ParsePublicKeyRaw(raw[:64]); err == nil {
		t.Fatal("64-byte point accepted")
	}
	comp := append([]byte{2}, raw[1:33]...)
	if _, err := ParsePublicKeyRaw(comp); err == nil {
		t.Fatal("compressed point accepted")
	}
}

func TestDecodeBase64Canonical(t *testing.T) {
	for in, ok := range map[string]bool{
		"QQ==": true, "QUI=": true, "QUJD": true, "": true,
		"QR==":   false, // unused bits set: also "A" to a lenient decoder
		"QUJ=":   false,
		"QQ":     false, // unpadded
		"QU\nJD": false, "QUJD\r\n": false,
		"QU JD": false, "QUJD-_": false,
	} {
		_, err := decodeBase64(in)
		if (err == nil) != ok {
			t.Errorf("decodeBase64(%q) = %v, want ok=%v", in, err, ok)
		}
	}
}
