package identity

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
	"github.com/edgeanchor/edgeanchor/device/refusal"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

type enrollEnv struct {
	*ledgertest.Member
	tokens *TokenStore
	cache  *Cache
	enr    *Enroller
}

func newEnrollEnv(t *testing.T) *enrollEnv {
	t.Helper()
	e := ledgertest.StartMember(t, "site-a")
	ts, err := OpenTokenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cache, _ := startCache(t, e.Gateway.DID(), e.Client)
	idWaitFor(t, "cache load", 20*time.Second, cache.Loaded)
	enr := NewEnroller(EnrollerOptions{Gateway: e.Gateway.Signer, Logger: slog.New(slog.DiscardHandler)}, ts, cache, e.Client)
	return &enrollEnv{Member: e, tokens: ts, cache: cache, enr: enr}
}

func newEnrollDevice(t *testing.T) *device.KeySigner {
	t.Helper()
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return device.NewKeySigner(priv)
}

func (e *enrollEnv) token(t *testing.T, site, kind string, ttl time.Duration, at time.Time) string {
	t.Helper()
	toks, _, err := e.tokens.Create(TokenRequest{Site: site, Kind: kind, Count: 1, TTL: ttl}, at)
	if err != nil {
		t.Fatal(err)
	}
	return toks[0]
}

func enrollReq(t *testing.T, dev device.Signer, token, kind, site string, at time.Time) broker.EnrollRequest {
	t.Helper()
	pw, err := credential.MakeEnroll(dev, token, kind, site, at)
	if err != nil {
		t.Fatal(err)
	}
	return broker.EnrollRequest{DID: dev.DID(), Password: pw, Remote: "127.0.0.1:1"}
}

func reasonOf(err error) string {
	var ae *broker.AuthError
	if errors.As(err, &ae) {
		return ae.Reason
	}
	return ""
}

// onLedger reports whether did is registered on the ledger.
func (e *enrollEnv) onLedger(t *testing.T, did device.DID) bool {
	t.Helper()
	_, err := e.Client.Device(context.Background(), did)
	if errors.Is(err, ledgerclient.ErrNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

func TestEnrollRegistersOnLedger(t *testing.T) {
	t.Parallel()
	e := newEnrollEnv(t)
	ctx := context.Background()
	now := time.Now()
	dev := newEnrollDevice(t)
	tok := e.token(t, "site-a", "payroll", time.Hour, now)

	info, err := e.enr.Enroll(ctx, enrollReq(t, dev, tok, "payroll", "site-a", now))
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	if info.DID != dev.DID() || info.Kind != "payroll" || info.Site != "site-a" || !info.Pub.Equal(dev.Public()) {
		t.Fatalf("device info %+v", info)
	}
	rec, err := e.Client.Device(ctx, dev.DID())
	if err != nil {
		t.Fatalf("ledger has no record of the enrolled device: %v", err)
	}
	if rec.Status != "active" || rec.Gateway != e.Gateway.DID() || rec.Kind != "payroll" {
		t.Fatalf("ledger record %+v", rec)
	}
	if c, ok := e.cache.Lookup(dev.DID()); !ok || c.Pub != info.Pub {
		t.Fatal("enrolled device not in the cache with the returned key pointer")
	}
	list, _ := e.tokens.List()
	if len(list) != 1 || !list[0].Confirmed || list[0].UsedBy != dev.DID() {
		t.Fatalf("token after enrollment: %+v", list)
	}

	// Enrolling again (same key) is admitted without a token: even an
	// unknown one is not looked at.
	again, err := e.enr.Enroll(ctx, enrollReq(t, dev, strings.Repeat("0", 64), "payroll", "site-a", time.Now()))
	if err != nil || again.DID != dev.DID() {
		t.Fatalf("re-enrollment of a registered device: %+v %v", again, err)
	}

	// A gateway whose cache has not loaded yet (just started) asks the
	// ledger: the registered device is admitted and a fresh token not spent.
	cold := NewCache(e.Gateway.DID(), e.Client, slog.New(slog.DiscardHandler))
	enr2 := NewEnroller(EnrollerOptions{Gateway: e.Gateway.Signer}, e.tokens, cold, e.Client)
	fresh := e.token(t, "site-a", "payroll", time.Hour, time.Now())
	if got, err := enr2.Enroll(ctx, enrollReq(t, dev, fresh, "payroll", "site-a", time.Now())); err != nil || got.DID != dev.DID() {
		t.Fatalf("registered device at a cold gateway: %+v %v", got, err)
	}
	if _, ok := cold.Lookup(dev.DID()); !ok {
		t.Fatal("device not put in the cold cache")
	}
	for _, tok := range mustList(t, e.tokens) {
		if tok.Hash == tokenHash(fresh) && tok.Used != nil {
			t.Fatal("a registered device spent a fresh token")
		}
	}
}

func mustList(t *testing.T, s *TokenStore) []TokenRecord {
	t.Helper()
	l, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Every refusal has its reason, spends no token and registers nothing.
func TestEnrollRefusals(t *testing.T) {
	t.Parallel()
	e := newEnrollEnv(t)
	ctx := context.Background()
	now := time.Now()

	used := e.token(t, "site-a", "env", time.Hour, now)
	first := newEnrollDevice(t)
	if _, err := e.enr.Enroll(ctx, enrollReq(t, first, used, "env", "site-a", now)); err != nil {
		t.Fatalf("first enrollment: %v", err)
	}
	expired := e.token(t, "site-a", "env", time.Hour, now.Add(-2*time.Hour))
	siteB := e.token(t, "site-b", "env", time.Hour, now)
	payroll := e.token(t, "site-a", "payroll", time.Hour, now)
	good := e.token(t, "site-a", "env", time.Hour, now)

	tamper := func(req broker.EnrollRequest, f func(parts []string)) broker.EnrollRequest {
		p := strings.Split(req.Password, ".")
		f(p)
		req.Password = strings.Join(p, ".")
		return req
	}
	replayDev := newEnrollDevice(t)
	replayReq := enrollReq(t, replayDev, good, "env", "site-a", now)
	// Use replayReq's registration once (with an unknown token, which fails
	// after the nonce is recorded), so that replaying it is refused.
	if _, err := e.enr.Enroll(ctx, tamper(replayReq, func(p []string) { p[1] = strings.Repeat("1", 64) })); reasonOf(err) != "token_unknown" {
		t.Fatalf("setup of replay: %v", err)
	}

	tests := []struct {
		name   string
		req    func(dev *device.KeySigner) broker.EnrollRequest
		reason string
	}{
		{"unknown token", func(d *device.KeySigner) broker.EnrollRequest {
			return enrollReq(t, d, strings.Repeat("ab", 32), "env", "site-a", now)
		}, "token_unknown"},
		{"used token", func(d *device.KeySigner) broker.EnrollRequest { return enrollReq(t, d, used, "env", "site-a", now) }, "token_used"},
		{"expired token", func(d *device.KeySigner) broker.EnrollRequest { return enrollReq(t, d, expired, "env", "site-a", now) }, "token_expired"},
		{"wrong site", func(d *device.KeySigner) broker.EnrollRequest { return enrollReq(t, d, siteB, "env", "site-a", now) }, "token_wrong_site"},
		{"wrong kind", func(d *device.KeySigner) broker.EnrollRequest { return enrollReq(t, d, payroll, "env", "site-a", now) }, "token_wrong_kind"},
		{"stale registration", func(d *device.KeySigner) broker.EnrollRequest {
			return enrollReq(t, d, good, "env", "site-a", now.Add(-10*time.Minute))
		}, refusal.Stale},
		{"bad signature", func(d *device.KeySigner) broker.EnrollRequest {
			other := newEnrollDevice(t)
			r := enrollReq(t, d, good, "env", "site-a", now)
			o := enrollReq(t, other, good, "env", "site-a", now)
			return tamper(r, func(p []string) { p[3] = strings.Split(o.Password, ".")[3] })
		}, refusal.BadSignature},
		{"registration of another DID", func(d *device.KeySigner) broker.EnrollRequest {
			r := enrollReq(t, newEnrollDevice(t), good, "env", "site-a", now)
			r.DID = d.DID()
			return r
		}, refusal.ClientIDMismatch},
		{"not base64", func(d *device.KeySigner) broker.EnrollRequest {
			return tamper(enrollReq(t, d, good, "env", "site-a", now), func(p []string) { p[2] = "!!" })
		}, refusal.Malformed},
		{"registration not JSON", func(d *device.KeySigner) broker.EnrollRequest {
			return tamper(enrollReq(t, d, good, "env", "site-a", now), func(p []string) {
				p[2] = base64.StdEncoding.EncodeToString([]byte("{"))
			})
		}, refusal.Malformed},
		{"replayed credential", func(*device.KeySigner) broker.EnrollRequest { return replayReq }, refusal.Replayed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev := newEnrollDevice(t)
			req := tc.req(dev)
			_, err := e.enr.Enroll(ctx, req)
			if got := reasonOf(err); got != tc.reason {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.reason)
			}
			if e.onLedger(t, req.DID) || e.onLedger(t, dev.DID()) {
				t.Fatal("a refused enrollment registered the device")
			}
			if _, ok := e.cache.Lookup(req.DID); ok {
				t.Fatal("a refused enrollment is in the cache")
			}
		})
	}
	list, _ := e.tokens.List()
	for _, tok := range list {
		if tok.Used != nil && tok.UsedBy != first.DID() {
			t.Fatalf("a refusal spent a token: %+v", tok)
		}
	}
	// The good token is still usable after all that.
	if _, err := e.enr.Enroll(ctx, enrollReq(t, newEnrollDevice(t), good, "env", "site-a", time.Now())); err != nil {
		t.Fatalf("good token after refusals: %v", err)
	}
}

// Of many devices racing for one token, exactly one is registered.
func TestEnrollConcurrentTokenUse(t *testing.T) {
	t.Parallel()
	e := newEnrollEnv(t)
	now := time.Now()
	tok := e.token(t, "site-a", "survey", time.Hour, now)
	const n = 6
	devs := make([]*device.KeySigner, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range devs {
		devs[i] = newEnrollDevice(t)
		req := enrollReq(t, devs[i], tok, "survey", "site-a", now)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.enr.Enroll(context.Background(), req)
		}()
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
			if !e.onLedger(t, devs[i].DID()) {
				t.Fatal("admitted device not on the ledger")
			}
		case reasonOf(err) == "token_used":
			if e.onLedger(t, devs[i].DID()) {
				t.Fatal("refused device is on the ledger")
			}
		default:
			t.Fatalf("device %d: %v", i, err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d devices admitted with one token, want 1", ok)
	}
}

// The ledger refuses a registration for another site than the gateway's:
// ledger_refused, and the token is given back.
func TestEnrollLedgerRefused(t *testing.T) {
	t.Parallel()
	e := newEnrollEnv(t)
	now := time.Now()
	tok := e.token(t, "site-b", "env", time.Hour, now)
	dev := newEnrollDevice(t)
	_, err := e.enr.Enroll(context.Background(), enrollReq(t, dev, tok, "env", "site-b", now))
	if reasonOf(err) != refusal.LedgerRefused {
		t.Fatalf("got %v, want %s", err, refusal.LedgerRefused)
	}
	var refused *ledgerclient.RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("error does not carry the ledger's refusal: %v", err)
	}
	if e.onLedger(t, dev.DID()) {
		t.Fatal("refused device on the ledger")
	}
	if list, _ := e.tokens.List(); list[0].Used != nil {
		t.Fatalf("token not given back after a ledger refusal: %+v", list[0])
	}
}

// With the ledger unreachable: ledger_unavailable, nothing cached, and the
// token stays reserved for that device only.
func TestEnrollLedgerUnavailable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	c, err := ledgerclient.NewClient(dead, ledgerclient.ClientOptions{RequestTimeout: 200 * time.Millisecond, Retries: 1, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ts, err := OpenTokenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw := newEnrollDevice(t)
	cache := NewCache(gw.DID(), c, slog.New(slog.DiscardHandler))
	enr := NewEnroller(EnrollerOptions{Gateway: gw, Timeout: 3 * time.Second}, ts, cache, c)
	toks, _, err := ts.Create(TokenRequest{Site: "site-a", Kind: "env", Count: 1, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dev, thief := newEnrollDevice(t), newEnrollDevice(t)
	_, err = enr.Enroll(context.Background(), enrollReq(t, dev, toks[0], "env", "site-a", time.Now()))
	if reasonOf(err) != refusal.LedgerUnavailable {
		t.Fatalf("got %v, want %s", err, refusal.LedgerUnavailable)
	}
	if _, ok := cache.Lookup(dev.DID()); ok {
		t.Fatal("device cached though the ledger never answered")
	}
	if _, err := enr.Enroll(context.Background(), enrollReq(t, thief, toks[0], "env", "site-a", time.Now())); reasonOf(err) != "token_used" {
		t.Fatalf("another device with the reserved token: %v", err)
	}
	if _, err := enr.Enroll(context.Background(), enrollReq(t, dev, toks[0], "env", "site-a", time.Now())); reasonOf(err) != refusal.LedgerUnavailable {
		t.Fatalf("retry by the same device: %v, want to reach the ledger again", err)
	}
}
