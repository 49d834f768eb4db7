package identity

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
	"github.com/edgeanchor/edgeanchor/device/refusal"
)

// EnrollLedger is what enrollment needs of the ledger client
// (*ledgerclient.Client implements it).
type EnrollLedger interface {
	Submit(ctx context.Context, tx []byte) (ledgerclient.TxCommit, error)
	Device(ctx context.Context, did device.DID) (*anchor.DeviceRecord, error)
}

var _ EnrollLedger = (*ledgerclient.Client)(nil)

// EnrollerOptions configure an Enroller.
type EnrollerOptions struct {
	// Gateway signs the RegisterDevice transactions; its DID must be a member
	// gateway on the ledger.
	Gateway device.Signer
	// Window bounds |now - ts| of a registration and how long its nonce is
	// remembered (default 120 s, like the connect credential).
	Window time.Duration
	// Timeout bounds one enrollment's wait for the ledger (default 20 s).
	Timeout time.Duration
	Now     func() time.Time
	Logger  *slog.Logger
}

// Enroller admits new devices that present an enrollment credential: it
// checks the registration and the device's proof of possession, claims the
// one-time token, registers the device on the ledger and adds it to the
// identity cache once the registration committed.
type Enroller struct {
	opts   EnrollerOptions
	tokens *TokenStore
	cache  *Cache
	ledger EnrollLedger
	log    *slog.Logger

	mu     sync.Mutex
	nonces map[string]time.Time // did|nonce -> forget after
}

// NewEnroller returns an Enroller; its Enroll method is the broker's
// broker.Enroller.
func NewEnroller(opts EnrollerOptions, tokens *TokenStore, cache *Cache, ledger EnrollLedger) *Enroller {
	if opts.Window <= 0 {
		opts.Window = 120 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 20 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Enroller{opts: opts, tokens: tokens, cache: cache, ledger: ledger, log: opts.Logger, nonces: map[string]time.Time{}}
}

var _ broker.Enroller = (*Enroller)(nil).Enroll

func enrollRefuse(reason string, err error) error { return &broker.AuthError{Reason: reason, Err: err} }

// Enroll implements broker.Enroller.
func (e *Enroller) Enroll(ctx context.Context, req broker.EnrollRequest) (broker.DeviceInfo, error) {
	now := e.opts.Now()
	cred, err := credential.ParseEnroll(req.Password)
	if err != nil {
		return broker.DeviceInfo{}, enrollRefuse(refusal.Malformed, err)
	}
	reg, pub, err := credential.ParseRegistration(cred.Registration)
	if err != nil {
		return broker.DeviceInfo{}, enrollRefuse(refusal.Malformed, err)
	}
	if reg.DID != req.DID {
		return broker.DeviceInfo{}, enrollRefuse(refusal.ClientIDMismatch,
			fmt.Errorf("registration names %s, client is %s", reg.DID, req.DID))
	}
	if !device.VerifySignature(pub, cred.Registration, cred.Sig) {
		return broker.DeviceInfo{}, enrollRefuse(refusal.BadSignature, errors.New("registration signature does not verify"))
	}
	ts, _ := time.Parse(time.RFC3339Nano, reg.TS)
	if d := now.Sub(ts); d > e.opts.Window || d < -e.opts.Window {
		return broker.DeviceInfo{}, enrollRefuse(refusal.Stale, fmt.Errorf("registration ts %s is %s from now (window %s)", reg.TS, d.Round(time.Second), e.opts.Window))
	}
	if !e.useNonce(reg.DID, reg.Nonce, now) {
		return broker.DeviceInfo{}, enrollRefuse(refusal.Replayed, errors.New("registration nonce already used"))
	}
	info := broker.DeviceInfo{DID: reg.DID, Pub: pub, Kind: reg.Kind, Site: reg.Site}

	// Already ours with this key: admit without spending the token.
	if d, ok := e.cache.Lookup(reg.DID); ok {
		if d.Revoked {
			return broker.DeviceInfo{}, enrollRefuse(refusal.Revoked, errors.New("device is revoked on the ledger"))
		}
		if d.Pub != nil && d.Pub.Equal(pub) {
			e.log.Info("enrollment of a registered device: admitted without token", "did", reg.DID)
			return d, nil
		}
	}

	ctx, cancel := context.WithTimeout(ctx, e.opts.Timeout)
	defer cancel()
	// Before the cache has loaded, the ledger is asked directly, so that a
	// registered device does not spend a token while the gateway starts.
	if !e.cache.Loaded() && e.registeredHere(ctx, reg.DID, pub) {
		e.cache.Put(info)
		if got, _ := e.cache.Lookup(reg.DID); !got.Revoked {
			e.log.Info("enrollment of a registered device: admitted without token", "did", reg.DID)
			return got, nil
		}
	}

	if err := e.tokens.Claim(cred.Token, reg.Site, reg.Kind, reg.DID, now); err != nil {
		if r := TokenReason(err); r != "" {
			return broker.DeviceInfo{}, enrollRefuse(r, err)
		}
		e.log.Error("token store failed", "error", err)
		return broker.DeviceInfo{}, enrollRefuse(refusal.LedgerUnavailable, err)
	}

	err = e.register(ctx, cred, now)
	var refused *ledgerclient.RefusedError
	switch {
	case err == nil:
	case errors.As(err, &refused):
		// Refused: perhaps because an earlier attempt of this very device
		// with this token committed after its answer was lost (the token is
		// then rightly spent). The ledger knows.
		if e.registeredHere(ctx, reg.DID, pub) {
			break
		}
		if rerr := e.tokens.Release(cred.Token, reg.DID); rerr != nil {
			e.log.Error("token release failed", "error", rerr)
		}
		return broker.DeviceInfo{}, enrollRefuse(refusal.LedgerRefused, err)
	default:
		// Unknown outcome: keep the token claimed by this device, which may
		// retry with it; nobody else can use it.
		return broker.DeviceInfo{}, enrollRefuse(refusal.LedgerUnavailable, err)
	}
	if err := e.tokens.Confirm(cred.Token, reg.DID); err != nil {
		e.log.Error("token confirm failed", "did", reg.DID, "error", err)
	}
	e.cache.Put(info)
	got, _ := e.cache.Lookup(reg.DID)
	if got.Revoked {
		return broker.DeviceInfo{}, enrollRefuse(refusal.Revoked, errors.New("device is revoked on the ledger"))
	}
	e.log.Info("device enrolled", "did", reg.DID, "kind", reg.Kind, "site", reg.Site)
	return got, nil
}

// register submits RegisterDevice signed by the gateway and waits for commit.
func (e *Enroller) register(ctx context.Context, cred credential.Enroll, now time.Time) error {
	body, err := anchor.NewRegisterDeviceBody(e.opts.Gateway.DID(), cred.Registration, cred.Sig, now)
	if err != nil {
		return fmt.Errorf("gateway: register body: %w", err)
	}
	tx, err := anchor.EncodeTx(e.opts.Gateway, body)
	if err != nil {
		return err
	}
	_, err = e.ledger.Submit(ctx, tx)
	return err
}

// registeredHere asks the ledger whether did is active, registered through
// this gateway with key pub.
func (e *Enroller) registeredHere(ctx context.Context, did device.DID, pub *ecdsa.PublicKey) bool {
	r, err := e.ledger.Device(ctx, did)
	if err != nil || r.Status != "active" || r.Gateway != e.opts.Gateway.DID() {
		return false
	}
	p, err := device.ParsePublicKeyDER(r.Pub)
	return err == nil && pub.Equal(p)
}

// useNonce records (did, nonce) and reports whether it was fresh: an
// enrollment credential works once within the window.
func (e *Enroller) useNonce(did device.DID, nonce string, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.nonces) > 4096 {
		for k, until := range e.nonces {
			if now.After(until) {
				delete(e.nonces, k)
			}
		}
	}
	key := string(did) + "|" + nonce
	if until, ok := e.nonces[key]; ok && !now.After(until) {
		return false
	}
	e.nonces[key] = now.Add(2 * e.opts.Window)
	return true
}
