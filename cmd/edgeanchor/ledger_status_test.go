package main

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// TestLedgerStatus: `ledger status` on a running validator prints its chain,
// a height, that it has caught up, and that its validator signed the commit
// of that height; a node that does not answer, or a bad flag, exits 2.
func TestLedgerStatus(t *testing.T) {
	t.Parallel()
	n := ledgertest.StartSingle(t)
	dir := t.TempDir()
	var out string
	testutil.WaitFor(t, time.Minute, "a status at height 2 or more", func() error {
		out = devMustRun(t, dir, nil, "ledger", "status", "--rpc", n.RPC)
		if regexp.MustCompile(`(?m)^height     ([2-9]|\d\d+) `).MatchString(out) {
			return nil
		}
		return fmt.Errorf("status:\n%s", out)
	})
	for _, want := range []string{
		"chain      " + n.ChainID + "\n",
		", catching up: no\n",
		"peers      0\n",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("status lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`(?m)^validator  [0-9A-F]{40}: power 10, signed block (\d+)$`).MatchString(out) {
		t.Fatalf("status does not say the validator signed:\n%s", out)
	}
	if _, errOut, code := devRun(t, dir, nil, "ledger", "status", "--rpc", "http://"+testutil.FreeAddr(t)); code != 2 || !strings.Contains(errOut, "ledger status: status of") {
		t.Fatalf("status of a closed port: exit %d, %s", code, errOut)
	}
	if _, _, code := devRun(t, dir, nil, "ledger", "status", "--rpc", n.RPC, "--timeout", "0s"); code != 2 {
		t.Fatalf("--timeout 0s: exit %d, want 2", code)
	}
}
