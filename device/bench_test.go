package device

import (
	"testing"
)

// Micro benchmarks (make bench). One key is parsed once and reused, as the
// gateway does: emmansun/gmsm caches Z and its key conversion per pointer.

func benchSetup(b *testing.B) (*KeySigner, []byte, []byte) {
	b.Helper()
	priv, err := GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	s := NewKeySigner(priv)
	body, err := NewBody(s.DID(), 1, goldenTime, KindDust, map[string]any{"pm25_ugm3": 35.2, "pm10_ugm3": 71, "noise_dba": 62.5})
	if err != nil {
		b.Fatal(err)
	}
	env, err := Seal(s, body)
	if err != nil {
		b.Fatal(err)
	}
	return s, body, env
}

func BenchmarkSign(b *testing.B) {
	s, body, _ := benchSetup(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := s.Sign(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	s, body, _ := benchSetup(b)
	sig, err := s.Sign(body)
	if err != nil {
		b.Fatal(err)
	}
	pub, err := ParsePublicKeyRaw(PublicKeyRaw(s.Public())) // one parsed key, as a verifier holds it
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if !VerifySignature(pub, body, sig) {
			b.Fatal("signature does not verify")
		}
	}
}

// BenchmarkOpen is the envelope decode and body checks without the
// signature: the work done before the key is even looked up.
func BenchmarkOpen(b *testing.B) {
	_, _, env := benchSetup(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(env)))
	for b.Loop() {
		if _, err := Open(env, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyEnvelope is everything a gateway does per message in
// device/: Open, the schema, the DID and the signature.
func BenchmarkVerifyEnvelope(b *testing.B) {
	s, _, env := benchSetup(b)
	pub, err := ParsePublicKeyRaw(PublicKeyRaw(s.Public()))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(env)))
	for b.Loop() {
		if _, err := Verify(env, pub, 0); err != nil {
			b.Fatal(err)
		}
	}
}
