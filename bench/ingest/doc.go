// Package ingest is the gateway's ingest load benchmark (`make bench`):
// signed QoS 1 publishes from 200 and 1,000 connected devices (16 in flight
// per device, every envelope signed before the clock starts) against the
// real gateway (gateway.New: broker hooks, SM2 verify, Badger group commit,
// signed receipts), the same load against a plain mochi-mqtt broker with an
// allow-all hook as the baseline, and fixed-rate runs at 5,000 and 10,000
// msgs/s offered for latency. Devices sit in the broker's StaticRegistry:
// enrolling 1,000 devices through the ledger is not what is measured.
//
// The 1,000-device closed-loop run is then repeated on a fresh store with
// the gateway in a memory cgroup (v1 or v2, made under this process's own)
// limited to 200 MB: its peak charge (heap, stacks and Badger's page
// cache), how often it hit the limit and whether it was OOM-killed. Without
// a writable memory cgroup (not root) that run is reported as not measured.
//
// The broker under test runs in a child process (this test binary re-run in
// a server role) so that its CPU seconds and RSS are its own, not the load
// generator's. Results go to bench/results/ingest.json.
//
//	go test -run '^$' -bench . -benchtime 1x ./bench/ingest
//	EDGEANCHOR_BENCH_CPUPROFILE=/tmp/gw go test ... ; go tool pprof -top /tmp/gw.<pid>
//	EDGEANCHOR_BENCH_HEAPPROFILE=/tmp/heap  (in-use heap every 5 s)
//	EDGEANCHOR_BENCH_SMAPS=/tmp/smaps       (resident kB per mapping and Go's memory stats every 5 s)
//	EDGEANCHOR_BENCH_QUICK=1                (a tenth of the load; writes nothing)
package ingest
