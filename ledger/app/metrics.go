package app

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the ledger application (docs/internals.md, "Metric names"). They
// count transactions as blocks apply them (FinalizeBlock) and refusals at
// CheckTx and FinalizeBlock.
type Metrics struct {
	anchors       *prometheus.CounterVec
	registrations prometheus.Counter
	revocations   prometheus.Counter
	refused       *prometheus.CounterVec
}

// NewMetrics registers the application metrics on reg. A nil reg gives
// working, unregistered metrics.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		anchors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeanchor_ledger_anchors_total",
			Help: "Batch headers anchored (AnchorBatch applied), by gateway DID.",
		}, []string{"gateway"}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeanchor_ledger_registrations_total",
			Help: "Devices registered (RegisterDevice applied).",
		}),
		revocations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeanchor_ledger_revocations_total",
			Help: "Devices revoked (RevokeDevice applied).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeanchor_ledger_refused_total",
			Help: "Transactions refused at CheckTx or FinalizeBlock, by code name (docs/ledger.md).",
		}, []string{"code"}),
	}
	if reg != nil {
		// A node stopped and started again in one process registers twice:
		// keep counting on the collectors already registered.
		var are prometheus.AlreadyRegisteredError
		if err := reg.Register(m.anchors); errors.As(err, &are) {
			m.anchors = are.ExistingCollector.(*prometheus.CounterVec)
		} else if err != nil {
			return nil, err
		}
		if err := reg.Register(m.registrations); errors.As(err, &are) {
			m.registrations = are.ExistingCollector.(prometheus.Counter)
		} else if err != nil {
			return nil, err
		}
		if err := reg.Register(m.revocations); errors.As(err, &are) {
			m.revocations = are.ExistingCollector.(prometheus.Counter)
		} else if err != nil {
			return nil, err
		}
		if err := reg.Register(m.refused); errors.As(err, &are) {
			m.refused = are.ExistingCollector.(*prometheus.CounterVec)
		} else if err != nil {
			return nil, err
		}
	}
	// Every refusal code's series exists at 0 from the start, so that the
	// consortium dashboard shows 0 rather than "No data".
	for _, c := range Codes() {
		if c != CodeOK {
			m.refused.WithLabelValues(c.Name())
		}
	}
	return m, nil
}
