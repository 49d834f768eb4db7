// Package httpapi is the gateway's HTTP API: health (/healthz, /readyz from
// background checks, Health), /metrics and the record routes (Routes), and
// the proof, receipt, record range and batch routes (ProofAPI), and a
// record as they and the site topics show it (RecordView). It reads the
// store and the batch log and writes nothing; package gateway mounts it.
package httpapi
