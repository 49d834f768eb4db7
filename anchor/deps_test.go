package anchor

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestOfflineDependencies: a third party that only verifies proof bundles
// imports package anchor/evidence (and through it this package); neither
// may link the ledger's RPC client (nor CometBFT's light package, which
// links it), the ledger node, Badger or any edgeanchor package but device
// and its two small packages (credential: the registration body a device
// registration tx carries; refusal: reasons). This package does not import
// anchor/evidence: the evidence is built on the format, not the other way.
func TestOfflineDependencies(t *testing.T) {
	forbidden := []string{
		"github.com/cometbft/cometbft/rpc/",
		"github.com/cometbft/cometbft/light",
		"github.com/cometbft/cometbft/node",
		"github.com/cometbft/cometbft-db",
		"github.com/dgraph-io/badger",
	}
	for _, tc := range []struct {
		pkg  string
		own  []string // the edgeanchor packages it may link
		more []string // and what else it may not
	}{
		// The format itself links no CometBFT at all: its types are the
		// evidence package's business.
		{".", []string{"device", "device/credential", "device/refusal", "anchor"}, []string{"github.com/cometbft/"}},
		{"./evidence", []string{"device", "device/credential", "device/refusal", "anchor", "anchor/evidence"}, nil},
	} {
		t.Run(tc.pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", tc.pkg).Output()
			if err != nil {
				t.Fatalf("go list -deps %s: %v", tc.pkg, err)
			}
			var bad []string
			for _, dep := range strings.Fields(string(out)) {
				for _, f := range append(slices.Clip(forbidden), tc.more...) {
					if strings.HasPrefix(dep, f) {
						bad = append(bad, dep)
					}
				}
				if own, ok := strings.CutPrefix(dep, "github.com/edgeanchor/edgeanchor/"); ok && !slices.Contains(tc.own, own) {
					bad = append(bad, dep)
				}
			}
			if len(bad) > 0 {
				t.Fatalf("package %s depends on %s", tc.pkg, strings.Join(bad, ", "))
			}
		})
	}
}
