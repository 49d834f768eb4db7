package devices

import (
	"testing"

	"github.com/edgeanchor/edgeanchor/bench/internal/benchkit"
)

// TestMain runs the benchmarks, or the gateway role when this binary is
// re-run as a child (benchkit.StartChild).
func TestMain(m *testing.M) { benchkit.Main(m) }
