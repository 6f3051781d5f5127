package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// Issue 19, item 5: with the lease table deleted under running workers,
// leases expired, nothing was processed, the workers logged "lease table
// not found" forever and Run never returned; with the table created again
// meanwhile, they started over at LATEST and skipped the records written in
// between without a word. Now Run returns an error matching
// kcl.ErrTableNotFound within a heartbeat period and the hard stop, in both
// cases, having logged the checkpoints it held. On DynamoDB Local.
func TestLeaseTableDeletedStopsTheWorker(t *testing.T) {
	for _, recreate := range []bool{false, true} {
		name := "deleted"
		if recreate {
			name = "deleted and created again"
		}
		t.Run(name, func(t *testing.T) {
			kc := testenv.Kinesis(t)
			dc := testenv.DynamoDB(t)
			stream := testenv.CreateStream(t, kc, 2)
			put(t, kc, stream, 40, "a")
			rec := newRecorder()
			app := testenv.UniqueName("tablelost")
			cfg := baseConfig(t, stream, app, rec.factory)
			logs := captureLogs(t, &cfg)
			w, err := worker.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() { errc <- w.Run(context.Background()) }()
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = w.Shutdown(ctx)
				_, _ = dc.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(app)})
			})
			rec.waitFor(t, 60*time.Second, "40 records", func() bool { return rec.count() >= 40 })

			ctx := t.Context()
			if _, err := dc.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(app)}); err != nil {
				t.Fatal(err)
			}
			if recreate {
				st, err := lease.NewDynamoStore(dc, app)
				if err != nil {
					t.Fatal(err)
				}
				if err := st.EnsureTable(ctx); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case err := <-errc:
				if !errors.Is(err, kcl.ErrTableNotFound) {
					t.Fatalf("Run: %v, want an error matching kcl.ErrTableNotFound", err)
				}
				t.Logf("Run returned: %v", err)
			case <-time.After(60 * time.Second): // a heartbeat period and the hard stop, very widely
				t.Fatal("Run had not returned 60 s after the lease table was deleted")
			}
			if n := logs.count("level=ERROR", "the lease table is gone", "checkpoints="); n != 1 {
				t.Errorf("%d ERROR lines listing the checkpoints held, want 1", n)
			}
		})
	}
}
