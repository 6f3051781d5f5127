package integration

import (
	"context"
	"fmt"
	"time"

	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/internal/testenv"
)

// sink creates a sink table for the test and makes the workers started
// from now on count every partition key's records in it, transactionally
// with their checkpoints (the consumer's -sink-table).
func (e *env) sink(ctx context.Context) string {
	e.t.Helper()
	table := testenv.UniqueName("sink")
	if err := fleet.CreateSinkTable(ctx, e.dc, table); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = fleet.DeleteTable(ctx, e.dc, table)
	})
	e.fleet.UseSink(table)
	return table
}

// waitSink waits until the sink counts every record produced (the last
// transactions may trail the deliveries), prints its line and returns it.
func (e *env) waitSink(ctx context.Context, table string) fleet.SinkReport {
	e.t.Helper()
	var r fleet.SinkReport
	err := fleet.Poll(ctx, 200*time.Millisecond, "sink complete", func(ctx context.Context) (bool, error) {
		var err error
		if r, err = fleet.CheckSink(ctx, e.dc, table, e.prod.Records()); err != nil {
			return false, err
		}
		if r.Lost > 0 {
			return false, fmt.Errorf("%v", r)
		}
		return true, nil
	})
	if err != nil {
		e.t.Error(err)
	}
	fmt.Println(r)
	return r
}
