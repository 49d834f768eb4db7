package identity

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/emmansun/gmsm/sm3"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/refusal"
)

// Enrollment tokens live in a small JSON file next to the gateway's Badger
// directory ({data_dir}/tokens.json, mode 0600), not in Badger: Badger admits
// one process at a time, and the site manager's `edgeanchor token create` must
// work while the gateway runs. Every read-modify-write of the file holds an
// exclusive flock on {data_dir}/tokens.lock (across processes) and a mutex
// (across goroutines), and replaces the file by rename after fsync, so a
// token is consumed atomically and a crash leaves the old or the new file.
// Only the SM3 hash of each token is stored.

// TokenFile and TokenLockFile are the names of the token store's files in the
// gateway's data directory.
const (
	TokenFile     = "tokens.json"
	TokenLockFile = "tokens.lock"
)

// Token limits.
const (
	// TokenBytes is the entropy of a token: 32 random bytes, 64 hex digits.
	TokenBytes = 32
	// MaxTokenCount bounds how many tokens one create call makes.
	MaxTokenCount = 10_000
	// MaxTokenTTL bounds a token's lifetime.
	MaxTokenTTL = 366 * 24 * time.Hour
	// MinTokenTTL is the shortest lifetime a token may be given.
	MinTokenTTL = time.Minute
	// tokenRetention is how long a used or expired token stays listed before
	// it is pruned from the file.
	tokenRetention = 30 * 24 * time.Hour
)

// Token refusals. Each maps to the enrollment refusal reason of the same name
// (docs/internals.md); the device needs a new token from the site manager.
var (
	// ErrTokenUnknown: no token with that value exists (mistyped, or pruned).
	ErrTokenUnknown = errors.New("gateway: enrollment token unknown")
	// ErrTokenUsed: the token has already enrolled a device; tokens are one-time.
	ErrTokenUsed = errors.New("gateway: enrollment token already used")
	// ErrTokenExpired: the token's TTL has passed.
	ErrTokenExpired = errors.New("gateway: enrollment token expired")
	// ErrTokenWrongSite: the token was made for another site than the one the
	// device registers for.
	ErrTokenWrongSite = errors.New("gateway: enrollment token is for another site")
	// ErrTokenWrongKind: the token was made for another device kind.
	ErrTokenWrongKind = errors.New("gateway: enrollment token is for another device kind")
	// ErrBadTokenRequest: a create request is outside the documented bounds;
	// the error names the field. Nothing was stored.
	ErrBadTokenRequest = errors.New("gateway: bad token request")
)

// TokenReason maps a token error to its refusal reason label, or "" when err
// is not a token refusal.
func TokenReason(err error) string {
	switch {
	case errors.Is(err, ErrTokenUnknown):
		return refusal.TokenUnknown
	case errors.Is(err, ErrTokenUsed):
		return refusal.TokenUsed
	case errors.Is(err, ErrTokenExpired):
		return refusal.TokenExpired
	case errors.Is(err, ErrTokenWrongSite):
		return refusal.TokenWrongSite
	case errors.Is(err, ErrTokenWrongKind):
		return refusal.TokenWrongKind
	}
	return ""
}

// TokenDeviceKinds are the device kinds a token may be bound to.
var TokenDeviceKinds = []string{"payroll", "survey", "env"}

var sitePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// TokenRecord is what the store keeps about one token: never the token, only
// its SM3 hash.
type TokenRecord struct {
	Hash    string     `json:"hash"`
	Site    string     `json:"site"`
	Kind    string     `json:"kind"`
	Created time.Time  `json:"created"`
	Expires time.Time  `json:"expires"`
	Used    *time.Time `json:"used,omitempty"`
	UsedBy  device.DID `json:"used_by,omitempty"`
	// Confirmed is set once the device's registration committed on the
	// ledger. A claimed but unconfirmed token (the ledger did not answer)
	// may be claimed again by the same device only.
	Confirmed bool `json:"confirmed,omitempty"`
}

type tokenFile struct {
	V      int           `json:"v"`
	Tokens []TokenRecord `json:"tokens"`
}

// TokenStore is the file-backed store of enrollment tokens. It is safe for
// concurrent use by goroutines and by processes sharing the directory.
type TokenStore struct {
	dir string
	mu  sync.Mutex
}

// OpenTokenStore opens (creating if needed) the token store in dataDir.
func OpenTokenStore(dataDir string) (*TokenStore, error) {
	if dataDir == "" {
		return nil, fmt.Errorf("%w: data_dir is empty", ErrBadTokenRequest)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("gateway: token store: %w", err)
	}
	s := &TokenStore{dir: dataDir}
	// Read once so that a corrupt file is reported at start, not at the
	// first enrollment.
	if err := s.locked(func(*tokenFile) (bool, error) { return false, nil }); err != nil {
		return nil, err
	}
	return s, nil
}

// TokenRequest asks for Count tokens for devices of Kind at Site, valid for TTL.
type TokenRequest struct {
	Site  string        `json:"site"`
	Kind  string        `json:"kind"`
	Count int           `json:"count"`
	TTL   time.Duration `json:"-"`
}

// Validate names the field and the bound on error.
func (r TokenRequest) Validate() error {
	switch {
	case !sitePattern.MatchString(r.Site):
		return fmt.Errorf("%w: site %q must be 1-63 of a-z, 0-9 and -, starting with a letter or digit", ErrBadTokenRequest, r.Site)
	case !slices.Contains(TokenDeviceKinds, r.Kind):
		return fmt.Errorf("%w: kind %q must be one of %v", ErrBadTokenRequest, r.Kind, TokenDeviceKinds)
	case r.Count < 1 || r.Count > MaxTokenCount:
		return fmt.Errorf("%w: count %d must be between 1 and %d", ErrBadTokenRequest, r.Count, MaxTokenCount)
	case r.TTL < MinTokenTTL || r.TTL > MaxTokenTTL:
		return fmt.Errorf("%w: ttl %s must be between %s and %s", ErrBadTokenRequest, r.TTL, MinTokenTTL, MaxTokenTTL)
	}
	return nil
}

// Create makes r.Count new tokens, stores their hashes and returns the tokens
// (the only time they exist in clear) and their expiry.
func (s *TokenStore) Create(r TokenRequest, now time.Time) ([]string, time.Time, error) {
	if err := r.Validate(); err != nil {
		return nil, time.Time{}, err
	}
	now = now.UTC()
	expires := now.Add(r.TTL)
	tokens := make([]string, r.Count)
	recs := make([]TokenRecord, r.Count)
	for i := range tokens {
		b := make([]byte, TokenBytes)
		if _, err := rand.Read(b); err != nil {
			return nil, time.Time{}, fmt.Errorf("gateway: token: %w", err)
		}
		tokens[i] = hex.EncodeToString(b)
		recs[i] = TokenRecord{Hash: tokenHash(tokens[i]), Site: r.Site, Kind: r.Kind, Created: now, Expires: expires}
	}
	err := s.locked(func(f *tokenFile) (bool, error) {
		f.Tokens = append(f.Tokens, recs...)
		return true, nil
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	return tokens, expires, nil
}

// Claim checks token against site and kind at now and, if it is usable,
// marks it used by did in the same atomic step, so that of any number of
// concurrent claims of one token at most one succeeds. The enroller then
// calls Confirm once the registration committed, or Release when the ledger
// refused it. A token claimed by did but neither confirmed nor released (the
// ledger did not answer, so the registration may or may not have committed)
// can be claimed again by the same did only, so the device can retry.
func (s *TokenStore) Claim(token, site, kind string, did device.DID, now time.Time) error {
	h := tokenHash(token)
	now = now.UTC()
	return s.locked(func(f *tokenFile) (bool, error) {
		i := f.find(h)
		if i < 0 {
			return false, ErrTokenUnknown
		}
		t := &f.Tokens[i]
		switch {
		case t.Used != nil && (t.Confirmed || t.UsedBy != did):
			return false, fmt.Errorf("%w (by %s at %s)", ErrTokenUsed, t.UsedBy, t.Used.Format(time.RFC3339))
		case !now.Before(t.Expires):
			return false, fmt.Errorf("%w at %s", ErrTokenExpired, t.Expires.Format(time.RFC3339))
		case t.Site != site:
			return false, fmt.Errorf("%w: token for %q, device registers for %q", ErrTokenWrongSite, t.Site, site)
		case t.Kind != kind:
			return false, fmt.Errorf("%w: token for %q, device is %q", ErrTokenWrongKind, t.Kind, kind)
		}
		t.Used, t.UsedBy = &now, did
		return true, nil
	})
}

// Release makes a token claimed by did usable again. It does nothing if the
// token is not claimed by did or already confirmed.
func (s *TokenStore) Release(token string, did device.DID) error {
	h := tokenHash(token)
	return s.locked(func(f *tokenFile) (bool, error) {
		i := f.find(h)
		if i < 0 || f.Tokens[i].Used == nil || f.Tokens[i].UsedBy != did || f.Tokens[i].Confirmed {
			return false, nil
		}
		f.Tokens[i].Used, f.Tokens[i].UsedBy = nil, ""
		return true, nil
	})
}

// Confirm records that the device did claimed token with is registered: the
// token is spent for good.
func (s *TokenStore) Confirm(token string, did device.DID) error {
	h := tokenHash(token)
	return s.locked(func(f *tokenFile) (bool, error) {
		i := f.find(h)
		if i < 0 || f.Tokens[i].UsedBy != did {
			return false, fmt.Errorf("gateway: confirm: token not claimed by %s", did)
		}
		if f.Tokens[i].Confirmed {
			return false, nil
		}
		f.Tokens[i].Confirmed = true
		return true, nil
	})
}

// List returns every token record, oldest first.
func (s *TokenStore) List() ([]TokenRecord, error) {
	var out []TokenRecord
	err := s.locked(func(f *tokenFile) (bool, error) {
		out = slices.Clone(f.Tokens)
		return false, nil
	})
	return out, err
}

func (f *tokenFile) find(hash string) int {
	for i := range f.Tokens {
		if subtle.ConstantTimeCompare([]byte(f.Tokens[i].Hash), []byte(hash)) == 1 {
			return i
		}
	}
	return -1
}

func tokenHash(token string) string {
	sum := sm3.Sum([]byte(token))
	return hex.EncodeToString(sum[:])
}

// locked runs fn on the current file content under both locks and writes the
// file back if fn says it changed it.
func (s *TokenStore) locked(fn func(*tokenFile) (bool, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	lockPath := filepath.Join(s.dir, TokenLockFile)
	_, statErr := os.Stat(lockPath)
	lf, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("gateway: token store lock: %w", err)
	}
	defer lf.Close()
	if errors.Is(statErr, os.ErrNotExist) {
		// Created just now: it belongs to the directory's owner, the
		// gateway's user, even when root made it.
		dirInfo, err := os.Stat(s.dir)
		if err != nil {
			return fmt.Errorf("gateway: token store: %w", err)
		}
		if err := keepOwner(lf, dirInfo); err != nil {
			return err
		}
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("gateway: token store lock: %w", err)
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing releases it too

	path := filepath.Join(s.dir, TokenFile)
	f := &tokenFile{V: 1}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("gateway: token store: %w", err)
	default:
		if err := json.Unmarshal(data, f); err != nil {
			return fmt.Errorf("gateway: token store %s is corrupt: %w", path, err)
		}
		if f.V != 1 {
			return fmt.Errorf("gateway: token store %s: unknown version %d", path, f.V)
		}
	}
	changed, err := fn(f)
	if err != nil || !changed {
		return err
	}
	f.prune(time.Now())
	out, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return fmt.Errorf("gateway: token store: %w", err)
	}
	return WriteFileAtomic(path, out, 0o600)
}

// prune drops tokens that expired more than tokenRetention ago.
func (f *tokenFile) prune(now time.Time) {
	f.Tokens = slices.DeleteFunc(f.Tokens, func(t TokenRecord) bool {
		return now.Sub(t.Expires) > tokenRetention
	})
}

// WriteFileAtomic replaces path with data: temp file, fsync, rename, fsync
// of the directory.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("gateway: %w", err)
	}
	// The new file keeps the owner of the one it replaces (or, for a first
	// file, of the directory) when root writes it.
	ref, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		ref, err = os.Stat(dir)
	}
	if err != nil {
		tmp.Close()
		return fmt.Errorf("gateway: %w", err)
	}
	if err := keepOwner(tmp, ref); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("gateway: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("gateway: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("gateway: sync %s: %w", dir, err)
	}
	return nil
}

// keepOwner gives f, a file this process just created to replace or sit
// beside others in a gateway's directory, the owner of ref (the file it
// replaces, or the directory) when the process runs as root: a site manager
// running `edgeanchor token create` with sudo must not leave a root-owned
// file that the gateway's own user can no longer open.
func keepOwner(f *os.File, ref os.FileInfo) error {
	if os.Geteuid() != 0 || ref == nil {
		return nil
	}
	st, ok := ref.Sys().(*syscall.Stat_t)
	if !ok || (st.Uid == 0 && st.Gid == 0) {
		return nil
	}
	if err := f.Chown(int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("gateway: give %s to uid %d: %w", f.Name(), st.Uid, err)
	}
	return nil
}
