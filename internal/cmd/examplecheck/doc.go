// Package examplecheck holds a test, not code: it checks that the programs
// in examples/ compile when copied into a module of their own that requires
// github.com/shardline/shardline, so that they import public packages only.
package examplecheck
