// Package deploy holds the operations files of edgeanchor: the Prometheus
// configuration and alert rules (prometheus/), Grafana provisioning and
// dashboards (grafana/), the compose file and Dockerfile of a 4-validator
// consortium with two gateways, and the systemd units (systemd/). It has no
// code; its tests check these files with the real tools (promtool, the
// Prometheus server, systemd-analyze) against a real gateway and ledger node.
// docs/operations.md is the operator's guide to all of it.
package deploy
