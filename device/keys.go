// Package device holds what a field device is: its SM2 key, its DID, the
// signed telemetry envelope it publishes and the schemas of the readings it
// carries. It imports nothing else of edgeanchor.
package device

import (
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
)

// DefaultUID is the signer ID of GM/T 0009 that every edgeanchor signature
// uses (the same value OpenSSL takes with -pkeyopt distid:1234567812345678).
const DefaultUID = "1234567812345678"

// ErrNotSM2 means a PEM file held a key of another algorithm or curve. Make a
// new key with `edgeanchor keygen` or `openssl genpkey -algorithm SM2`.
var ErrNotSM2 = errors.New("device: not an SM2 key")

// GenerateKey makes a new SM2 private key from crypto/rand.
func GenerateKey() (*sm2.PrivateKey, error) {
	return sm2.GenerateKey(rand.Reader)
}

// MarshalPrivateKeyPEM encodes priv as a PKCS#8 "PRIVATE KEY" PEM block, the
// form `openssl genpkey -algorithm SM2` writes.
func MarshalPrivateKeyPEM(priv *sm2.PrivateKey) ([]byte, error) {
	der, err := smx509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("device: marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalPublicKeyPEM encodes pub as a SubjectPublicKeyInfo "PUBLIC KEY" PEM
// block, the form `openssl pkey -pubout` writes.
func MarshalPublicKeyPEM(pub *ecdsa.PublicKey) ([]byte, error) {
	der, err := MarshalPublicKeyDER(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// MarshalPublicKeyDER encodes pub as DER SubjectPublicKeyInfo.
func MarshalPublicKeyDER(pub *ecdsa.PublicKey) ([]byte, error) {
	if pub == nil || pub.Curve != sm2.P256() {
		return nil, ErrNotSM2
	}
	der, err := smx509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("device: marshal public key: %w", err)
	}
	return der, nil
}

// ParsePrivateKeyPEM reads the first PEM block of data as a PKCS#8 SM2 key.
// OpenSSL's "EC PRIVATE KEY" (SEC 1) form is accepted too.
func ParsePrivateKeyPEM(data []byte) (*sm2.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("device: no PEM block in private key file")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = smx509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = smx509.ParseSM2PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("device: PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("device: parse private key: %w", err)
	}
	priv, ok := key.(*sm2.PrivateKey)
	if !ok {
		return nil, ErrNotSM2
	}
	return priv, nil
}

// ParsePublicKeyPEM reads the first PEM block of data as an SM2
// SubjectPublicKeyInfo.
func ParsePublicKeyPEM(data []byte) (*ecdsa.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("device: no PEM block in public key file")
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("device: PEM block %q is not a public key", block.Type)
	}
	return ParsePublicKeyDER(block.Bytes)
}

// ParsePublicKeyDER reads a DER SubjectPublicKeyInfo holding an SM2 key.
func ParsePublicKeyDER(der []byte) (*ecdsa.PublicKey, error) {
	key, err := smx509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("device: parse public key: %w", err)
	}
	pub, ok := key.(*ecdsa.PublicKey)
	if !ok || pub.Curve != sm2.P256() {
		return nil, ErrNotSM2
	}
	return pub, nil
}

// ParsePublicKeyRaw reads the 65-byte uncompressed point 04‖X‖Y.
func ParsePublicKeyRaw(raw []byte) (*ecdsa.PublicKey, error) {
	if len(raw) != 65 || raw[0] != 4 {
		return nil, errors.New("device: public key is not a 65-byte uncompressed point")
	}
	pub, err := sm2.NewPublicKey(raw)
	if err != nil {
		return nil, fmt.Errorf("device: parse public key: %w", err)
	}
	return pub, nil
}

// PublicKeyRaw returns the 65-byte uncompressed point 04‖X‖Y of pub.
func PublicKeyRaw(pub *ecdsa.PublicKey) []byte {
	out := make([]byte, 65)
	out[0] = 4
	pub.X.FillBytes(out[1:33])
	pub.Y.FillBytes(out[33:65])
	return out
}

// WritePrivateKeyFile writes priv to path as PKCS#8 PEM with mode 0600. It
// refuses to overwrite an existing file, so a key is never lost by mistake.
func WritePrivateKeyFile(path string, priv *sm2.PrivateKey) error {
	data, err := MarshalPrivateKeyPEM(priv)
	if err != nil {
		return err
	}
	return writeNew(path, data, 0o600)
}

// WritePublicKeyFile writes pub to path as SubjectPublicKeyInfo PEM (0644).
func WritePublicKeyFile(path string, pub *ecdsa.PublicKey) error {
	data, err := MarshalPublicKeyPEM(pub)
	if err != nil {
		return err
	}
	return writeNew(path, data, 0o644)
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("device: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("device: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("device: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("device: sync %s: %w", path, err)
	}
	return f.Close()
}

// ReadPrivateKeyFile loads a PEM private key from path.
func ReadPrivateKeyFile(path string) (*sm2.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	priv, err := ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return priv, nil
}

// ReadPublicKeyFile loads a PEM public key from path.
func ReadPublicKeyFile(path string) (*ecdsa.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	pub, err := ParsePublicKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pub, nil
}
