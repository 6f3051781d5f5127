package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/checkpoint"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/kcltest"
)

// put writes item k of table "totals".
func put(k string) types.TransactWriteItem {
	return types.TransactWriteItem{Put: &types.Put{TableName: aws.String("totals"),
		Item: map[string]types.AttributeValue{"k": &types.AttributeValueMemberS{Value: k}}}}
}

// oneEach returns a Write per record, each putting the record's data.
func oneEach(recs []kcl.Record) []checkpoint.Write {
	ws := make([]checkpoint.Write, len(recs))
	for i, r := range recs {
		ws[i] = checkpoint.Write{Position: r.Position(), Items: []types.TransactWriteItem{put(string(r.Data))}}
	}
	return ws
}

// transactProc commits one Write per record of the first n records of each
// batch (all when n is 0).
func transactProc(n int) kcl.RecordProcessorFunc {
	return func(ctx context.Context, in kcl.ProcessRecordsInput) error {
		recs := in.Records
		if n > 0 && n < len(recs) {
			recs = recs[:n]
		}
		return checkpoint.Transact(ctx, in.Checkpointer, oneEach(recs)...)
	}
}

func payloads(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprint("r", i+1)
	}
	return out
}

func TestTransactSplitsAtTheItemLimit(t *testing.T) {
	sh := kcltest.NewShard("shardId-000000000000", transactProc(0))
	recs := sh.Records(payloads(250)...)
	if err := sh.Deliver(t.Context(), recs...); err != nil {
		t.Fatal(err)
	}
	txns := txnsOf(sh)
	if len(txns) != 3 {
		t.Fatalf("%d transactions, want 3", len(txns))
	}
	// Each carries the checkpoint of the last record it covers.
	for i, want := range []struct{ items, last int }{{99, 99}, {99, 198}, {52, 250}} {
		if len(txns[i].Items) != want.items || txns[i].Checkpoint != recs[want.last-1].Position() {
			t.Errorf("transaction %d: %d items at %v, want %d at record %d", i, len(txns[i].Items), txns[i].Checkpoint, want.items, want.last)
		}
	}
	if sh.Checkpoint() != recs[249].Position() {
		t.Errorf("checkpoint %v, want the last record", sh.Checkpoint())
	}
}

func TestTransactSkipsWhatWasCommitted(t *testing.T) {
	var cp kcl.Checkpointer
	sh := kcltest.NewShard("shardId-000000000000", kcl.RecordProcessorFunc(func(_ context.Context, in kcl.ProcessRecordsInput) error {
		cp = in.Checkpointer
		return nil
	}))
	recs := sh.Records(payloads(150)...)
	if err := sh.Deliver(t.Context(), recs...); err != nil {
		t.Fatal(err)
	}
	// A first call commits the first 120 records' writes (then, say, the
	// processor failed); the batch's second delivery commits the rest only.
	if err := checkpoint.Transact(t.Context(), cp, oneEach(recs[:120])...); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.Transact(t.Context(), cp, oneEach(recs)...); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, tx := range txnsOf(sh) {
		for _, it := range tx.Items {
			seen[it.Put.Item["k"].(*types.AttributeValueMemberS).Value]++
		}
	}
	if len(seen) != 150 {
		t.Errorf("%d distinct writes, want 150", len(seen))
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("%s written %d times", k, n)
		}
	}
}

func TestTransactRefusals(t *testing.T) {
	var cp kcl.Checkpointer
	sh := kcltest.NewShard("shardId-000000000000", kcl.RecordProcessorFunc(func(_ context.Context, in kcl.ProcessRecordsInput) error {
		cp = in.Checkpointer
		return nil
	}))
	recs := sh.Records(payloads(3)...)
	if err := sh.Deliver(t.Context(), recs...); err != nil {
		t.Fatal(err)
	}
	big := checkpoint.Write{Position: recs[0].Position(), Items: make([]types.TransactWriteItem, checkpoint.MaxItems+1)}
	for i := range big.Items {
		big.Items[i] = put(fmt.Sprint(i))
	}
	if err := checkpoint.Transact(t.Context(), cp, big); !errors.Is(err, checkpoint.ErrTooLarge) {
		t.Errorf("a Write of %d items: %v, want ErrTooLarge", len(big.Items), err)
	}
	if err := checkpoint.Transact(t.Context(), plain{}, oneEach(recs)...); !errors.Is(err, checkpoint.ErrUnsupported) {
		t.Errorf("a checkpointer without transactions: %v, want ErrUnsupported", err)
	}
	if err := sh.LoseLease(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.Transact(t.Context(), cp, oneEach(recs)...); !errors.Is(err, kcl.ErrLeaseLost) {
		t.Errorf("after the lease was lost: %v, want kcl.ErrLeaseLost", err)
	}
	if n := len(txnsOf(sh)); n != 0 {
		t.Errorf("%d transactions recorded, want 0", n)
	}
}

// plain is a checkpointer without transactions.
type plain struct{ kcl.Checkpointer }

func (plain) Last() kcl.ExtendedSequenceNumber { return kcl.TrimHorizon }

// failing refuses its second transaction with a failed condition at the
// transaction's index at.
type failing struct {
	kcl.Checkpointer
	at, calls int
}

func (f *failing) Last() kcl.ExtendedSequenceNumber { return kcl.TrimHorizon }

func (f *failing) TransactCheckpoint(_ context.Context, _ kcl.ExtendedSequenceNumber, items []types.TransactWriteItem) error {
	f.calls++
	if f.calls == 2 {
		return fmt.Errorf("wrapped: %w", &checkpoint.ConditionFailedError{Index: f.at, Code: "ConditionalCheckFailed"})
	}
	return nil
}

func TestTransactConditionFailedNamesTheWrite(t *testing.T) {
	// 60 Writes of 3 items: the first transaction takes 33 Writes (99
	// items), the second the other 27; its item 10 is Write 33+3, item 1.
	ws := make([]checkpoint.Write, 60)
	for i := range ws {
		ws[i] = checkpoint.Write{Position: kcl.NewSequence(fmt.Sprint(100 + i)), Items: []types.TransactWriteItem{put("a"), put("b"), put("c")}}
	}
	f := &failing{at: 10}
	err := checkpoint.Transact(t.Context(), f, ws...)
	var cf *checkpoint.ConditionFailedError
	if !errors.As(err, &cf) || cf.Write != 36 || cf.Index != 1 {
		t.Fatalf("Transact: %v (%+v), want the condition of Write 36 item 1", err, cf)
	}
}

func TestTransactSplitsBeforeTouchingAnItemTwice(t *testing.T) {
	incr := func(k string) types.TransactWriteItem {
		return types.TransactWriteItem{Update: &types.Update{TableName: aws.String("totals"),
			Key: map[string]types.AttributeValue{"k": &types.AttributeValueMemberS{Value: k}}, UpdateExpression: aws.String("ADD n :one")}}
	}
	sh := kcltest.NewShard("shardId-000000000000", kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
		ws := make([]checkpoint.Write, len(in.Records))
		for i, r := range in.Records {
			ws[i] = checkpoint.Write{Position: r.Position(), Items: []types.TransactWriteItem{incr(string(r.Data))}}
		}
		return checkpoint.Transact(ctx, in.Checkpointer, ws...)
	}))
	if err := sh.Deliver(t.Context(), sh.Records("a", "b", "a", "c", "b")...); err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, tx := range txnsOf(sh) {
		got = append(got, len(tx.Items))
	}
	if fmt.Sprint(got) != "[2 3]" {
		t.Errorf("transactions of %v items, want [2 3]", got)
	}
}

// txnsOf returns the checkpoint writes of sh that carried application
// writes.
func txnsOf(sh *kcltest.Shard) (out []kcltest.CheckpointWrite) {
	for _, w := range sh.Writes() {
		if len(w.Items) > 0 {
			out = append(out, w)
		}
	}
	return out
}
