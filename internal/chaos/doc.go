// Package chaos is the fault suite that `make chaos` runs (build tag
// chaos, so `make test` does not): a ledger node, the gateway and a fleet
// of simulated devices as separate OS processes (bin/edgeanchor and
// bin/firmware-sim), under load, while the suite kills the gateway with
// SIGKILL over and over and takes the ledger away for a minute, then
// checks that nothing acknowledged or kept by a device was lost, nothing
// was stored twice, gseq has no hole and the backlog was anchored in
// order. Each run prints its figures. See the test's doc comment for the
// environment variables that size it.
package chaos
