// Package devices holds the device-scale benchmarks of issue 18 (`make
// bench`), both against the real gateway (gateway.New in a child process,
// benchkit's gateway role) with its devices in the broker's static registry
// (every CONNECT still verifies the device's SM2 credential):
//
//   - BenchmarkQuietDevices: 1,000, 5,000, 10,000 and 20,000 quiet devices
//     (capped to what RLIMIT_NOFILE lets one process hold), each publishing
//     one signed QoS 1 reading every 10 s for a 60 s window once all are
//     connected: the gateway's RSS (anonymous and file-backed), CPU,
//     publish→PUBACK latency, memory per connected device, connect time.
//     bench/results/devices.json, devices-{memory,cpu,latency}.png.
//   - BenchmarkReconnectStorm: 10,000 such devices; the gateway is killed
//     with SIGKILL and restarted after 60 s on the same store while every
//     device keeps taking readings into its spool; every device reconnects
//     with firmware-sim's policy (sim.Backoff) through the gateway's default
//     connect limits and sends its spool. Time until all are back and every
//     spooled reading is stored, PUBACK latency meanwhile, refusals, peak
//     RSS, and the store read back: nothing lost, nothing stored twice.
//     bench/results/storm.json, storm-{devices,latency}.png.
//
// Each device connects from its own loopback address (127.a.b.c), as the
// devices of a site have their own; RLIMIT_NOFILE is raised inside the
// benchmark process, which the gateway child inherits.
//
//	go test -run '^$' -bench . -benchtime 1x -timeout 30m ./bench/devices
//	EDGEANCHOR_BENCH_QUICK=1               (1,000 devices at most; results in $TMPDIR/edgeanchor-bench-quick)
//	EDGEANCHOR_BENCH_QUIET_POINTS=1000,10000  (the quiet run's device counts)
//	EDGEANCHOR_BENCH_MEMORY_LIMIT_MB=400       (the gateway's memory_limit_mb; 0 for none)
//	EDGEANCHOR_BENCH_HEAPPROFILE, _CPUPROFILE, _SMAPS: as in bench/ingest (the gateway role's)
package devices
