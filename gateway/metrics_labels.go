package gateway

import (
	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
)

// initMetricLabels creates at 0 the series of the record kinds a message is
// accepted as (the broker creates those of every refusal reason itself).
func initMetricLabels(m *broker.Metrics) {
	for _, k := range device.Kinds() {
		m.Accepted.WithLabelValues(k)
	}
}
