package worker

import "github.com/shardline/shardline/internal/lease"

// WithStore returns c with its lease table replaced by s (nil: the DynamoDB
// table again), for the external tests of this package.
func WithStore(c Config, s lease.Store) Config {
	c.store = s
	return c
}
