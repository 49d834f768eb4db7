// Package benchkit holds what the load benchmarks share: the server roles a
// benchmark's test binary runs as a child process (the real gateway built
// with gateway.New, or plain mochi-mqtt as the baseline) so that the
// server's CPU and memory are its own, a raw MQTT 3.1.1 client cheap enough
// to hold thousands of connections, /proc readings of a process's CPU and
// resident memory, and memory cgroups. A benchmark package's TestMain calls
// Main. Only benchmarks import it.
package benchkit
