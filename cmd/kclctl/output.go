package main

import (
	"encoding/json"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shardline/shardline/kcl"
)

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	_, _ = io.WriteString(t.tw, strings.Join(cells, "\t")+"\n")
}

func (t *table) flush() error { return t.tw.Flush() }

// describeCheckpoint formats a checkpoint for people: "before S" for the
// position a sequence-number replay stores, the time of an AT_TIMESTAMP
// checkpoint.
func describeCheckpoint(cp kcl.ExtendedSequenceNumber, ts time.Time) string {
	switch {
	case cp.IsZero():
		return ""
	case cp.SequenceNumber == kcl.AtTimestamp.SequenceNumber && !ts.IsZero():
		return kcl.AtTimestamp.SequenceNumber + " " + ts.UTC().Format(time.RFC3339Nano)
	case cp.SubSequenceNumber < 0 && !cp.IsSentinel(): // the position before a record, stored by a replay
		return "before " + cp.SequenceNumber
	}
	return cp.String()
}

// timePtr returns nil for the zero time.
func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// formatLag formats a lag for a table: rounded to what matters.
func formatLag(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d < time.Second:
		return d.String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
