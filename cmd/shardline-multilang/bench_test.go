//go:build unix

package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/internal/multilang"
	"github.com/shardline/shardline/kcl"
)

// BenchmarkProcessor compares, in one run, the cost of handing batches to a
// record processor written with the npm aws-kcl library through the
// MultiLang protocol (a Node.js child, JSON lines on pipes, a checkpoint per
// batch) with the same work done by a Go processor in the worker's process.
// No AWS service is involved: it measures the daemon-child path alone.
// Figures: records/s (wall clock) and CPU per record, the daemon's and the
// child's together (rusage of this process and of its waited children).
//
//	go test -run XXX -bench Processor -benchtime 2000x ./cmd/shardline-multilang
func BenchmarkProcessor(b *testing.B) {
	appDir := requireNodeKCL(b)
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("node/batch=%d", size), func(b *testing.B) {
			f, err := multilang.NewFactory(multilang.Options{Command: []string{"node", "processor.js"}, Dir: appDir,
				Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			p, err := f.New("shardId-000000000000")
			if err != nil {
				b.Fatal(err)
			}
			benchProcessor(b, p, size)
		})
		b.Run(fmt.Sprintf("go/batch=%d", size), func(b *testing.B) {
			benchProcessor(b, goProcessor{}, size)
		})
	}
}

// goProcessor does what testdata/processor.js does without an events file:
// it reads every record and checkpoints the batch's last one.
type goProcessor struct{}

func (goProcessor) ProcessRecords(ctx context.Context, in kcl.ProcessRecordsInput) error {
	n := 0
	for _, r := range in.Records {
		n += len(string(r.Data))
	}
	if n < 0 || len(in.Records) == 0 {
		return nil
	}
	return in.Checkpointer.CheckpointRecord(ctx, in.Records[len(in.Records)-1])
}

func benchProcessor(b *testing.B, p kcl.RecordProcessor, size int) {
	ctx := context.Background()
	cp := checkpoint.New("shardId-000000000000",
		checkpoint.WriterFunc(func(context.Context, checkpoint.State) error { return nil }), kcl.TrimHorizon)
	if ini, ok := p.(kcl.Initializer); ok {
		if err := ini.Initialize(ctx, kcl.InitializeInput{ShardID: "shardId-000000000000", Checkpoint: kcl.TrimHorizon}); err != nil {
			b.Fatal(err)
		}
	}
	data := make([]byte, 200)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	arrival := time.Now()
	seq := 0
	next := func() kcl.ProcessRecordsInput {
		in := kcl.ProcessRecordsInput{ShardID: "shardId-000000000000", Checkpointer: cp, Records: make([]kcl.Record, size)}
		for i := range in.Records {
			seq++
			in.Records[i] = kcl.Record{Data: data, PartitionKey: "pk-" + strconv.Itoa(i%64),
				SequenceNumber:              fmt.Sprintf("4960000000000000000%037d", seq),
				ApproximateArrivalTimestamp: arrival}
		}
		cp.SetDelivered(in.Records[size-1].Position())
		return in
	}
	batches := make([]kcl.ProcessRecordsInput, b.N)
	for i := range batches {
		batches[i] = next()
	}
	selfBefore, childBefore := cpuTime()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if err := p.ProcessRecords(ctx, batches[i]); err != nil {
			b.Fatal(err)
		}
	}
	// The child exits here, so that its CPU time is accounted.
	if sh, ok := p.(kcl.ShutdownRequestedHandler); ok {
		if err := sh.ShutdownRequested(ctx, kcl.ShutdownRequestedInput{ShardID: "shardId-000000000000", Checkpointer: cp}); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	records := float64(b.N * size)
	b.ReportMetric(records/elapsed.Seconds(), "records/s")
	self, child := cpuTime()
	b.ReportMetric(float64(self-selfBefore+child-childBefore)/records, "cpu-ns/record")
	b.ReportMetric(float64(self-selfBefore)/records, "daemon-cpu-ns/record")
	if got := cp.Last(); got != batches[b.N-1].Records[size-1].Position() {
		b.Fatalf("last checkpoint %s, want the last record", got)
	}
}

// cpuTime returns the user and system CPU time of this process and of its
// waited-for children.
func cpuTime() (self, children time.Duration) {
	var s, c syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &s)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &c)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(s.Utime) + tv(s.Stime), tv(c.Utime) + tv(c.Stime)
}
