package broker

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgeanchor/edgeanchor/device"
)

// AuthError is a refused CONNECT. Reason is the metric label, a name of
// device/refusal's Connect or Enroll table; Err the detail for the log. An
// Enroller returns one to refuse (with the Enroll reasons, e.g. token_used,
// ledger_unavailable).
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
