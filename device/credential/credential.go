// Package credential is the one home of what a device presents to a gateway
// to be let in (docs/protocol.md, "Connecting a device" and "Enrollment
// credential"): the connect credential
//
//	ea1.{unix}.{nonce}.{sig}
//
// the enrollment credential
//
//	ea1-enroll.{token}.{reg}.{sig}
//
// and the device-made registration body {reg} it carries, which the gateway
// forwards to the ledger inside a RegisterDevice transaction. Each is made
// and parsed here only; a device, the broker, the gateway's enroller, the
// ledger and the bundle verifier all use these functions. The package
// imports nothing of this module but device.
package credential

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
)

// Password prefixes: a device's MQTT password starting with ConnectPrefix is
// a connect credential, one starting with EnrollPrefix an enrollment
// credential.
const (
	ConnectPrefix = "ea1."
	EnrollPrefix  = "ea1-enroll."
	// connectContext is the first line of the signed connect message.
	connectContext = "edgeanchor-connect-v1"
)

// Connect is a parsed connect credential. Its signature is not checked by
// ParseConnect: verify it with the device's registered key over
// ConnectMessage(did, c.Unix, c.Nonce).
type Connect struct {
	Unix  int64
	Nonce string
	Sig   []byte
}

// ConnectMessage returns the bytes a device signs to connect:
//
//	edgeanchor-connect-v1\n{did}\n{unix}\n{nonce}
//
// (no trailing newline).
func ConnectMessage(did device.DID, unix int64, nonce string) []byte {
	return []byte(connectContext + "\n" + string(did) + "\n" + strconv.FormatInt(unix, 10) + "\n" + nonce)
}

// MakeConnect signs a fresh connect credential for s at now with a random
// 16-byte nonce.
func MakeConnect(s device.Signer, now time.Time) (string, error) {
	nonce, err := randomNonce()
	if err != nil {
		return "", err
	}
	unix := now.Unix()
	sig, err := s.Sign(ConnectMessage(s.DID(), unix, nonce))
	if err != nil {
		return "", err
	}
	return ConnectPrefix + strconv.FormatInt(unix, 10) + "." + nonce + "." + base64.StdEncoding.EncodeToString(sig), nil
}

// ParseConnect checks the form of a connect credential: a decimal unix time
// of at most 12 digits, a nonce of 16 to 64 lowercase hex digits and a
// non-empty standard base64 signature.
func ParseConnect(pw string) (Connect, error) {
	var c Connect
	rest, ok := strings.CutPrefix(pw, ConnectPrefix)
	if !ok {
		return c, errors.New("password does not start with " + ConnectPrefix)
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return c, fmt.Errorf("want 4 dot-separated parts, got %d", len(parts)+1)
	}
	if len(parts[0]) == 0 || len(parts[0]) > 12 || parts[0][0] == '+' || parts[0][0] == '-' {
		return c, errors.New("unix time is not a decimal number of seconds")
	}
	unix, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil {
		return c, errors.New("unix time is not a decimal number of seconds")
	}
	nonce := parts[1]
	if len(nonce) < 16 || len(nonce) > 64 {
		return c, fmt.Errorf("nonce has %d characters, want 16 to 64", len(nonce))
	}
	if !isLowerHex(nonce) {
		return c, errors.New("nonce is not lowercase hex")
	}
	if len(parts[2]) > 200 {
		return c, errors.New("signature too long")
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(parts[2])
	if err != nil || len(sig) == 0 {
		return c, errors.New("signature is not base64")
	}
	return Connect{Unix: unix, Nonce: nonce, Sig: sig}, nil
}

// Enroll is a parsed enrollment credential: the one-time token, the
// device-made registration bytes (parse them with ParseRegistration) and the
// device's signature over them (not checked by ParseEnroll).
type Enroll struct {
	Token        string
	Registration []byte
	Sig          []byte
}

// ParseEnroll checks the form of an enrollment credential: a token of 16 to
// 128 lowercase hex digits, standard base64 of a registration of at most
// MaxRegistrationBytes and of a signature of at most 128 bytes.
func ParseEnroll(pw string) (Enroll, error) {
	var c Enroll
	rest, ok := strings.CutPrefix(pw, EnrollPrefix)
	if !ok {
		return c, fmt.Errorf("password does not start with %s", EnrollPrefix)
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return c, fmt.Errorf("want 4 dot-separated parts, got %d", len(parts)+1)
	}
	tok := parts[0]
	if len(tok) < 16 || len(tok) > 128 || !isLowerHex(tok) {
		return c, errors.New("token is not 16-128 lowercase hex digits")
	}
	reg, err := base64.StdEncoding.Strict().DecodeString(parts[1])
	if err != nil || len(reg) == 0 || len(reg) > MaxRegistrationBytes {
		return c, errors.New("registration is not base64 of at most 16 KiB")
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(parts[2])
	if err != nil || len(sig) == 0 || len(sig) > 128 {
		return c, errors.New("signature is not base64 of a DER signature")
	}
	return Enroll{Token: tok, Registration: reg, Sig: sig}, nil
}

// MakeEnroll is what a device does to enroll: sign a fresh registration for
// (kind, site) at now and pack it with the token.
func MakeEnroll(s device.Signer, token, kind, site string, now time.Time) (string, error) {
	reg, err := NewRegistration(s.Public(), kind, site, now, "")
	if err != nil {
		return "", err
	}
	sig, err := s.Sign(reg)
	if err != nil {
		return "", err
	}
	return EnrollPrefix + token + "." + base64.StdEncoding.EncodeToString(reg) + "." + base64.StdEncoding.EncodeToString(sig), nil
}

func randomNonce() (string, error) {
	var nb [16]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return "", fmt.Errorf("credential: nonce: %w", err)
	}
	return hex.EncodeToString(nb[:]), nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if ch := s[i]; !('0' <= ch && ch <= '9' || 'a' <= ch && ch <= 'f') {
			return false
		}
	}
	return true
}
