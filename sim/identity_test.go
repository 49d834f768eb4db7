package sim

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeanchor/edgeanchor/device/refusal"
	"github.com/edgeanchor/edgeanchor/sim/profile"
)

func TestIdentityPersistsKeyAndSeq(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev-0000")
	id, err := loadIdentity(dir, 0, profile.KindEnv, "site-a")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem mode %v, want 0600", fi.Mode().Perm())
	}
	for want := uint64(1); want <= 3; want++ {
		if got, err := id.nextSeq(); err != nil || got != want {
			t.Fatalf("nextSeq = %d, %v; want %d", got, err, want)
		}
	}
	first, err := id.reserveSeqs(10)
	if err != nil || first != 4 {
		t.Fatalf("reserveSeqs = %d, %v; want 4", first, err)
	}
	again, err := loadIdentity(dir, 0, profile.KindPayroll, "other")
	if err != nil {
		t.Fatal(err)
	}
	if again.signer.DID() != id.signer.DID() || again.state.Kind != profile.KindEnv || again.state.Site != "site-a" {
		t.Fatalf("reloaded %s %s %s, want %s env site-a", again.signer.DID(), again.state.Kind, again.state.Site, id.signer.DID())
	}
	if got, _ := again.nextSeq(); got != 14 {
		t.Fatalf("after reload next seq %d, want 14 (never reuse)", got)
	}
	// A state file that names another key is refused.
	os.Remove(filepath.Join(dir, "key.pem"))
	if _, err := loadIdentity(dir, 0, profile.KindEnv, "site-a"); !errors.Is(err, ErrState) {
		t.Fatalf("state of another key: err %v, want ErrState", err)
	}
}

func tokenHex(c byte) string { return strings.Repeat(string(c), 64) }

func TestReadTokensAndAssignOncePerDevice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.txt")
	content := "# tokens for site-a\n" +
		tokenHex('a') + "\n" +
		"payroll " + tokenHex('b') + " site-a 2026-12-01T00:00:00Z\n" +
		"\n" +
		tokenHex('c') + ",env\n" +
		"kind=survey token=" + tokenHex('d') + "\n" +
		"env\n" + tokenHex('f') + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	toks, err := ReadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Token{{tokenHex('a'), ""}, {tokenHex('b'), "payroll"}, {tokenHex('c'), "env"}, {tokenHex('d'), "survey"}, {tokenHex('f'), "env"}}
	if len(toks) != len(want) {
		t.Fatalf("got %v", toks)
	}
	for i := range want {
		if toks[i] != want[i] {
			t.Fatalf("token %d = %v, want %v", i, toks[i], want[i])
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.txt")
	os.WriteFile(bad, []byte("payroll not-a-token\n"), 0o600)
	if _, err := ReadTokens(bad); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Fatalf("bad line: err %v, want one naming line 1", err)
	}

	root := t.TempDir()
	var ids []*identity
	for i, kind := range []string{profile.KindEnv, profile.KindPayroll, profile.KindSurvey} {
		id, err := loadIdentity(filepath.Join(root, deviceName(i)), i, kind, "site-a")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// The env device takes the first token that fits (the kind-less one),
	// payroll its own, survey its own.
	if err := assignTokens(ids, toks); err != nil {
		t.Fatal(err)
	}
	got := []string{ids[0].state.Token, ids[1].state.Token, ids[2].state.Token}
	if got[0] != tokenHex('a') || got[1] != tokenHex('b') || got[2] != tokenHex('d') {
		t.Fatalf("assigned %v", got)
	}
	// A fourth device of kind payroll finds no unused payroll token: 'c' and 'f' are env only.
	id4, _ := loadIdentity(filepath.Join(root, deviceName(3)), 3, profile.KindPayroll, "site-a")
	ids = append(ids, id4)
	if err := assignTokens(ids, toks); !errors.Is(err, ErrNoToken) {
		t.Fatalf("err %v, want ErrNoToken", err)
	}
	// Reloaded devices keep their tokens: nothing is reassigned or reused.
	re, _ := loadIdentity(filepath.Join(root, deviceName(1)), 1, profile.KindPayroll, "site-a")
	if re.state.Token != tokenHex('b') {
		t.Fatalf("token after reload %q", re.state.Token)
	}
}

func TestTokensNeeded(t *testing.T) {
	dir := t.TempDir()
	need, err := TokensNeeded(dir, "mixed", 8)
	if err != nil {
		t.Fatal(err)
	}
	if need[profile.KindPayroll] != 4 || need[profile.KindEnv] != 2 || need[profile.KindSurvey] != 2 {
		t.Fatalf("fresh fleet needs %v", need)
	}
	// Device 0 has a token already, device 2 has enrolled.
	a, _ := loadIdentity(filepath.Join(dir, deviceName(0)), 0, profile.KindPayroll, "site-a")
	a.state.Token = tokenHex('a')
	a.saveState()
	b, _ := loadIdentity(filepath.Join(dir, deviceName(2)), 2, profile.KindEnv, "site-a")
	b.setEnrolled()
	need, _ = TokensNeeded(dir, "mixed", 8)
	if need[profile.KindPayroll] != 3 || need[profile.KindEnv] != 1 || need[profile.KindSurvey] != 2 {
		t.Fatalf("after one token and one enrollment: %v", need)
	}
}

// refusalNote explains a reason string only when the refusal table holds
// that reason at the stage with the code the gateway sent.
func TestRefusalNote(t *testing.T) {
	for _, tc := range []struct {
		code   byte
		reason string
		stages []refusal.Stage
		want   string
	}{
		{0x97, "rate_limited", []refusal.Stage{refusal.Publish}, "; over the device's rate (the same may be sent again later)"},
		{0x87, "signature", []refusal.Stage{refusal.Publish}, "; the envelope's signature does not verify"},
		{0x99, "signature", []refusal.Stage{refusal.Publish}, ""},
		{0x87, "no_such_reason", []refusal.Stage{refusal.Publish}, ""},
		{0x87, "stale: credential time 2026-11-25T10:00:00Z is outside the window", []refusal.Stage{refusal.Admit, refusal.Connect},
			"; the credential's time is outside the credential window around the gateway's clock"},
		{0x89, "max_connections", []refusal.Stage{refusal.Admit, refusal.Enroll}, "; the gateway holds limits.max_connections connections (the same may be sent again later)"},
	} {
		if got := refusalNote(tc.code, tc.reason, tc.stages...); got != tc.want {
			t.Errorf("refusalNote(0x%02x, %q) = %q, want %q", tc.code, tc.reason, got, tc.want)
		}
	}
}
