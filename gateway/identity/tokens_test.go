package identity

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
)

const (
	didA device.DID = "did:ea:0123456789abcdef0123456789abcdef"
	didB device.DID = "did:ea:fedcba9876543210fedcba9876543210"
)

func TestTokenCreateStoresOnlyHashes(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenTokenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	toks, exp, err := s.Create(TokenRequest{Site: "site-a", Kind: "payroll", Count: 5, TTL: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != 5 {
		t.Fatalf("got %d tokens, want 5", len(toks))
	}
	if want := now.Add(time.Hour); !exp.Equal(want) {
		t.Fatalf("expires %s, want %s", exp, want)
	}
	seen := map[string]bool{}
	for _, tok := range toks {
		if len(tok) != 2*TokenBytes || strings.ContainsAny(tok, ".ABCDEF") {
			t.Fatalf("token %q: want %d lowercase hex digits", tok, 2*TokenBytes)
		}
		if seen[tok] {
			t.Fatalf("duplicate token %q", tok)
		}
		seen[tok] = true
	}
	data, err := os.ReadFile(filepath.Join(dir, TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		if strings.Contains(string(data), tok) {
			t.Fatal("token file holds a token in clear")
		}
		if !strings.Contains(string(data), tokenHash(tok)) {
			t.Fatal("token file lacks a token's hash")
		}
	}
	fi, err := os.Stat(filepath.Join(dir, TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	// A second store on the same directory (another process, say the CLI)
	// sees them.
	s2, err := OpenTokenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	list, err := s2.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 5 || list[0].Site != "site-a" || list[0].Kind != "payroll" || list[0].Used != nil {
		t.Fatalf("list = %+v", list)
	}
}

func TestTokenRequestValidate(t *testing.T) {
	ok := TokenRequest{Site: "site-a", Kind: "env", Count: 1, TTL: time.Hour}
	tests := []struct {
		name  string
		edit  func(*TokenRequest)
		field string
	}{
		{"empty site", func(r *TokenRequest) { r.Site = "" }, "site"},
		{"site with dot", func(r *TokenRequest) { r.Site = "a.b" }, "site"},
		{"unknown kind", func(r *TokenRequest) { r.Kind = "payroll.wage" }, "kind"},
		{"zero count", func(r *TokenRequest) { r.Count = 0 }, "count"},
		{"huge count", func(r *TokenRequest) { r.Count = MaxTokenCount + 1 }, "count"},
		{"short ttl", func(r *TokenRequest) { r.TTL = time.Second }, "ttl"},
		{"long ttl", func(r *TokenRequest) { r.TTL = MaxTokenTTL + time.Hour }, "ttl"},
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid request: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ok
			tc.edit(&r)
			err := r.Validate()
			if !errors.Is(err, ErrBadTokenRequest) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("got %v, want ErrBadTokenRequest naming %q", err, tc.field)
			}
			dir := t.TempDir()
			s, err := OpenTokenStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Create(r, time.Now()); !errors.Is(err, ErrBadTokenRequest) {
				t.Fatalf("Create: %v", err)
			}
			if list, _ := s.List(); len(list) != 0 {
				t.Fatalf("bad request stored %d tokens", len(list))
			}
		})
	}
}

func TestTokenClaim(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	s, err := OpenTokenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	toks, _, err := s.Create(TokenRequest{Site: "site-a", Kind: "payroll", Count: 4, TTL: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		token  string
		site   string
		kind   string
		at     time.Time
		want   error
		reason string
	}{
		{"unknown", strings.Repeat("ab", 32), "site-a", "payroll", now, ErrTokenUnknown, "token_unknown"},
		{"wrong site", toks[0], "site-b", "payroll", now, ErrTokenWrongSite, "token_wrong_site"},
		{"wrong kind", toks[0], "site-a", "env", now, ErrTokenWrongKind, "token_wrong_kind"},
		{"expired", toks[0], "site-a", "payroll", now.Add(time.Hour), ErrTokenExpired, "token_expired"},
		{"ok", toks[0], "site-a", "payroll", now.Add(time.Minute), nil, ""},
		{"used by another", toks[0], "site-a", "payroll", now.Add(time.Minute), ErrTokenUsed, "token_used"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			did := didA
			if strings.Contains(tc.name, "another") {
				did = didB
			}
			err := s.Claim(tc.token, tc.site, tc.kind, did, tc.at)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if got := TokenReason(err); got != tc.reason {
				t.Fatalf("reason %q, want %q", got, tc.reason)
			}
		})
	}
	list, _ := s.List()
	used := 0
	for _, r := range list {
		if r.Used != nil {
			used++
			if r.UsedBy != didA {
				t.Fatalf("used by %s, want %s", r.UsedBy, didA)
			}
		}
	}
	if used != 1 {
		t.Fatalf("%d tokens used, want 1 (refusals must change nothing)", used)
	}

	// Release by another DID does nothing; by the claimer it frees the token.
	if err := s.Release(toks[0], didB); err != nil {
		t.Fatal(err)
	}
	if err := s.Claim(toks[0], "site-a", "payroll", didB, now); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("after foreign release: %v", err)
	}
	if err := s.Release(toks[0], didA); err != nil {
		t.Fatal(err)
	}
	if err := s.Claim(toks[0], "site-a", "payroll", didB, now); err != nil {
		t.Fatalf("after release: %v", err)
	}
	// Unconfirmed: the same device may claim again (a retry after a ledger
	// outage); once confirmed, nobody may, and Release does nothing.
	if err := s.Claim(toks[0], "site-a", "payroll", didB, now); err != nil {
		t.Fatalf("retry by the claimer: %v", err)
	}
	if err := s.Confirm(toks[0], didB); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(toks[0], didB); err != nil {
		t.Fatal(err)
	}
	if err := s.Claim(toks[0], "site-a", "payroll", didB, now); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("claim after confirm: %v", err)
	}
	if err := s.Confirm(toks[1], didB); err == nil {
		t.Fatal("confirm of an unclaimed token succeeded")
	}
}

// Many goroutines over two stores on one directory (two processes, as far as
// the file lock can tell) race for one token: exactly one wins.
func TestTokenClaimConcurrent(t *testing.T) {
	dir := t.TempDir()
	s1, err := OpenTokenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := OpenTokenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	toks, _, err := s1.Create(TokenRequest{Site: "site-a", Kind: "env", Count: 1, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
		used int
	)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := s1
			if i%2 == 1 {
				s = s2
			}
			did := device.DID(fmt.Sprintf("did:ea:%032x", i))
			err := s.Claim(toks[0], "site-a", "env", did, time.Now())
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrTokenUsed):
				used++
			default:
				t.Errorf("claim: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || used != 15 {
		t.Fatalf("wins=%d used=%d, want 1 and 15", wins, used)
	}
}

func TestTokenStoreCorruptFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, TokenFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenTokenStore(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("got %v, want a corrupt-file error", err)
	}
}
