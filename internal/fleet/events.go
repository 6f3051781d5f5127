package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/shardline/shardline/kcl"
)

// Event types the harness consumer (internal/cmd/fleetworker) writes to its events file.
const (
	EventStart             = "start"              // a process started (PID set)
	EventStop              = "stop"               // a process stopped gracefully
	EventRecord            = "record"             // a record was delivered
	EventInitialize        = "initialize"         // a shard was started at Checkpoint
	EventCheckpoint        = "checkpoint"         // a checkpoint at Position succeeded
	EventCheckpointFailed  = "checkpoint_failed"  // a checkpoint in ProcessRecords failed
	EventLeaseLost         = "lease_lost"         // the shard's lease was lost
	EventShutdownRequested = "shutdown_requested" // the shard is given up on purpose
	EventShardEnded        = "shard_ended"        // the shard was read to its end
)

// Event is one line of a consumer's events file.
type Event struct {
	Type   string    `json:"type"`
	Time   time.Time `json:"ts"`
	Worker string    `json:"worker"`
	PID    int       `json:"pid,omitempty"`
	// Stream names the shard's stream in a multi-stream consumer (empty
	// for a single-stream one); Shard is then the plain shard ID.
	Stream  string `json:"stream,omitempty"`
	Shard   string `json:"shard,omitempty"`
	Seq     string `json:"seq,omitempty"`
	PK      string `json:"pk,omitempty"`
	Data    string `json:"data,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
	// Batch numbers the ProcessRecords calls of one processor (record
	// events only), from 1.
	Batch      int      `json:"batch,omitempty"`
	Checkpoint string   `json:"checkpoint,omitempty"`
	Position   string   `json:"position,omitempty"`
	Children   []string `json:"children,omitempty"`

	// Incarnation numbers the processes that wrote the same file, from 1
	// (it counts the "start" lines up to this one). It is not in the file.
	Incarnation int `json:"-"`
}

// Events is what the events files hold.
type Events struct {
	// Records are the events in file order, file after file.
	Records []Event
	// Damaged counts lines that could not be parsed (a process killed in
	// the middle of a write). A trailing line without its newline is being
	// written and is ignored, not counted.
	Damaged int
}

// ReadEvents reads one events file. A missing file yields no events.
func ReadEvents(path string) (Events, error) {
	var out Events
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("fleet: %w", err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i < len(b)-1 {
		b = b[:i+1] // drop the line still being written
	}
	incarnation := 0
	for line := range bytes.Lines(b) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var e Event
		if err := json.Unmarshal(line, &e); err != nil || e.Type == "" {
			out.Damaged++
			continue
		}
		if e.Type == EventStart || incarnation == 0 {
			incarnation++
		}
		e.Incarnation = incarnation
		out.Records = append(out.Records, e)
	}
	return out, nil
}

// ParsePosition parses a position as the consumer writes it: a sentinel
// (TRIM_HORIZON, LATEST, ...), "sequence" or "sequence/sub-sequence".
func ParsePosition(s string) (kcl.ExtendedSequenceNumber, error) {
	seq, sub, found := strings.Cut(s, "/")
	p := kcl.ExtendedSequenceNumber{SequenceNumber: seq}
	if found {
		n, err := strconv.ParseInt(sub, 10, 64)
		if err != nil {
			return p, fmt.Errorf("fleet: bad position %q", s)
		}
		p.SubSequenceNumber = n
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("fleet: bad position %q: %w", s, err)
	}
	return p, nil
}

// FirstDeliveries returns, for each of shards, the earliest record event at
// or after since written by a worker other than exclude. Shards with no such
// delivery are absent from the result.
func (e Events) FirstDeliveries(shards []string, since time.Time, exclude string) map[string]Event {
	want := make(map[string]bool, len(shards))
	for _, s := range shards {
		want[s] = true
	}
	first := make(map[string]Event)
	for _, ev := range e.Records {
		if ev.Type != EventRecord || !want[ev.Shard] || ev.Worker == exclude || ev.Time.Before(since) {
			continue
		}
		if cur, ok := first[ev.Shard]; !ok || ev.Time.Before(cur.Time) {
			first[ev.Shard] = ev
		}
	}
	return first
}

// DeliveredBy counts record events per worker (every delivery, duplicates
// included).
func (e Events) DeliveredBy() map[string]int {
	n := make(map[string]int)
	for _, ev := range e.Records {
		if ev.Type == EventRecord {
			n[ev.Worker]++
		}
	}
	return n
}

// Filter returns the events for which keep is true.
func (e Events) Filter(keep func(Event) bool) []Event {
	var out []Event
	for _, ev := range e.Records {
		if keep(ev) {
			out = append(out, ev)
		}
	}
	return out
}
