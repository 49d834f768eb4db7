package broker

import "github.com/edgeanchor/edgeanchor/device/refusal"

// Known label values. A counter vector has no series for a label value until
// its first event, so a dashboard panel of refusals or errors shows "No
// data" on a healthy site, indistinguishable from a broken scrape. Every
// reason of device/refusal's table is created at 0 when the metrics are
// made: edgeanchor_messages_refused_total{reason, kind=""} for the Publish
// reasons (the broker's own and those of the ingest pipeline),
// edgeanchor_auth_failures_total{reason} for the Connect reasons and
// edgeanchor_enrollments_total{result} for "ok" and the Enroll reasons (the
// broker's and the enroller's).
func (m *Metrics) initKnownLabels() {
	for _, r := range refusal.Names(refusal.Publish) {
		m.Refused.WithLabelValues(r, "")
	}
	for _, r := range refusal.Names(refusal.Connect) {
		m.AuthFailures.WithLabelValues(r)
	}
	m.Enrollments.WithLabelValues("ok")
	for _, r := range refusal.Names(refusal.Enroll) {
		m.Enrollments.WithLabelValues(r)
	}
}
