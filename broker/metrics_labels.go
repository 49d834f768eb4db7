package broker

// Known label values. A counter vector has no series for a label value until
// its first event, so a dashboard panel of refusals or errors shows "No
// data" on a healthy site, indistinguishable from a broken scrape. The
// values below are created at 0 when the metrics are made; the gateway adds
// the reasons of its ingest pipeline and enroller (InitLabels).

// ConnectRefusalReasons are the reason labels of
// edgeanchor_auth_failures_total for a refused CONNECT.
var ConnectRefusalReasons = []string{
	ReasonMalformed, ReasonUnknownDevice, ReasonRevoked, ReasonStale, ReasonReplayed,
	ReasonBadSignature, ReasonClientIDMismatch, ReasonUnknownAccount, ReasonBadPassword,
}

// PublishRefusalReasons are the reason labels of
// edgeanchor_messages_refused_total the broker itself gives, before the
// ingest pipeline sees the publish.
var PublishRefusalReasons = []string{
	ReasonForeignTopic, ReasonRevoked, ReasonUnknownDevice, ReasonRateLimited,
	ReasonTooLarge, ReasonInFlightExceeded, "store_error",
}

// enrollmentResults are the results of edgeanchor_enrollments_total the
// broker gives itself; the enroller's refusal reasons come from the gateway.
var enrollmentResults = []string{"ok", ReasonEnrollDisabled, "enroll_error"}

// InitLabels creates at 0 the series of each given label value:
// edgeanchor_messages_refused_total{reason, kind=""} for refused,
// edgeanchor_auth_failures_total{reason} for authFailures and
// edgeanchor_enrollments_total{result} for enrollments. Values already
// present keep their count.
func (m *Metrics) InitLabels(refused, authFailures, enrollments []string) {
	for _, r := range refused {
		m.Refused.WithLabelValues(r, "")
	}
	for _, r := range authFailures {
		m.AuthFailures.WithLabelValues(r)
	}
	for _, r := range enrollments {
		m.Enrollments.WithLabelValues(r)
	}
}

// initKnownLabels creates the broker's own known label values at 0.
func (m *Metrics) initKnownLabels() {
	m.InitLabels(PublishRefusalReasons, ConnectRefusalReasons, enrollmentResults)
}
