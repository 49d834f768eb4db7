package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPortalWageFlags: the Wages page's defaults come from flags or the
// YAML file (flags win), and a bad one is refused naming the key and the
// bound before anything starts.
func TestPortalWageFlags(t *testing.T) {
	dir := t.TempDir()
	trust := filepath.Join(dir, "trust.json") // never read: each case stops earlier, or at it
	n := 0
	conf := func(body string) string {
		n++
		p := filepath.Join(dir, fmt.Sprintf("portal-%d.yaml", n))
		if err := os.WriteFile(p, []byte("ledger: http://127.0.0.1:1\ntrust: "+trust+"\n"+body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--wage-due-days", "0"}, "wage_due_days 0: want 1..366"},
		{[]string{"--wage-floor-fen", "-1"}, "wage_floor_fen -1: want 0..100000000"},
		{[]string{"--wage-zone", "Mars/Olympus"}, `wage_zone "Mars/Olympus": want an IANA name or ±hh:mm`},
		{[]string{"--config", conf("wage_due_days: 400\n")}, "wage_due_days 400: want 1..366"},
		{[]string{"--config", conf("wage_zone: Mars/Olympus\n")}, `wage_zone "Mars/Olympus"`},
		// The flag wins over the file: the config passes, the portal
		// goes on to read the trust file, which does not exist.
		{[]string{"--config", conf("wage_zone: Mars/Olympus\nwage_floor_fen: -5\n"), "--wage-zone", "+08:00", "--wage-floor-fen", "20000"}, "portal: trust:"},
	} {
		args := append([]string{"portal", "--ledger", "http://127.0.0.1:1", "--trust", trust}, tc.args...)
		var out, errOut bytes.Buffer
		code := run(args, &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q, want 2 and %q", tc.args, code, errOut.String(), tc.want)
		}
	}
}
