package broker

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgeanchor/edgeanchor/device"
)

// Connect credential (docs/protocol.md): the MQTT password
//
//	ea1.{unix}.{nonce}.{sig}
//
// where sig is base64 (std) of the device's SM2 signature over
//
//	edgeanchor-connect-v1\n{did}\n{unix}\n{nonce}
const (
	CredentialPrefix = "ea1."
	EnrollPrefix     = "ea1-enroll."
	connectContext   = "edgeanchor-connect-v1"
)

// Reasons a CONNECT is refused: the values of the auth_failures_total
// "reason" label.
const (
	ReasonMalformed        = "malformed"
	ReasonUnknownDevice    = "unknown_device"
	ReasonRevoked          = "revoked"
	ReasonStale            = "stale"
	ReasonReplayed         = "replayed"
	ReasonBadSignature     = "bad_signature"
	ReasonClientIDMismatch = "client_id_mismatch"
	ReasonUnknownAccount   = "unknown_account"
	ReasonBadPassword      = "bad_password"
	ReasonEnrollDisabled   = "enrollment_disabled"
)

// AuthError is a refused CONNECT. Reason is the metric label; Err the detail
// for the log. An Enroller returns one to refuse (with its own reasons, e.g.
// token_used, ledger_unavailable).
type AuthError struct {
	Reason string
	Err    error
	// Hint, when set, is sent to an MQTT 5 client as the CONNACK reason
	// string (no secrets: the device reads it); else "not authorized".
	Hint string
}

func (e *AuthError) Error() string {
	if e.Err == nil {
		return "connect refused: " + e.Reason
	}
	return "connect refused: " + e.Reason + ": " + e.Err.Error()
}

func (e *AuthError) Unwrap() error { return e.Err }

func authErr(reason, format string, args ...any) *AuthError {
	return &AuthError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Credential is a parsed connect credential.
type Credential struct {
	Unix  int64
	Nonce string
	Sig   []byte
}

// ConnectMessage returns the bytes a device signs to connect.
func ConnectMessage(did device.DID, unix int64, nonce string) []byte {
	return []byte(connectContext + "\n" + string(did) + "\n" + strconv.FormatInt(unix, 10) + "\n" + nonce)
}

// MakeCredential signs a fresh connect credential for s at now with a
// random 16-byte nonce.
func MakeCredential(s device.Signer, now time.Time) (string, error) {
	var nb [16]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return "", err
	}
	nonce := hex.EncodeToString(nb[:])
	unix := now.Unix()
	sig, err := s.Sign(ConnectMessage(s.DID(), unix, nonce))
	if err != nil {
		return "", err
	}
	return CredentialPrefix + strconv.FormatInt(unix, 10) + "." + nonce + "." + base64.StdEncoding.EncodeToString(sig), nil
}

// ParseCredential checks the form of a connect credential.
func ParseCredential(pw string) (Credential, error) {
	var c Credential
	rest, ok := strings.CutPrefix(pw, CredentialPrefix)
	if !ok {
		return c, errors.New("password does not start with " + CredentialPrefix)
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
	for i := 0; i < len(nonce); i++ {
		if ch := nonce[i]; !('0' <= ch && ch <= '9' || 'a' <= ch && ch <= 'f') {
			return c, errors.New("nonce is not lowercase hex")
		}
	}
	if len(parts[2]) > 200 {
		return c, errors.New("signature too long")
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(parts[2])
	if err != nil || len(sig) == 0 {
		return c, errors.New("signature is not base64")
	}
	return Credential{Unix: unix, Nonce: nonce, Sig: sig}, nil
}

// nonceCache remembers (did, nonce) pairs for the credential window, so a
// credential works once.
type nonceCache struct {
	mu        sync.Mutex
	m         map[string]time.Time // did|nonce -> forget after
	lastSweep time.Time
}

// use records the pair and reports whether it was fresh.
func (c *nonceCache) use(did device.DID, nonce string, now time.Time, window time.Duration) bool {
	key := string(did) + "|" + nonce
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]time.Time{}
	}
	if now.Sub(c.lastSweep) > window/4 || len(c.m) > 1<<20 {
		for k, until := range c.m {
			if now.After(until) {
				delete(c.m, k)
			}
		}
		c.lastSweep = now
	}
	if until, ok := c.m[key]; ok && !now.After(until) {
		return false
	}
	// A credential is valid while |now-unix| <= window, so remember the
	// nonce for two windows: it cannot be fresh again after that.
	c.m[key] = now.Add(2 * window)
	return true
}

// IsPasswordHash reports whether h looks like a bcrypt hash.
func IsPasswordHash(h string) bool {
	_, err := bcrypt.Cost([]byte(h))
	return err == nil
}

// HashPassword returns the bcrypt hash of an application account password.
func HashPassword(pw string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		return "", err
	}
	return string(h), nil
}
