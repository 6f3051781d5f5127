package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/kcltest"
)

// TestTotalsCommitsEachBatchOnce runs the processor on kcltest's shard,
// which records the transactions instead of sending them: 300 records
// cycling over 150 keys make four transactions (99, 99, 99 and 3 keys), each
// with the checkpoint of its last record, whose additions sum to the
// records'.
func TestTotalsCommitsEachBatchOnce(t *testing.T) {
	sh := kcltest.NewShard("shardId-000000000000", &totals{table: "totals"})
	data := make([]string, 300)
	for i := range data {
		data[i] = strconv.Itoa(i % 7)
	}
	recs := sh.Records(data...)
	for i := range recs {
		recs[i].PartitionKey = fmt.Sprint("key-", i%150)
	}
	if err := sh.Deliver(t.Context(), recs...); err != nil {
		t.Fatal(err)
	}
	txns := transactions(sh)
	var sizes []int
	for _, tx := range txns {
		sizes = append(sizes, len(tx.Items))
	}
	if fmt.Sprint(sizes) != "[99 99 99 3]" {
		t.Fatalf("transactions of %v keys, want [99 99 99 3]", sizes)
	}
	// Each ends before the record of a key its transaction cannot take.
	for i, last := range []int{98, 197, 296, 299} {
		if txns[i].Checkpoint != recs[last].Position() {
			t.Errorf("transaction %d at %v, want record %d's position", i, txns[i].Checkpoint, last+1)
		}
	}
	var total, n int64
	for _, tx := range txns {
		for _, it := range tx.Items {
			a, _ := strconv.ParseInt(it.Update.ExpressionAttributeValues[":a"].(*types.AttributeValueMemberN).Value, 10, 64)
			c, _ := strconv.ParseInt(it.Update.ExpressionAttributeValues[":n"].(*types.AttributeValueMemberN).Value, 10, 64)
			total, n = total+a, n+c
		}
	}
	var want int64
	for _, d := range data {
		v, _ := strconv.ParseInt(d, 10, 64)
		want += v
	}
	if total != want || n != 300 {
		t.Errorf("additions total %d over %d records, want %d over 300", total, n, want)
	}
	// After the lease is lost nothing more is committed.
	if err := sh.LoseLease(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := sh.Deliver(t.Context(), sh.Records("5")...); !errors.Is(err, kcl.ErrLeaseLost) {
		t.Errorf("Deliver after the lease was lost: %v", err)
	}
	if n := len(transactions(sh)); n != 4 {
		t.Errorf("%d transactions after the lease was lost, want 4", n)
	}
}

// transactions returns the shard's checkpoint writes that were transactions.
func transactions(sh *kcltest.Shard) []kcltest.CheckpointWrite {
	var out []kcltest.CheckpointWrite
	for _, w := range sh.Writes() {
		if w.Items != nil {
			out = append(out, w)
		}
	}
	return out
}
