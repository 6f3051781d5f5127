//go:build race

package integration

// raceEnabled makes the tests build the consumer with the race detector
// when they run with it.
const raceEnabled = true
