package device

import (
	"crypto/ecdsa"
	"crypto/rand"
	"fmt"

	"github.com/emmansun/gmsm/sm2"
)

// Signer signs messages with a device's (or a gateway's) SM2 key. The private
// key stays behind it: a file key today, an HSM or secure element later.
//
// Sign must produce a DER-encoded GM/T 0009 SM2 signature over msg itself
// (Z with DefaultUID, then SM3), the bytes `openssl pkeyutl -sign -rawin
// -digest sm3 -pkeyopt distid:1234567812345678` writes. It must be safe for
// concurrent use.
type Signer interface {
	Public() *ecdsa.PublicKey
	DID() DID
	Sign(msg []byte) ([]byte, error)
}

// KeySigner is a Signer over an in-memory SM2 private key.
type KeySigner struct {
	priv *sm2.PrivateKey
	did  DID
}

var _ Signer = (*KeySigner)(nil)

// NewKeySigner wraps priv.
func NewKeySigner(priv *sm2.PrivateKey) *KeySigner {
	return &KeySigner{priv: priv, did: DIDFromPublicKey(&priv.PublicKey)}
}

// LoadKeySigner reads a PEM private key file and wraps it.
func LoadKeySigner(path string) (*KeySigner, error) {
	priv, err := ReadPrivateKeyFile(path)
	if err != nil {
		return nil, err
	}
	return NewKeySigner(priv), nil
}

// Public returns the signer's public key.
func (s *KeySigner) Public() *ecdsa.PublicKey { return &s.priv.PublicKey }

// DID returns the DID of the signer's public key.
func (s *KeySigner) DID() DID { return s.did }

// Sign signs msg with SM2-SM3 and the default ID.
func (s *KeySigner) Sign(msg []byte) ([]byte, error) {
	sig, err := s.priv.Sign(rand.Reader, msg, sm2.DefaultSM2SignerOpts)
	if err != nil {
		return nil, fmt.Errorf("device: sign: %w", err)
	}
	return sig, nil
}

// VerifySignature reports whether sig is a valid DER SM2-SM3 signature by pub
// over msg with the default ID. Callers that verify often should keep one
// parsed *ecdsa.PublicKey per key: the library caches per pointer.
func VerifySignature(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	return sm2.VerifyASN1WithSM2(pub, nil, msg, sig)
}
