// Package multilang runs record processors written in any language as child
// processes speaking the KCL MultiLang protocol: one child per shard, JSON
// messages one per line on the child's stdin (actions from the daemon) and
// stdout (checkpoint requests and status replies from the child). It is the
// engine of cmd/shardline-multilang, a MultiLangDaemon without a JVM.
package multilang

import (
	"encoding/json"
	"errors"
	"fmt"

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

// recordMsg is one record inside processRecords.
type recordMsg struct {
	Action                      string `json:"action"`
	Data                        []byte `json:"data"` // base64, as Jackson writes byte[]
	PartitionKey                string `json:"partitionKey"`
	SequenceNumber              string `json:"sequenceNumber"`
	SubSequenceNumber           int64  `json:"subSequenceNumber"`
	ApproximateArrivalTimestamp *int64 `json:"approximateArrivalTimestamp"` // epoch milliseconds
}

// processRecordsMsg hands a batch to the child.
type processRecordsMsg struct {
	Action             string      `json:"action"`
	Records            []recordMsg `json:"records"`
	MillisBehindLatest int64       `json:"millisBehindLatest"`
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

// newProcessRecords converts a batch to its message.
func newProcessRecords(in kcl.ProcessRecordsInput) processRecordsMsg {
	m := processRecordsMsg{Action: actProcessRecords, MillisBehindLatest: in.MillisBehindLatest,
		Records: make([]recordMsg, len(in.Records))}
	for i, r := range in.Records {
		rm := recordMsg{Action: "record", Data: r.Data, PartitionKey: r.PartitionKey,
			SequenceNumber: r.SequenceNumber, SubSequenceNumber: r.SubSequenceNumber}
		if rm.Data == nil {
			rm.Data = []byte{}
		}
		if !r.ApproximateArrivalTimestamp.IsZero() {
			ms := r.ApproximateArrivalTimestamp.UnixMilli()
			rm.ApproximateArrivalTimestamp = &ms
		}
		m.Records[i] = rm
	}
	return m
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
