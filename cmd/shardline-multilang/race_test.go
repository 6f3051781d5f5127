//go:build race

package main

// raceEnabled: the tests build the daemon with the race detector too.
const raceEnabled = true
