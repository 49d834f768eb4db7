package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgeanchor/edgeanchor/portal"
)

// TestPortalRefusesNonLoopbackWithoutTLS: the portal does not start on a
// non-loopback address without TLS and accounts, and says what it needs.
func TestPortalRefusesNonLoopbackWithoutTLS(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", "[::]:0"} {
		var out, errOut bytes.Buffer
		code := run([]string{"portal", "--listen", listen, "--ledger", "http://127.0.0.1:1", "--trust", filepath.Join(t.TempDir(), "trust.json")}, &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), "is not 127.0.0.1 or ::1; set tls_cert, tls_key and accounts") {
			t.Fatalf("portal --listen %s: exit %d, stderr %q", listen, code, errOut.String())
		}
		if strings.Contains(out.String(), "portal: http") {
			t.Fatalf("portal --listen %s: started: %q", listen, out.String())
		}
	}
}

// TestPortalPasswd: the accounts line it prints is one the portal reads
// and whose hash matches the password.
func TestPortalPasswd(t *testing.T) {
	cmd := newRoot()
	var out bytes.Buffer
	cmd.SetArgs([]string{"portal", "passwd", "inspector"})
	cmd.SetIn(strings.NewReader("correct horse battery\n"))
	cmd.SetOut(&out)
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "accounts")
	if err := os.WriteFile(p, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	acc, err := portal.ReadAccounts(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := bcrypt.CompareHashAndPassword(acc["inspector"], []byte("correct horse battery")); err != nil {
		t.Fatalf("line %q: %v", out.String(), err)
	}
}
