package checkpoint

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// Kinesis sequence numbers are opaque, but those of today's format (the Java
// KCL calls it version 2) carry the number of the shard they belong to: a
// 186-bit number whose two most significant bits read 0b10, with the
// shard's number in bits 4 to 35. The checkpointer uses that to refuse a
// sequence number of another shard, as the Java KCL's SequenceNumberValidator
// does; a sequence number in another format is left to the other rules.
const (
	seqBits       = 186
	seqVersionAt  = 184
	seqVersion    = 2
	seqShardAt    = 4
	seqShardMask  = 1<<32 - 1
	seqMaxDigits  = 57 // 2^186 has 56 decimal digits
	shardIDPrefix = "shardId-"
	shardIDDigits = 12
	noShardNumber = -1
)

// seqShard returns the shard number a sequence number of today's format
// carries, or noShardNumber when seq is not of that format.
func seqShard(seq string) int64 {
	if len(seq) < seqMaxDigits-2 || len(seq) > seqMaxDigits {
		return noShardNumber
	}
	n, ok := new(big.Int).SetString(seq, 10)
	if !ok || n.Sign() <= 0 || n.BitLen() != seqBits {
		return noShardNumber
	}
	if new(big.Int).Rsh(n, seqVersionAt).Int64() != seqVersion {
		return noShardNumber
	}
	return new(big.Int).Rsh(n, seqShardAt).Int64() & seqShardMask
}

// shardNumber returns the number of a shard ID of the form
// "shardId-000000000007" (the last such part of a longer key), or
// noShardNumber.
func shardNumber(shardID string) int64 {
	i := strings.LastIndex(shardID, shardIDPrefix)
	if i < 0 {
		return noShardNumber
	}
	digits := shardID[i+len(shardIDPrefix):]
	if len(digits) != shardIDDigits {
		return noShardNumber
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n < 0 {
		return noShardNumber
	}
	return n
}

// OtherShard reports whether seq is a sequence number of today's format
// that belongs to another shard than shardID (of the usual form), and
// returns that shard's ID. It cannot tell for other formats and IDs.
func OtherShard(shardID, seq string) (string, bool) {
	have, want := seqShard(seq), shardNumber(shardID)
	if have == noShardNumber || want == noShardNumber || have == want {
		return "", false
	}
	return fmt.Sprintf("%s%012d", shardIDPrefix, have), true
}
