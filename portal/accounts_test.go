package portal

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths.
func selfSigned(t *testing.T) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "portal test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, kp := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kp, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, kp
}

// accountsFile writes one account, user "inspector" with password pass.
func accountsFile(t *testing.T, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "accounts")
	if err := os.WriteFile(p, []byte("# portal accounts\ninspector:"+string(h)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testAccounts: with accounts (and TLS) every page redirects to the login;
// a wrong password is refused and, after three, even the right one is
// refused for a while; the session cookie is Secure, HttpOnly and
// SameSite; a form without its CSRF token is refused.
func testAccounts(t *testing.T, e *env, b *browser) {
	const pass = "correct horse battery staple"
	cert, key := selfSigned(t)
	s := e.startPortal(t, func(c *Config) {
		c.TLSCert, c.TLSKey, c.AccountsPath = cert, key, accountsFile(t, pass)
		c.LoginBackoff = time.Minute // longer than the test: the 4th attempt is refused for sure
	})
	base := s.URL()
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("portal URL %s, want https", base)
	}
	b.use(base)
	did := url.QueryEscape(string(e.LGW.DID()))
	for _, p := range []string{"/", "/consortium", "/gateway?did=" + did, "/batch?did=" + did + "&seq=1",
		"/proof?did=" + did + "&gseq=1", "/verify", "/audit", "/audit/0123/status", "/charts",
		"/wages", "/wages/0123", "/wages/0123/status", "/wages/0123/report.csv", "/wages/0123/pack?worker=" + strings.Repeat("ab", 32)} {
		b.do(t, chromedp.Navigate(base+p), chromedp.WaitVisible(chromedp.CSS("#login")))
		if loc := get(t, b, chromedp.Location()); loc != base+"/login" {
			t.Fatalf("%s: at %s, want the login", p, loc)
		}
	}
	b.screenshot(t, "login")
	login := func(user, pw string) string {
		b.do(t, chromedp.Navigate(base+"/login"), chromedp.WaitVisible(chromedp.CSS("#login")),
			chromedp.SendKeys(chromedp.CSS("#user"), user), chromedp.SendKeys(chromedp.CSS("#password"), pw),
			submit("#signin"), chromedp.WaitVisible(chromedp.CSS("h1")))
		return get(t, b, chromedp.Location())
	}
	if loc := login("inspector", pass); loc != base+"/consortium" {
		t.Fatalf("right password: at %s: %s", loc, get(t, b, chromedp.Text(chromedp.CSS("body"))))
	}
	b.do(t, chromedp.WaitVisible(chromedp.CSS("#members")))
	b.do(t, chromedp.Click(chromedp.CSS(".logout button")), chromedp.WaitVisible(chromedp.CSS("#login")))
	b.do(t, chromedp.Navigate(base+"/verify"), chromedp.WaitVisible(chromedp.CSS("#login")))
	b.clean(t)

	for i := range 3 {
		if loc := login("inspector", "wrong"); loc != base+"/login" {
			t.Fatalf("wrong password %d: at %s", i+1, loc)
		}
		if msg := b.text(t, "#error"); msg != "Wrong user name or password." {
			t.Fatalf("wrong password %d: %q", i+1, msg)
		}
	}
	if loc := login("inspector", pass); loc != base+"/login" {
		t.Fatalf("right password after 3 failures: at %s, want refused", loc)
	}
	if msg := b.text(t, "#error"); !strings.HasPrefix(msg, "Too many failed sign-ins: try again in") {
		t.Fatalf("right password after 3 failures: %q", msg)
	}
	// Chromium logs the 401 and 429 answers of the login form.
	b.cleanBut(t, "status of 401 (Unauthorized) "+base+"/login", "status of 429 (Too Many Requests) "+base+"/login")

	// The cookie's attributes, and a form without its token, over plain
	// HTTP requests.
	jar := &cookieJar{}
	hc := &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sc := resp.Header.Get("Set-Cookie")
	for _, want := range []string{sessionCookie + "=", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(sc, want) {
			t.Fatalf("Set-Cookie %q lacks %s", sc, want)
		}
	}
	resp, err = hc.PostForm(base+"/login", url.Values{"user": {"inspector"}, "password": {pass}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("login without the CSRF token: %s, want 403", resp.Status)
	}
}

type cookieJar struct{ c []*http.Cookie }

func (j *cookieJar) SetCookies(_ *url.URL, c []*http.Cookie) { j.c = append(j.c, c...) }
func (j *cookieJar) Cookies(*url.URL) []*http.Cookie         { return j.c }

func TestConfigRefusesNonLoopbackWithoutTLSAndAccounts(t *testing.T) {
	base := DefaultConfig()
	base.LedgerRPC, base.TrustPath = "http://127.0.0.1:26657", "trust.json"
	for _, tc := range []struct {
		listen, cert, accounts string
		ok                     bool
	}{
		{"127.0.0.1:8490", "", "", true},
		{"[::1]:8490", "", "", true},
		{"0.0.0.0:8490", "", "", false},
		{"192.0.2.7:8490", "c.pem", "", false},
		{"[::]:8490", "", "", false},
		{"0.0.0.0:8490", "c.pem", "accounts", true},
	} {
		c := base
		c.Listen, c.AccountsPath = tc.listen, tc.accounts
		if tc.cert != "" {
			c.TLSCert, c.TLSKey = tc.cert, "k.pem"
		}
		err := c.Validate()
		if tc.ok != (err == nil) {
			t.Errorf("listen %s tls %q accounts %q: %v", tc.listen, tc.cert, tc.accounts, err)
		}
		if !tc.ok && (!errors.Is(err, ErrNotLoopback) || !strings.Contains(err.Error(), "set tls_cert, tls_key and accounts")) {
			t.Errorf("listen %s: error %v does not say what is needed", tc.listen, err)
		}
	}
}
