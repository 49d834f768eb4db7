package device

import (
	"bytes"
	"encoding/asn1"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm3"
	tjsm2 "github.com/tjfoc/gmsm/sm2"
)

// Known-answer tests with the vectors of the standards.

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// TestSM3KnownAnswers checks the two examples of GB/T 32905-2016 (SM3),
// appendix A (A.1 and A.2), also reproduced by
//
//	printf abc | openssl dgst -sm3
//	printf 'abcd%.0s' $(seq 16) | openssl dgst -sm3
func TestSM3KnownAnswers(t *testing.T) {
	tests := []struct {
		name, msg, want string
	}{
		{"A.1 abc", "abc", "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"},
		{"A.2 abcd x16 (64 bytes)", strings.Repeat("abcd", 16), "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := sm3.Sum([]byte(tt.msg))
			if hex.EncodeToString(got[:]) != tt.want {
				t.Errorf("SM3(%q) = %x, want %s", tt.msg, got, tt.want)
			}
		})
	}
}

// The SM2 digital-signature example on the recommended curve sm2p256v1 of
// GM/T 0003.5-2012 (= GB/T 32918.5-2017) "SM2 … Part 5: Parameter
// definition", Annex A: message "message digest", signer ID the GM/T 0009
// default 1234567812345678. (The examples of GB/T 32918.2-2016 itself use a
// test curve, so they cannot run on sm2p256v1.) The values are copied from
// two public test suites that cite this annex:
//   - OpenSSL test/sm2_internal_test.c, sm2_sig_test ("From Annex A in both
//     GM/T0003.5-2012 and GB/T 32918.5-2016"): d, message, k, r, s;
//     https://github.com/openssl/openssl/blob/0223dfcf1e4d4d6f0a9a671ce570c6a1c057fe93/test/sm2_internal_test.c
//   - chenpengcong/sm2-with-openssl test_sm2_sign_verify.c ("GMT 0003.5-2012 …
//     附录A"): the public key x, y and the hash H = e;
//     https://github.com/chenpengcong/sm2-with-openssl/blob/2f0164fab430ca972b0aeb454de771c42dc8a274/test_sm2_sign_verify.c
//
// ZA is the annex's intermediate value Z_A = SM3(ENTL ‖ ID ‖ a ‖ b ‖ G ‖ P);
// e = SM3(Z_A ‖ M) is the hash H that the second suite lists.
const (
	katD   = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8"
	katX   = "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
	katY   = "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
	katMsg = "message digest"
	katZA  = "B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3"
	katE   = "F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640"
	katK   = "59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21"
	katR   = "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
	katS   = "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"
)

func katSignatureDER(t *testing.T) []byte {
	t.Helper()
	type sig struct{ R, S *big.Int }
	der, err := asn1.Marshal(sig{new(big.Int).SetBytes(mustHex(t, katR)), new(big.Int).SetBytes(mustHex(t, katS))})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSM2SignatureKnownAnswer(t *testing.T) {
	priv, err := sm2.NewPrivateKey(mustHex(t, katD))
	if err != nil {
		t.Fatal(err)
	}
	raw := append(append([]byte{4}, mustHex(t, katX)...), mustHex(t, katY)...)
	if got := PublicKeyRaw(&priv.PublicKey); !bytes.Equal(got, raw) {
		t.Fatalf("public key of d = %x, want %x", got, raw)
	}
	pub, err := ParsePublicKeyRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	za, err := sm2.CalculateZA(pub, []byte(DefaultUID))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(za, mustHex(t, katZA)) {
		t.Errorf("ZA = %X, want %s", za, katZA)
	}
	e, err := sm2.CalculateSM2Hash(pub, []byte(katMsg), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e, mustHex(t, katE)) {
		t.Errorf("e = %X, want %s", e, katE)
	}

	der := katSignatureDER(t)
	if !VerifySignature(pub, []byte(katMsg), der) {
		t.Fatal("VerifySignature rejects the GM/T 0003.5 Annex A signature")
	}
	for name, msg := range map[string]string{"other message": "message digesT", "empty": ""} {
		if VerifySignature(pub, []byte(msg), der) {
			t.Errorf("%s: VerifySignature accepts the annex signature over %q", name, msg)
		}
	}
	bad := bytes.Clone(der)
	bad[len(bad)-1] ^= 1
	if VerifySignature(pub, []byte(katMsg), bad) {
		t.Error("VerifySignature accepts the annex signature with s changed")
	}

	// Our signer's output verifies under the annex key, with its Z.
	s := NewKeySigner(priv)
	mine, err := s.Sign([]byte(katMsg))
	if err != nil {
		t.Fatal(err)
	}
	if !VerifySignature(pub, []byte(katMsg), mine) {
		t.Error("our own signature by the annex key does not verify")
	}
}

// TestSM2SigningKnownAnswerTjfoc reproduces r and s of the annex exactly by
// signing with tjfoc/gmsm and the annex's nonce k (emmansun/gmsm derives its
// nonce by hedging and cannot take k), so that the reference implementation
// our interop tests rely on is itself pinned to the standard.
func TestSM2SigningKnownAnswerTjfoc(t *testing.T) {
	c := tjsm2.P256Sm2()
	d := new(big.Int).SetBytes(mustHex(t, katD))
	priv := &tjsm2.PrivateKey{D: d}
	priv.Curve = c
	priv.X, priv.Y = c.ScalarBaseMult(d.Bytes())
	// tjfoc draws k as (b mod (n-1)) + 1 from 40 bytes b.
	k := new(big.Int).SetBytes(mustHex(t, katK))
	b := new(big.Int).Sub(k, big.NewInt(1)).FillBytes(make([]byte, 40))
	r, s, err := tjsm2.Sm2Sign(priv, []byte(katMsg), []byte(DefaultUID), bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(r.FillBytes(make([]byte, 32))); !strings.EqualFold(got, katR) {
		t.Errorf("r = %s, want %s", got, katR)
	}
	if got := hex.EncodeToString(s.FillBytes(make([]byte, 32))); !strings.EqualFold(got, katS) {
		t.Errorf("s = %s, want %s", got, katS)
	}
}

// TestDIDKnownAnswer pins the DID derivation: did:ea: and the first 16 bytes
// of SM3 over the 65-byte point. For the annex key:
//
//	printf 04%s%s $katX $katY | xxd -r -p | openssl dgst -sm3 -r
//	e6a4f9765fca89e8b7d64019b900d57cd86b4677fa5dc70284c90de05fa77f9c *stdin
func TestDIDKnownAnswer(t *testing.T) {
	raw := append(append([]byte{4}, mustHex(t, katX)...), mustHex(t, katY)...)
	pub, err := ParsePublicKeyRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	const want = DID("did:ea:e6a4f9765fca89e8b7d64019b900d57c")
	if got := DIDFromPublicKey(pub); got != want {
		t.Fatalf("DID = %s, want %s", got, want)
	}
	if _, err := ParseDID(string(want)); err != nil {
		t.Fatalf("ParseDID(%s): %v", want, err)
	}
	if !want.Matches(pub) {
		t.Fatal("Matches is false for the key's own DID")
	}
}
