package ingest

import (
	"testing"

	"github.com/edgeanchor/edgeanchor/bench/internal/benchkit"
)

// TestMain runs the benchmarks, or a server role when this binary is
// re-run as a child (benchkit.StartChild).
func TestMain(m *testing.M) { benchkit.Main(m) }
