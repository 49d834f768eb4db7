// Package listener is what happens to an MQTT connection before the broker
// reads its CONNECT: the mochi listeners for TCP, TLS and WebSocket that
// keep accepting after an error, the connection limit (capped below
// RLIMIT_NOFILE), the per-source and global connect rate limits, the
// CONNECT deadline, the failed-authentication budget the broker consults
// before it checks a credential (Guard.Admit), and their metrics. It knows
// nothing of devices or credentials.
package listener
