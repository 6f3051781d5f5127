// Package dashtest checks the Grafana dashboard (dashboards/shardline.json)
// and the metrics documentation against what a running fleet emits: its test
// runs consumer processes on the emulators, scrapes their /metrics into an
// in-memory Prometheus store, and evaluates every panel's expression with the
// Prometheus query engine. It is a module of its own so that the library's
// go.mod does not depend on Prometheus' server code.
package dashtest
