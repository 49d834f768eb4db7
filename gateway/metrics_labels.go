package gateway

import (
	"slices"

	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/identity"
)

// initMetricLabels creates at 0 the series of the broker's counters for
// every label value the gateway knows: refusal reasons of the ingest
// pipeline and the enroller, and the record kinds a message is accepted as.
func initMetricLabels(m *broker.Metrics) {
	m.InitLabels(ingestRefusalReasons(), nil, enrollRefusalReasons())
	for _, k := range device.Kinds() {
		m.Accepted.WithLabelValues(k)
	}
}

// ingestRefusalReasons are the reason labels of
// edgeanchor_messages_refused_total that the ingest pipeline gives (the
// envelope's, then the gateway's own checks).
func ingestRefusalReasons() []string {
	return append(device.Reasons(), ReasonKindNotAllowed, ReasonReplay, ReasonStoreError)
}

// enrollRefusalReasons are the result labels of edgeanchor_enrollments_total
// that the enroller gives: the token's, the ledger's and those of the
// connect credential.
func enrollRefusalReasons() []string {
	out := []string{
		identity.TokenReason(identity.ErrTokenUnknown), identity.TokenReason(identity.ErrTokenUsed), identity.TokenReason(identity.ErrTokenExpired),
		identity.TokenReason(identity.ErrTokenWrongSite), identity.TokenReason(identity.ErrTokenWrongKind),
		identity.ReasonLedgerRefused, identity.ReasonLedgerUnavailable,
	}
	return append(out, slices.DeleteFunc(slices.Clone(broker.ConnectRefusalReasons), func(r string) bool {
		return r == broker.ReasonUnknownAccount || r == broker.ReasonBadPassword
	})...)
}

// anchorSubmitErrorKinds are the kind labels of
// edgeanchor_ledger_submit_errors_total (errorKind, and "chain").
var anchorSubmitErrorKinds = []string{"refused", "unreachable", "timeout", "other", "chain"}
