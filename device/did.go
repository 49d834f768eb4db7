package device

import (
	"crypto/ecdsa"
	"encoding/hex"
	"errors"

	"github.com/emmansun/gmsm/sm3"
)

// DIDPrefix starts every edgeanchor identifier.
const DIDPrefix = "did:ea:"

// DID identifies a device or gateway: "did:ea:" followed by the first 16
// bytes, in lowercase hex, of SM3 over the key's 65-byte uncompressed point.
type DID string

// ErrBadDID means a string is not of the form did:ea:<32 lowercase hex>.
var ErrBadDID = errors.New("device: malformed DID (want did:ea: and 32 lowercase hex digits)")

// DIDFromPublicKey derives the DID of pub.
func DIDFromPublicKey(pub *ecdsa.PublicKey) DID {
	sum := sm3.Sum(PublicKeyRaw(pub))
	return DID(DIDPrefix + hex.EncodeToString(sum[:16]))
}

// ParseDID checks the form of s.
func ParseDID(s string) (DID, error) {
	if !validDID(s) {
		return "", ErrBadDID
	}
	return DID(s), nil
}

// validDID reports whether s is DIDPrefix and 32 lower-case hex digits.
func validDID[T string | []byte](s T) bool {
	if len(s) != len(DIDPrefix)+32 || string(s[:len(DIDPrefix)]) != DIDPrefix {
		return false
	}
	for i := len(DIDPrefix); i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// String returns the DID as text.
func (d DID) String() string { return string(d) }

// Matches reports whether d is the DID of pub.
func (d DID) Matches(pub *ecdsa.PublicKey) bool { return DIDFromPublicKey(pub) == d }
