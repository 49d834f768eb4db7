package device

import (
	"crypto/ecdsa"
	"encoding/hex"
	"errors"
	"strings"

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
	rest, ok := strings.CutPrefix(s, DIDPrefix)
	if !ok || len(rest) != 32 {
		return "", ErrBadDID
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", ErrBadDID
		}
	}
	return DID(s), nil
}

// String returns the DID as text.
func (d DID) String() string { return string(d) }

// Matches reports whether d is the DID of pub.
func (d DID) Matches(pub *ecdsa.PublicKey) bool { return DIDFromPublicKey(pub) == d }
