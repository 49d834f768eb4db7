package portal

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfigValidateNamesKey: each bad value is refused naming its key and
// the bound.
func TestConfigValidateNamesKey(t *testing.T) {
	good := DefaultConfig()
	good.LedgerRPC, good.TrustPath = "http://127.0.0.1:26657", "trust.json"
	if err := good.Validate(); err != nil {
		t.Fatalf("defaults with a ledger and a trust file: %v", err)
	}
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Listen = "8490" }, `listen "8490": want host:port`},
		{func(c *Config) { c.LedgerRPC = "" }, "ledger: the ledger's RPC URL is required"},
		{func(c *Config) { c.LedgerRPC = "127.0.0.1:26657" }, `ledger "127.0.0.1:26657": want an http(s) URL`},
		{func(c *Config) { c.TrustPath = "" }, "trust: the trust file is required"},
		{func(c *Config) { c.Gateways = []GatewayAPI{{DID: "gw-1", URL: "http://127.0.0.1:8480"}} }, "gateways[0].did"},
		{func(c *Config) {
			c.Gateways = []GatewayAPI{{DID: "did:ea:3feb399d1edc4dacf36a16d21361e83f", URL: "ftp://x"}}
		}, `gateways[0].url "ftp://x": want an http(s) URL`},
		{func(c *Config) { c.TLSCert = "c.pem" }, "tls_cert and tls_key: give both or neither"},
		{func(c *Config) { c.AccountsPath = "accounts" }, "accounts need tls_cert and tls_key"},
		{func(c *Config) { c.PageSize = 0 }, "page_size 0: want 1..500"},
		{func(c *Config) { c.PageSize = 501 }, "page_size 501: want 1..500"},
		{func(c *Config) { c.Refresh = 10 * time.Millisecond }, "refresh 10ms: want 1s..1h"},
		{func(c *Config) { c.LoginFailures = 0 }, "login_failures 0: want 1..100"},
		{func(c *Config) { c.LoginBackoff = 0 }, "login_backoff 0s: want 100ms..1h"},
		{func(c *Config) { c.WageZone = "Mars/Olympus" }, `wage_zone "Mars/Olympus": want an IANA name or ±hh:mm`},
		{func(c *Config) { c.WageDueDays = 0 }, "wage_due_days 0: want 1..366"},
		{func(c *Config) { c.WageFloorFen = -1 }, "wage_floor_fen -1: want 0..100000000"},
	} {
		c := good
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}

func TestReadAccounts(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "accounts")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	acc, err := ReadAccounts(write("# comment\n\ninspector:$2a$10$abcdefghijklmnopqrstuu\n"))
	if err != nil || len(acc) != 1 || string(acc["inspector"]) != "$2a$10$abcdefghijklmnopqrstuu" {
		t.Fatalf("accounts %v, %v", acc, err)
	}
	for body, want := range map[string]string{
		"inspector:secret\n": "line 1: want user:bcrypt-hash",
		"# none\n":           "no account",
		":$2a$10$x\n":        "line 1: want user:bcrypt-hash",
	} {
		if _, err := ReadAccounts(write(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", body, err, want)
		}
	}
}
