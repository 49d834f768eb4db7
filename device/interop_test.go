package device

import (
	"bytes"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	tjsm2 "github.com/tjfoc/gmsm/sm2"
	tjx509 "github.com/tjfoc/gmsm/x509"
)

// Interop with OpenSSL 3 (`openssl` on PATH; .ci/run installs it, and these
// tests fail rather than skip without it) and with tjfoc/gmsm v1.4.1, a
// second, independent SM2 implementation used only here.

const distid = "distid:" + DefaultUID

// openssl runs the openssl CLI in dir and returns its stdout; it fails the
// test if openssl is missing or exits non-zero.
func openssl(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	out, err := opensslErr(t, dir, args...)
	if err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, out)
	}
	return out
}

func opensslErr(t *testing.T, dir string, args ...string) ([]byte, error) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl 3 is required for the interop tests (.ci/run installs it): %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if err != nil {
		return append(stdout.Bytes(), stderr.Bytes()...), err
	}
	return stdout.Bytes(), nil
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func dustBody(t *testing.T, did DID, seq uint64) []byte {
	t.Helper()
	body, err := NewBody(did, seq, time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), KindDust,
		map[string]any{"pm25_ugm3": 35.2, "pm10_ugm3": 71, "noise_dba": 62.5})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func TestOpenSSLVersion(t *testing.T) {
	out := openssl(t, t.TempDir(), "version")
	if !bytes.HasPrefix(out, []byte("OpenSSL 3.")) {
		t.Fatalf("need OpenSSL 3.x for SM2 -rawin signing, have %q", out)
	}
}

// An openssl-made key and an openssl-made signature over a body verify with
// our code, inside a full envelope.
func TestInteropOpenSSLSignsWeVerify(t *testing.T) {
	dir := t.TempDir()
	openssl(t, dir, "genpkey", "-algorithm", "SM2", "-out", "key.pem")
	openssl(t, dir, "pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem")

	priv, err := ReadPrivateKeyFile(filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatalf("openssl's private key does not load: %v", err)
	}
	pub, err := ReadPublicKeyFile(filepath.Join(dir, "pub.pem"))
	if err != nil {
		t.Fatalf("openssl's public key does not load: %v", err)
	}
	if !pub.Equal(&priv.PublicKey) {
		t.Fatal("public key file does not match the private key")
	}
	// The 65-byte point is the tail of the SPKI DER, as docs/envelope.md says.
	der := openssl(t, dir, "pkey", "-in", "key.pem", "-pubout", "-outform", "DER")
	if !bytes.Equal(der[len(der)-65:], PublicKeyRaw(pub)) {
		t.Fatalf("last 65 bytes of SPKI DER %x != point %x", der[len(der)-65:], PublicKeyRaw(pub))
	}

	did := DIDFromPublicKey(pub)
	body := dustBody(t, did, 1)
	writeFile(t, filepath.Join(dir, "body.json"), body)
	openssl(t, dir, "pkeyutl", "-sign", "-rawin", "-digest", "sm3", "-pkeyopt", distid,
		"-inkey", "key.pem", "-in", "body.json", "-out", "body.sig")
	sig, err := os.ReadFile(filepath.Join(dir, "body.sig"))
	if err != nil {
		t.Fatal(err)
	}
	if !VerifySignature(pub, body, sig) {
		t.Fatal("openssl's signature does not verify with VerifySignature")
	}
	env := fmt.Appendf(nil, `{"v":1,"alg":"SM2-SM3","body":%q,"sig":%q}`, EncodeSig(body), EncodeSig(sig))
	o, err := Verify(env, pub, 0)
	if err != nil {
		t.Fatalf("envelope around openssl's signature: %v", err)
	}
	if o.Body.DID != did || o.Body.Seq != 1 || o.Body.Kind != KindDust {
		t.Fatalf("opened body = %+v", o.Body)
	}

	// A signature made with another signer ID must not verify: the ID is
	// part of what is signed.
	openssl(t, dir, "pkeyutl", "-sign", "-rawin", "-digest", "sm3", "-pkeyopt", "distid:ALICE123@YAHOO.COM",
		"-inkey", "key.pem", "-in", "body.json", "-out", "alice.sig")
	alice, err := os.ReadFile(filepath.Join(dir, "alice.sig"))
	if err != nil {
		t.Fatal(err)
	}
	if VerifySignature(pub, body, alice) {
		t.Fatal("a signature with signer ID ALICE123@YAHOO.COM verifies under the default ID")
	}
}

// Keys we write load in openssl, and our signature verifies with
// `openssl pkeyutl -verify`; a changed body does not.
func TestInteropWeSignOpenSSLVerifies(t *testing.T) {
	dir := t.TempDir()
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyPath, pubPath := filepath.Join(dir, "key.pem"), filepath.Join(dir, "pub.pem")
	if err := WritePrivateKeyFile(keyPath, priv); err != nil {
		t.Fatal(err)
	}
	if err := WritePublicKeyFile(pubPath, &priv.PublicKey); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v, want 0600", st.Mode().Perm())
	}
	if err := WritePrivateKeyFile(keyPath, priv); err == nil {
		t.Fatal("WritePrivateKeyFile overwrote an existing key")
	}

	openssl(t, dir, "pkey", "-in", "key.pem", "-check", "-noout")
	text := openssl(t, dir, "pkey", "-in", "key.pem", "-text", "-noout")
	if !bytes.Contains(text, []byte("SM2")) {
		t.Fatalf("openssl does not see an SM2 key:\n%s", text)
	}
	// openssl derives the same SubjectPublicKeyInfo from our private key as
	// we wrote, and reads our public key file.
	opub := openssl(t, dir, "pkey", "-in", "key.pem", "-pubout")
	ours, err := os.ReadFile(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pemBytes(t, opub), pemBytes(t, ours)) {
		t.Fatalf("openssl's public key\n%s\n!= ours\n%s", opub, ours)
	}
	openssl(t, dir, "pkey", "-pubin", "-in", "pub.pem", "-noout")

	s := NewKeySigner(priv)
	body := dustBody(t, s.DID(), 7)
	sig, err := s.Sign(body)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "body.json"), body)
	writeFile(t, filepath.Join(dir, "body.sig"), sig)
	out := openssl(t, dir, "pkeyutl", "-verify", "-rawin", "-digest", "sm3", "-pkeyopt", distid,
		"-pubin", "-inkey", "pub.pem", "-in", "body.json", "-sigfile", "body.sig")
	if !bytes.Contains(out, []byte("Signature Verified Successfully")) {
		t.Fatalf("openssl pkeyutl -verify: %s", out)
	}

	tampered := bytes.Replace(body, []byte(`"seq":7`), []byte(`"seq":8`), 1)
	writeFile(t, filepath.Join(dir, "tampered.json"), tampered)
	if out, err := opensslErr(t, dir, "pkeyutl", "-verify", "-rawin", "-digest", "sm3", "-pkeyopt", distid,
		"-pubin", "-inkey", "pub.pem", "-in", "tampered.json", "-sigfile", "body.sig"); err == nil {
		t.Fatalf("openssl verifies our signature over a changed body: %s", out)
	}
}

func pemBytes(t *testing.T, data []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("no PEM in %q", data)
	}
	return b.Bytes
}

// Signatures and PEM keys cross over to tjfoc/gmsm v1.4.1 and back.
func TestInteropTjfoc(t *testing.T) {
	// Our key and signature → tjfoc.
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s := NewKeySigner(priv)
	body := dustBody(t, s.DID(), 3)
	sig, err := s.Sign(body)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := MarshalPublicKeyPEM(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	tjPub, err := tjx509.ReadPublicKeyFromPem(pubPEM)
	if err != nil {
		t.Fatalf("tjfoc cannot read our public key PEM: %v", err)
	}
	if !tjPub.Verify(body, sig) {
		t.Fatal("tjfoc does not verify our signature")
	}
	if tjPub.Verify(append(bytes.Clone(body), ' '), sig) {
		t.Fatal("tjfoc verifies our signature over other bytes")
	}
	privPEM, err := MarshalPrivateKeyPEM(priv)
	if err != nil {
		t.Fatal(err)
	}
	tjPriv, err := tjx509.ReadPrivateKeyFromPem(privPEM, nil)
	if err != nil {
		t.Fatalf("tjfoc cannot read our PKCS#8 key: %v", err)
	}
	if tjPriv.D.Cmp(priv.D) != 0 {
		t.Fatal("tjfoc reads another private scalar from our PEM")
	}

	// tjfoc's key and signature → us.
	tk, err := tjsm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tkPEM, err := tjx509.WritePrivateKeyToPem(tk, nil)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := ParsePrivateKeyPEM(tkPEM)
	if err != nil {
		t.Fatalf("tjfoc's PKCS#8 key does not load: %v", err)
	}
	tkPubPEM, err := tjx509.WritePublicKeyToPem(&tk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKeyPEM(tkPubPEM)
	if err != nil {
		t.Fatalf("tjfoc's public key does not load: %v", err)
	}
	if !pub.Equal(&ours.PublicKey) || ours.D.Cmp(tk.D) != 0 {
		t.Fatal("keys read from tjfoc's PEM do not match tjfoc's key")
	}
	body = dustBody(t, DIDFromPublicKey(pub), 4)
	tsig, err := tk.Sign(rand.Reader, body, nil) // default ID 1234567812345678
	if err != nil {
		t.Fatal(err)
	}
	env := fmt.Appendf(nil, `{"v":1,"alg":"SM2-SM3","body":%q,"sig":%q}`, EncodeSig(body), EncodeSig(tsig))
	if _, err := Verify(env, pub, 0); err != nil {
		t.Fatalf("envelope with tjfoc's signature: %v", err)
	}
	r, sv, err := tjsm2.Sm2Sign(tk, body, []byte(DefaultUID), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if !tjsm2.Sm2Verify(&tk.PublicKey, body, []byte(DefaultUID), r, sv) {
		t.Fatal("tjfoc does not verify its own signature")
	}
	other, err := tjsm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	osig, err := other.Sign(rand.Reader, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	if VerifySignature(pub, body, osig) {
		t.Fatal("a signature by another tjfoc key verifies")
	}
}
