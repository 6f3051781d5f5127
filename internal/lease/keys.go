package lease

import (
	"strconv"
	"strings"
)

// CheckLeaseKey refuses a key that cannot name a shard lease (empty, or a
// worker presence row's); the error matches ErrInvalidArgument.
func CheckLeaseKey(op, key string) error { return checkLeaseKey(op, key) }

// NormalizeShardSet sorts ids, drops empty and repeated ones, and returns nil
// for an empty set.
func NormalizeShardSet(ids []string) []string { return normalizeShardSet(ids) }

// Lease keys come in two formats, those of the Java KCL:
//
//   - single-stream: the shard ID ("shardId-000000000001");
//   - multi-stream: "ACCOUNT:STREAM:EPOCH:SHARD", the stream identifier
//     ACCOUNT:STREAM:EPOCH (account ID, stream name, creation time of the
//     stream in seconds since the Unix epoch) and the shard ID, joined by a
//     colon. The item also carries the attributes streamName (the stream
//     identifier, so named by the Java KCL for historical reasons) and
//     shardId.
//
// Shard IDs and stream names never hold a colon, so the two formats cannot
// be confused. All key parsing is here.

// StreamIdentifier returns the Java KCL's serialized identifier of a stream
// in multi-stream mode: ACCOUNT:NAME:EPOCH.
func StreamIdentifier(account, name string, creationEpoch int64) string {
	return account + ":" + name + ":" + strconv.FormatInt(creationEpoch, 10)
}

// MultiStreamKey returns the multi-stream lease key of a shard of the stream
// with the given identifier (see [StreamIdentifier]). An empty stream
// identifier gives the single-stream key, the shard ID.
func MultiStreamKey(streamID, shardID string) string {
	if streamID == "" {
		return shardID
	}
	return streamID + ":" + shardID
}

// SplitKey returns the stream identifier and the shard ID of a lease key.
// A single-stream key has an empty stream identifier. ok is false for a key
// that has colons but is not a well-formed multi-stream key (ACCOUNT:NAME:EPOCH:SHARD
// with a numeric epoch and no empty part).
func SplitKey(key string) (streamID, shardID string, ok bool) {
	i := strings.LastIndexByte(key, ':')
	if i < 0 {
		return "", key, key != ""
	}
	streamID, shardID = key[:i], key[i+1:]
	if _, _, _, ok := ParseStreamIdentifier(streamID); !ok || shardID == "" {
		return "", "", false
	}
	return streamID, shardID, true
}

// ParseStreamIdentifier splits a stream identifier ACCOUNT:NAME:EPOCH.
func ParseStreamIdentifier(id string) (account, name string, epoch int64, ok bool) {
	parts := strings.Split(id, ":")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return "", "", 0, false
	}
	epoch, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil || epoch < 0 {
		return "", "", 0, false
	}
	return parts[0], parts[1], epoch, true
}

// ShardIDOf returns the shard ID a lease key names (the key itself when it
// is not a multi-stream key).
func ShardIDOf(key string) string {
	if _, shard, ok := SplitKey(key); ok {
		return shard
	}
	return key
}

// StreamOfKey returns the stream identifier of a multi-stream lease key, or
// "" for a single-stream (or malformed) key.
func StreamOfKey(key string) string {
	s, _, _ := SplitKey(key)
	return s
}
