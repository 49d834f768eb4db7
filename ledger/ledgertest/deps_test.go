package ledgertest

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNothingAboveTheLedger: the helpers, and the node process they build
// and run (nodeMain), import no edgeanchor package above the ledger (the edgeanchor command,
// the gateway, the broker, the simulators).
func TestNothingAboveTheLedger(t *testing.T) {
	node := "github.com/edgeanchor/edgeanchor/" + strings.TrimPrefix(nodeMain, "./")
	out, err := exec.Command("go", "list", "-deps", ".", node).Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	allowed := map[string]bool{"device": true, "device/credential": true, "device/refusal": true, "anchor": true, "anchor/evidence": true, "anchor/ledgerclient": true, "ledger": true, "ledger/app": true,
		"ledger/ledgertest": true, "ledger/ledgertest/ledgernode": true, "internal/testbin": true}
	for _, dep := range strings.Fields(string(out)) {
		if own, ok := strings.CutPrefix(dep, "github.com/edgeanchor/edgeanchor/"); ok && !allowed[own] {
			t.Errorf("ledgertest depends on %s", dep)
		}
	}
}
