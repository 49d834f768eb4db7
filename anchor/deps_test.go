package anchor

import (
	"os/exec"
	"strings"
	"testing"
)

// TestOfflineDependencies: a third party that only verifies proof bundles
// imports this package; it must not link the ledger's RPC client (nor
// CometBFT's light package, which links it), the ledger node, Badger or any
// edgeanchor package but device and its two small packages (credential:
// the registration body a device registration tx carries; refusal: reasons).
func TestOfflineDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"github.com/cometbft/cometbft/rpc/",
		"github.com/cometbft/cometbft/light",
		"github.com/cometbft/cometbft/node",
		"github.com/cometbft/cometbft-db",
		"github.com/dgraph-io/badger",
	}
	var bad []string
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				bad = append(bad, dep)
			}
		}
		if own, ok := strings.CutPrefix(dep, "github.com/edgeanchor/edgeanchor/"); ok && own != "device" && own != "device/credential" && own != "device/refusal" && own != "anchor" {
			bad = append(bad, dep)
		}
	}
	if len(bad) > 0 {
		t.Fatalf("package anchor depends on %s", strings.Join(bad, ", "))
	}
}
