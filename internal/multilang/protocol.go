// Package multilang runs record processors written in any language as child
// processes speaking the KCL MultiLang protocol: one child per shard, JSON
// messages one per line on the child's stdin (actions from the daemon) and
// stdout (checkpoint requests and status replies from the child). It is the
// engine of cmd/shardline-multilang, a MultiLangDaemon without a JVM.
package multilang

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/shardline/shardline/kcl"
)

// Actions of the protocol.
const (
	actInitialize        = "initialize"
	actProcessRecords    = "processRecords"
	actLeaseLost         = "leaseLost"
	actShardEnded        = "shardEnded"
	actShutdownRequested = "shutdownRequested"
	actCheckpoint        = "checkpoint"
	actStatus            = "status"
)

// Exception names the child libraries know (they are the simple class names
// of the Java KCL's checkpoint exceptions).
const (
	excShutdown       = "ShutdownException"
	excInvalidState   = "InvalidStateException"
	excThrottling     = "ThrottlingException"
	excDependency     = "KinesisClientLibDependencyException"
	excIllegalArgment = "IllegalArgumentException"
)

// initializeMsg starts a child on a shard.
type initializeMsg struct {
	Action            string `json:"action"`
	ShardID           string `json:"shardId"`
	SequenceNumber    string `json:"sequenceNumber"`
	SubSequenceNumber int64  `json:"subSequenceNumber"`
}

// bareMsg is leaseLost, shardEnded and shutdownRequested.
type bareMsg struct {
	Action string `json:"action"`
}

// checkpointReply answers a child's checkpoint request. Absent fields are
// written as null, as the Java daemon does.
type checkpointReply struct {
	Action            string  `json:"action"`
	SequenceNumber    *string `json:"sequenceNumber"`
	SubSequenceNumber *int64  `json:"subSequenceNumber"`
	Error             *string `json:"error"`
}

// childMsg is any message a child writes: a checkpoint request or a status.
type childMsg struct {
	Action            string  `json:"action"`
	ResponseFor       string  `json:"responseFor"`
	SequenceNumber    *string `json:"sequenceNumber"`
	SubSequenceNumber *int64  `json:"subSequenceNumber"`
}

// ErrProtocol reports a child that broke the protocol: a line that is not a
// message, an unknown action, a status for another action.
var ErrProtocol = errors.New("multilang: protocol violation")

// parseChildLine decodes one non-empty line from a child's stdout.
func parseChildLine(line []byte) (childMsg, error) {
	var m childMsg
	if err := json.Unmarshal(line, &m); err != nil {
		return m, fmt.Errorf("%w: not a JSON message: %q", ErrProtocol, clip(line, 200))
	}
	switch m.Action {
	case actStatus, actCheckpoint:
		return m, nil
	case "":
		return m, fmt.Errorf("%w: message without action: %q", ErrProtocol, clip(line, 200))
	}
	return m, fmt.Errorf("%w: unexpected action %q from the child", ErrProtocol, m.Action)
}

func clip(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// appendProcessRecords appends the processRecords message of a batch, as
// the Java daemon writes it: each record with its data in base64, its
// partition key, sequence and sub-sequence numbers and its arrival time in
// epoch milliseconds (null when unknown). It is written by hand: batches
// are large, and this is the daemon's hot path.
func appendProcessRecords(b []byte, in kcl.ProcessRecordsInput) []byte {
	b = append(b, `{"action":"processRecords","records":[`...)
	for i, r := range in.Records {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"action":"record","data":"`...)
		b = base64.StdEncoding.AppendEncode(b, r.Data)
		b = append(b, `","partitionKey":`...)
		b = appendJSONString(b, r.PartitionKey)
		b = append(b, `,"sequenceNumber":`...)
		b = appendJSONString(b, r.SequenceNumber)
		b = append(b, `,"subSequenceNumber":`...)
		b = strconv.AppendInt(b, r.SubSequenceNumber, 10)
		b = append(b, `,"approximateArrivalTimestamp":`...)
		if r.ApproximateArrivalTimestamp.IsZero() {
			b = append(b, "null"...)
		} else {
			b = strconv.AppendInt(b, r.ApproximateArrivalTimestamp.UnixMilli(), 10)
		}
		b = append(b, '}')
	}
	b = append(b, `],"millisBehindLatest":`...)
	b = strconv.AppendInt(b, in.MillisBehindLatest, 10)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes
// U+FFFD, as with encoding/json.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// exceptionName maps a checkpoint error to the exception name the Java
// daemon reports for it.
func exceptionName(err error) string {
	switch {
	case errors.Is(err, kcl.ErrLeaseLost), errors.Is(err, kcl.ErrShutdown):
		return excShutdown
	case errors.Is(err, kcl.ErrInvalidCheckpoint):
		return excIllegalArgment
	case errors.Is(err, kcl.ErrThrottled):
		return excThrottling
	case errors.Is(err, kcl.ErrTableNotFound):
		return excInvalidState
	}
	return excDependency
}
