// Package portal is the regulator's web portal (edgeanchor portal): it
// watches the consortium on the ledger, browses a gateway's chain of batch
// headers, verifies proof bundles and runs audits, on the regulator's own
// machine. Its verdicts come from its own checks against the trust file,
// never from what a gateway or a node claims. Every asset is in the binary.
package portal

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/wages"
)

// DefaultListen is the portal's default address: loopback only.
const DefaultListen = "127.0.0.1:8490"

// Config configures the portal.
type Config struct {
	// Listen is the address to serve on. An address other than a loopback
	// one needs TLSCert, TLSKey and Accounts.
	Listen string `yaml:"listen"`
	// LedgerRPC is the CometBFT RPC URL of a ledger node.
	LedgerRPC string `yaml:"ledger"`
	// TrustPath is the trust file (edgeanchor ledger export-trust): the
	// validator set every verdict is checked against.
	TrustPath string `yaml:"trust"`
	// Gateways are the gateways' record API base URLs by DID.
	Gateways []GatewayAPI `yaml:"gateways"`
	// TLSCert and TLSKey are PEM files; both or neither.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// AccountsPath is a file of "user:bcrypt-hash" lines. With accounts
	// every page needs a login.
	AccountsPath string `yaml:"accounts"`
	// PageSize is the number of rows of a paged list.
	PageSize int `yaml:"page_size"`
	// Refresh is the auto-refresh interval of the Consortium page.
	Refresh time.Duration `yaml:"refresh"`
	// LoginFailures is the number of failed logins of a user or an address
	// after which further attempts are refused for LoginBackoff, doubling
	// with each further failure (up to 64 times).
	LoginFailures int           `yaml:"login_failures"`
	LoginBackoff  time.Duration `yaml:"login_backoff"`
	// WageZone, WageDueDays and WageFloorFen are the Wages page's
	// defaults: the sites' time zone (IANA name or ±hh:mm), the days after
	// a period's end at which wages are due, the daily floor in fen (0: no
	// floor). The inspector may change them for one report.
	WageZone     string `yaml:"wage_zone"`
	WageDueDays  int    `yaml:"wage_due_days"`
	WageFloorFen int64  `yaml:"wage_floor_fen"`
}

// GatewayAPI names one gateway's record API.
type GatewayAPI struct {
	DID device.DID `yaml:"did"`
	URL string     `yaml:"url"`
}

// DefaultConfig returns the defaults: loopback, pages of 20 rows.
func DefaultConfig() Config {
	return Config{Listen: DefaultListen, PageSize: 20, Refresh: 10 * time.Second,
		LoginFailures: 3, LoginBackoff: 2 * time.Second,
		WageZone: "Asia/Shanghai", WageDueDays: wages.DefaultDueDays}
}

// ErrNotLoopback is returned by Validate for a listen address other than a
// loopback one without TLS and accounts: the portal would otherwise show
// the evidence, and take passwords, in the clear to the network.
var ErrNotLoopback = errors.New("portal: refusing a non-loopback listen address without TLS and accounts")

// maxFloorFen bounds a daily floor (one million yuan).
const maxFloorFen = 100_000_000

// Validate checks the config, naming the key and the bound.
func (c *Config) Validate() error {
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("portal: listen %q: want host:port: %w", c.Listen, err)
	}
	if c.LedgerRPC == "" {
		return errors.New("portal: ledger: the ledger's RPC URL is required")
	}
	if u, err := url.Parse(c.LedgerRPC); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("portal: ledger %q: want an http(s) URL", c.LedgerRPC)
	}
	if c.TrustPath == "" {
		return errors.New("portal: trust: the trust file is required (edgeanchor ledger export-trust)")
	}
	for i, g := range c.Gateways {
		if _, err := device.ParseDID(string(g.DID)); err != nil {
			return fmt.Errorf("portal: gateways[%d].did: %w", i, err)
		}
		if u, err := url.Parse(g.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("portal: gateways[%d].url %q: want an http(s) URL", i, g.URL)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("portal: tls_cert and tls_key: give both or neither")
	}
	if c.AccountsPath != "" && c.TLSCert == "" {
		return errors.New("portal: accounts need tls_cert and tls_key (session cookies are Secure, passwords are not sent in the clear)")
	}
	if !isLoopback(host) && (c.TLSCert == "" || c.AccountsPath == "") {
		return fmt.Errorf("%w: listen %s is not 127.0.0.1 or ::1; set tls_cert, tls_key and accounts to serve other machines", ErrNotLoopback, c.Listen)
	}
	if c.PageSize < 1 || c.PageSize > 500 {
		return fmt.Errorf("portal: page_size %d: want 1..500", c.PageSize)
	}
	if c.Refresh < time.Second || c.Refresh > time.Hour {
		return fmt.Errorf("portal: refresh %s: want 1s..1h", c.Refresh)
	}
	if c.LoginFailures < 1 || c.LoginFailures > 100 {
		return fmt.Errorf("portal: login_failures %d: want 1..100", c.LoginFailures)
	}
	if c.LoginBackoff < 100*time.Millisecond || c.LoginBackoff > time.Hour {
		return fmt.Errorf("portal: login_backoff %s: want 100ms..1h", c.LoginBackoff)
	}
	if _, err := wages.ParseZone(c.WageZone); err != nil {
		return fmt.Errorf("portal: wage_zone %q: want an IANA name or ±hh:mm", c.WageZone)
	}
	if c.WageDueDays < 1 || c.WageDueDays > 366 {
		return fmt.Errorf("portal: wage_due_days %d: want 1..366", c.WageDueDays)
	}
	if c.WageFloorFen < 0 || c.WageFloorFen > maxFloorFen {
		return fmt.Errorf("portal: wage_floor_fen %d: want 0..%d", c.WageFloorFen, maxFloorFen)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ReadAccounts reads a file of "user:bcrypt-hash" lines (# comments and
// blank lines skipped).
func ReadAccounts(path string) (map[string][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("portal: accounts: %w", err)
	}
	acc := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" || !strings.HasPrefix(hash, "$2") {
			return nil, fmt.Errorf("portal: accounts %s line %d: want user:bcrypt-hash", path, n)
		}
		acc[user] = []byte(hash)
	}
	if len(acc) == 0 {
		return nil, fmt.Errorf("portal: accounts %s: no account", path)
	}
	return acc, nil
}
