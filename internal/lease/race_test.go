//go:build race

package lease_test

// raceEnabled shrinks the large protocol tests under the race detector.
const raceEnabled = true
