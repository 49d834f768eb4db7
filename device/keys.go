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
	"io"
	"os"
	"path/filepath"
	"strings"

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

// ErrKeyFileMode means a private key file can be read by its group or by
// others, so the key may no longer be secret; like ssh, the key is refused.
// Restrict the file (chmod 600) and consider replacing the key.
var ErrKeyFileMode = errors.New("device: private key file is readable by group or others")

// ReadPrivateKeyFile loads a PEM private key from path. A file that its
// group or others can read is refused (ErrKeyFileMode, naming the chmod to
// run), except one systemd hands in under $CREDENTIALS_DIRECTORY, whose
// access systemd controls.
func ReadPrivateKeyFile(path string) (*sm2.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 && !systemdCredential(path) {
		return nil, fmt.Errorf("%w: %s has mode %04o; run: chmod 600 %s", ErrKeyFileMode, path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("device: read %s: %w", path, err)
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

// systemdCredential reports whether path lies in the credentials directory
// systemd made for this service (LoadCredential=); systemd shows such a file
// to the service's user only, by ownership or an ACL that widens its mode.
func systemdCredential(path string) bool {
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" {
		return false
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	rel, err := filepath.Rel(filepath.Clean(dir), abs)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}
