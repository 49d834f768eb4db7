package broker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/broker/listener"
)

// Metrics are the broker's and the ingest pipeline's counters, named as in
// docs/internals.md.
type Metrics struct {
	DevicesConnected prometheus.Gauge
	Connects         prometheus.Counter
	AuthFailures     *prometheus.CounterVec // reason
	Enrollments      *prometheus.CounterVec // result: ok or a refusal reason
	Received         prometheus.Counter
	Accepted         *prometheus.CounterVec // kind
	Refused          *prometheus.CounterVec // reason, kind
	Duplicates       prometheus.Counter
	IngestLatency    prometheus.Histogram
	RepublishDropped prometheus.Counter
	ReceiptsDropped  prometheus.Counter
	V3Disconnects    prometheus.Counter
	PacketsTooLarge  prometheus.Counter
	InFlight         prometheus.Gauge
	ClientsConnected prometheus.GaugeFunc
	Conn             *listener.ConnMetrics // connections before CONNECT (package broker/listener)
}

// NewMetrics registers the broker's metrics on reg. clients reports the
// number of connected MQTT clients (devices and applications).
func NewMetrics(reg prometheus.Registerer, clients func() float64) *Metrics {
	m := &Metrics{
		DevicesConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgeanchor_devices_connected", Help: "Devices with an open MQTT session."}),
		Connects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeanchor_connects_total", Help: "Successful CONNECTs (devices and applications)."}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeanchor_auth_failures_total", Help: "CONNECTs refused, by reason."}, []string{"reason"}),
		Enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeanchor_enrollments_total", Help: "Enrollment attempts at CONNECT, by result (ok or the refusal reason)."}, []string{"result"}),
		Received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeanchor_messages_received_total", Help: "Publishes received from devices."}),
		Accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeanchor_messages_accepted_total", Help: "Records verified and durably stored, by record kind."}, []string{"kind"}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeanchor_messages_refused_total", Help: "Publishes refused, by reason and record kind (empty when not decoded)."}, []string{"reason", "kind"}),
		Duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeanchor_messages_duplicate_total", Help: "Resends of a stored record (same device, seq and envelope bytes) acknowledged without storing anything."}),
		IngestLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edgeanchor_ingest_latency_seconds", Help: "Publish received to record durably stored (just before PUBACK).",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5}}),
		RepublishDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeanchor_republish_dropped_total", Help: "Verified records not delivered to a site subscriber (its queue was full)."}),
		ReceiptsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeanchor_receipts_dropped_total", Help: "Receipts not delivered to a device (its queue was full); they stay served over HTTP."}),
		V3Disconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeanchor_v3_refusal_disconnects_total", Help: "MQTT 3.1.1 clients disconnected after too many refused publishes."}),
		PacketsTooLarge: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeanchor_mqtt_packets_too_large_total", Help: "Connections closed because a packet was over the Maximum Packet Size (2 x limits.max_payload + 4 KiB)."}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgeanchor_ingest_inflight", Help: "Publishes inside the ingest pipeline."}),
	}
	m.ClientsConnected = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgeanchor_mqtt_clients_connected", Help: "Connected MQTT clients (devices and applications)."}, clients)
	reg.MustRegister(m.DevicesConnected, m.Connects, m.AuthFailures, m.Enrollments, m.Received, m.Accepted,
		m.Refused, m.Duplicates, m.IngestLatency, m.RepublishDropped, m.ReceiptsDropped, m.V3Disconnects, m.InFlight, m.ClientsConnected,
		m.PacketsTooLarge)
	m.initKnownLabels()
	return m
}
