// Package ingest is the gateway's ingest load benchmark (`make bench`):
// signed QoS 1 publishes from 200 and 1,000 connected devices against the
// real gateway, and the same load against a plain mochi-mqtt broker with an
// allow-all hook as the baseline. Results go to bench/results/ingest.json.
//
// The broker under test runs in a child process (this test binary re-run in
// a server role) so that its CPU seconds and RSS are its own, not the load
// generator's.
package ingest
