package store

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/gateway/store/diskfloor"
)

// Metrics are the record store's metrics (docs/internals.md names).
type Metrics struct {
	WriteSeconds prometheus.Histogram
	GroupRecords prometheus.Histogram
	SequenceGaps prometheus.Counter
	// HolesKept counts gseq holes found at open that no failed write can
	// explain (a record deleted outside the gateway): every record is kept.
	HolesKept prometheus.Counter
	// RepairDeleted counts unacknowledged records deleted at open above
	// a hole left by a failed write.
	RepairDeleted prometheus.Counter
	// DiskLow is 1 while the store refuses writes because its file
	// system's free space is below store.min_free_mb.
	DiskLow prometheus.Gauge
	// SequenceFills counts records stored as late fills of an open gap;
	// GapsDropped counts open gaps closed for good by store.max_open_gaps.
	SequenceFills prometheus.Counter
	GapsDropped   prometheus.Counter
}

// NewMetrics registers the store's metrics on reg. dir is the store's
// directory, measured at scrape time for size and free space.
func NewMetrics(reg prometheus.Registerer, dir string) *Metrics {
	m := &Metrics{
		WriteSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edgeanchor_store_write_seconds", Help: "Duration of one group-commit write (synced Badger transactions).",
			Buckets: []float64{.0005, .001, .002, .004, .008, .016, .032, .064, .128, .256, .512, 1}}),
		GroupRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edgeanchor_store_group_records", Help: "Records written per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12)}),
		SequenceGaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeanchor_sequence_gaps_total", Help: "Records accepted after a jump in the device's sequence number."}),
		HolesKept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeanchor_store_holes_total", Help: "Holes in gseq found at open that no failed write explains; every record was kept (run the audit)."}),
		RepairDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeanchor_store_repair_deleted_total", Help: "Unacknowledged records deleted at open above a hole left by a failed write."}),
		DiskLow: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgeanchor_store_disk_low", Help: "1 while the record store refuses writes because free disk space is below store.min_free_mb."}),
	}
	m.SequenceFills = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgeanchor_sequence_fills_total", Help: "Records accepted as late fills: a device seq inside an open gap (a reading refused for a retryable reason, resent after later ones were stored)."})
	m.GapsDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgeanchor_sequence_gaps_dropped_total", Help: "Open sequence gaps closed for good because a device had more than store.max_open_gaps; their seqs are refused as replay."})
	reg.MustRegister(m.SequenceFills, m.GapsDropped)
	size := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgeanchor_store_size_bytes", Help: "Bytes on disk of the record store."}, func() float64 { return float64(diskfloor.DirSize(dir)) })
	free := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgeanchor_store_disk_free_bytes", Help: "Free bytes on the record store's file system."}, func() float64 { return float64(diskfloor.Free(dir)) })
	reg.MustRegister(m.WriteSeconds, m.GroupRecords, m.SequenceGaps, m.HolesKept, m.RepairDeleted, size, free)
	reg.MustRegister(m.DiskLow)
	return m
}
