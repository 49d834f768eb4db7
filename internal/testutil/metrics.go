package testutil

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// GatherValue returns the sum of the counter and gauge values of every
// series of metric name in g; it fails the test when g has no such
// metric.
func GatherValue(t testing.TB, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
			return sum
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
