package lease

// CheckLeaseKey refuses a key that cannot name a shard lease (empty, or a
// worker presence row's); the error matches ErrInvalidArgument.
func CheckLeaseKey(op, key string) error { return checkLeaseKey(op, key) }

// NormalizeShardSet sorts ids, drops empty and repeated ones, and returns nil
// for an empty set.
func NormalizeShardSet(ids []string) []string { return normalizeShardSet(ids) }
