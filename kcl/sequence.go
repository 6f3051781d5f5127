package kcl

import (
	"fmt"
	"strconv"
	"strings"
)

// Sentinel values of [ExtendedSequenceNumber.SequenceNumber]. They are the
// strings the Java KCL stores in its lease table, so a table written by it
// reads the same here.
const (
	// sentinelTrimHorizon means "start at the oldest record still retained".
	sentinelTrimHorizon = "TRIM_HORIZON"
	// sentinelLatest means "start just after the newest record".
	sentinelLatest = "LATEST"
	// sentinelAtTimestamp means "start at the first record at or after a time".
	sentinelAtTimestamp = "AT_TIMESTAMP"
	// sentinelShardEnd means the shard was read to its end and every record in
	// it was processed. Children of the shard may then start.
	sentinelShardEnd = "SHARD_END"
)

// ExtendedSequenceNumber is a position inside a shard: a Kinesis sequence
// number plus, for records unpacked from a KPL aggregate, the index of the
// user record inside it (the sub-sequence number). Sequence numbers are
// decimal strings of up to 128 bits and are compared numerically.
//
// The zero value is not a valid position; use [ExtendedSequenceNumber.IsZero]
// to test for it.
type ExtendedSequenceNumber struct {
	// SequenceNumber is a decimal Kinesis sequence number or one of the
	// Sentinel* constants.
	SequenceNumber string
	// SubSequenceNumber is the index of a user record inside an aggregated
	// Kinesis record; 0 for records that were not aggregated.
	SubSequenceNumber int64
}

// TrimHorizon is the position before the oldest retained record.
var TrimHorizon = ExtendedSequenceNumber{SequenceNumber: sentinelTrimHorizon}

// Latest is the position after the newest record.
var Latest = ExtendedSequenceNumber{SequenceNumber: sentinelLatest}

// AtTimestamp is the position of the initial timestamp configured for a lease.
var AtTimestamp = ExtendedSequenceNumber{SequenceNumber: sentinelAtTimestamp}

// ShardEnd marks a shard whose records were all processed.
var ShardEnd = ExtendedSequenceNumber{SequenceNumber: sentinelShardEnd}

// subSequenceBeforeRecord is the sub-sequence number of the position just
// before the first user record of a Kinesis record. A checkpoint (S, -1)
// means "everything before S is processed": reading resumes with S itself.
// Only a replay (an operator's checkpoint reset) stores it; a processor
// cannot checkpoint it, since it is the position of no record.
const subSequenceBeforeRecord = -1

// Before returns the checkpoint just before e, a record's position: storing
// it makes the next delivery start with e itself. For a plain record (S, 0)
// it is (S, -1); inside a KPL aggregate it is the
// previous user record. Sentinels and the zero value are returned unchanged.
func (e ExtendedSequenceNumber) Before() ExtendedSequenceNumber {
	if e.rank() != 2 || e.SubSequenceNumber < 0 {
		return e
	}
	e.SubSequenceNumber--
	return e
}

// NewSequence returns the position of a plain (non-aggregated) record.
func NewSequence(seq string) ExtendedSequenceNumber {
	return ExtendedSequenceNumber{SequenceNumber: seq}
}

// IsZero reports whether e is the zero value (no position at all).
func (e ExtendedSequenceNumber) IsZero() bool {
	return e.SequenceNumber == "" && e.SubSequenceNumber == 0
}

// IsSentinel reports whether e is one of TRIM_HORIZON, LATEST, AT_TIMESTAMP or
// SHARD_END rather than the position of a record.
func (e ExtendedSequenceNumber) IsSentinel() bool {
	switch e.SequenceNumber {
	case sentinelTrimHorizon, sentinelLatest, sentinelAtTimestamp, sentinelShardEnd:
		return true
	}
	return false
}

// IsShardEnd reports whether e is SHARD_END.
func (e ExtendedSequenceNumber) IsShardEnd() bool { return e.SequenceNumber == sentinelShardEnd }

// Validate reports whether e is a sentinel or a well-formed decimal sequence
// number with a sub-sequence number of at least -1 (-1, see
// [subSequenceBeforeRecord], only with a sequence number).
func (e ExtendedSequenceNumber) Validate() error {
	if e.SubSequenceNumber < subSequenceBeforeRecord ||
		(e.SubSequenceNumber < 0 && e.IsSentinel()) {
		return fmt.Errorf("kcl: negative sub-sequence number %d", e.SubSequenceNumber)
	}
	if e.IsSentinel() {
		return nil
	}
	if !isDecimal(e.SequenceNumber) {
		return fmt.Errorf("kcl: %q is not a sequence number", e.SequenceNumber)
	}
	return nil
}

// String formats e as "sequence" or "sequence/sub" when the sub-sequence
// number is not zero.
func (e ExtendedSequenceNumber) String() string {
	if e.SubSequenceNumber == 0 {
		return e.SequenceNumber
	}
	return e.SequenceNumber + "/" + strconv.FormatInt(e.SubSequenceNumber, 10)
}

// rank orders the kinds of positions: the starting sentinels come before every
// record, SHARD_END after every record.
func (e ExtendedSequenceNumber) rank() int {
	switch e.SequenceNumber {
	case "":
		return 0
	case sentinelTrimHorizon, sentinelAtTimestamp, sentinelLatest:
		return 1
	case sentinelShardEnd:
		return 3
	}
	return 2
}

// Compare returns -1, 0 or +1 as e is before, equal to or after o. Sequence
// numbers compare numerically, then sub-sequence numbers. The starting
// sentinels (TRIM_HORIZON, LATEST, AT_TIMESTAMP) are equal to each other and
// before every record; SHARD_END is after every record.
func (e ExtendedSequenceNumber) Compare(o ExtendedSequenceNumber) int {
	if r, q := e.rank(), o.rank(); r != q {
		return cmpInt(int64(r), int64(q))
	} else if r != 2 {
		return 0
	}
	if c := compareSequenceNumbers(e.SequenceNumber, o.SequenceNumber); c != 0 {
		return c
	}
	return cmpInt(e.SubSequenceNumber, o.SubSequenceNumber)
}

// compareSequenceNumbers compares two decimal sequence numbers numerically
// without parsing them into integers (they can exceed 64 bits).
func compareSequenceNumbers(a, b string) int {
	a = strings.TrimLeft(a, "0")
	b = strings.TrimLeft(b, "0")
	if len(a) != len(b) {
		return cmpInt(int64(len(a)), int64(len(b)))
	}
	return strings.Compare(a, b)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func isDecimal(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
