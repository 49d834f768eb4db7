// Package sim simulates a fleet of field devices for edgeanchor: attendance
// terminals and the site payroll run, survey instruments walking traverses,
// and dust/noise monitors, whose readings package sim/profile generates.
// Each simulated device keeps its SM2 key and its
// sequence number on disk, enrolls with a one-time token, connects with the
// ea1 credential of docs/internals.md, signs every reading when it is taken
// and keeps it in an on-disk spool until the gateway acknowledges it
// (store-and-forward). Load mode (Load) publishes pre-signed envelopes for
// benchmarks.
//
// Readings follow a simulated clock per device: a device emits its readings
// at Config.Rate per second while its clock is behind the wall clock
// (catching up from Config.Start), and in real time once it has caught up.
// Envelope timestamps are always the simulated reading times; the connect
// and enrollment credentials use the wall clock.
package sim
