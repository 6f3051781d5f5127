// Package lease is the lease table as an operator sees it: the [Lease] model,
// opening an application's table ([NewTable]), listing its leases and workers,
// and replay ([Table.Reset]).
//
// A Shardline application keeps one DynamoDB table (by default named after the
// application) with one item per shard. The item says which worker holds the
// shard, the lease counter that fences every write, the checkpoint, and the
// shard's place in the stream's lineage. The attribute names are those of the
// Java KCL 2.x lease table, so an application moving from the Java KCL keeps
// its checkpoints.
//
// How workers take, renew and hand over leases is internal to the worker
// package; nothing here takes part in that protocol except [Table.Reset],
// whose conditional writes fence the current owner.
package lease

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	ilease "github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// Lease is one shard's row of the lease table.
type Lease struct {
	// Key is the lease key: the shard ID, or in the table of a
	// multi-stream application ACCOUNT:STREAM:EPOCH:SHARD (the Java KCL's
	// format; see the README).
	Key string
	// Owner is the worker ID of the holder; empty when the lease is free.
	Owner string
	// Counter increases with every change of ownership and every renewal
	// the protocol writes; each conditional write names the counter it read.
	Counter int64
	// Checkpoint is the position after which processing resumes: a record's
	// sequence number or one of the sentinels TRIM_HORIZON, LATEST,
	// AT_TIMESTAMP and SHARD_END.
	Checkpoint kcl.ExtendedSequenceNumber
	// CheckpointTimestamp goes with an AT_TIMESTAMP checkpoint.
	CheckpointTimestamp time.Time
	// PendingCheckpoint is a prepared (two-phase) checkpoint not yet
	// committed.
	PendingCheckpoint kcl.ExtendedSequenceNumber
	// OwnerSwitchesSinceCheckpoint counts ownership changes since the
	// checkpoint last moved.
	OwnerSwitchesSinceCheckpoint int64
	// ParentShardIDs are the shards this one continues (after a split or a
	// merge); ChildShardIDs the shards that continue it once it ended.
	ParentShardIDs []string
	ChildShardIDs  []string
	// HandoffTo names the worker a planned hand-over goes to, if one was
	// requested.
	HandoffTo string
}

// finished reports whether the shard has been processed to its end
// (checkpoint SHARD_END).
func finished(l Lease) bool { return l.Checkpoint.IsShardEnd() }

// Worker is a worker's entry in the table's fleet row: every running worker
// writes its heartbeat there, and a lease is valid while its owner's
// heartbeat moves.
type Worker struct {
	// ID is the worker ID.
	ID string
	// Heartbeat increases with each heartbeat the worker writes (every
	// min(RenewInterval, TakeInterval) of its configuration); it is -1 once
	// the others declared the worker dead (fenced), until it joins again.
	Heartbeat int64
	// Stalled maps the lease keys of the shards the worker reported
	// stalled with its last heartbeat to the reason ("bad-checkpoint",
	// "open-failing", "checkpoint-failing", "processor-failing",
	// "read-failing", "no-progress"); nil when none.
	Stalled map[string]string
}

// DynamoDBAPI is the part of the DynamoDB client the lease table uses. A
// *dynamodb.Client satisfies it.
type DynamoDBAPI interface {
	CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
}

var _ DynamoDBAPI = (*dynamodb.Client)(nil)

// Errors of this package. Both work with errors.Is.
var (
	// ErrNotFound: a named shard has no lease.
	ErrNotFound = ilease.ErrNotFound
	// ErrInvalidArgument: a request that cannot be carried out as given.
	ErrInvalidArgument = ilease.ErrInvalidArgument
)

// Table is an application's lease table. It is safe for concurrent use.
type Table struct {
	store ilease.Store
}

// NewTable opens the lease table named name through client. It does no I/O;
// a table that does not exist is reported by the first call, with an error
// matching kcl.ErrTableNotFound.
func NewTable(client DynamoDBAPI, name string) (*Table, error) {
	if client == nil {
		return nil, fmt.Errorf("lease: %w: nil DynamoDB client", ErrInvalidArgument)
	}
	s, err := ilease.NewDynamoStore(client, name)
	if err != nil {
		return nil, err
	}
	return &Table{store: s}, nil
}

// newTableOn opens a table on another store (the tests' in-memory one).
func newTableOn(s ilease.Store) *Table { return &Table{store: s} }

// List returns every lease of the table, in key order, read with a strongly
// consistent scan. The fleet row (the workers' heartbeats) is not a lease and is left out. A
// row that cannot be read as a lease (an attribute of an unexpected type)
// makes List fail with an error naming it.
func (t *Table) List(ctx context.Context) ([]Lease, error) {
	ls, err := t.store.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Lease, len(ls))
	for i, l := range ls {
		out[i] = fromInternal(l)
	}
	slices.SortFunc(out, func(a, b Lease) int {
		switch {
		case a.Key < b.Key:
			return -1
		case a.Key > b.Key:
			return 1
		}
		return 0
	})
	return out, nil
}

// Workers returns the workers of the fleet row, in ID order: those that run,
// and those that stopped without leaving (crashed) until the others clear
// them. One strongly consistent read of one item.
func (t *Table) Workers(ctx context.Context) ([]Worker, error) {
	f, err := t.store.ReadFleet(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Worker, 0, len(f.Members))
	for id, hb := range f.Members {
		out = append(out, Worker{ID: id, Heartbeat: hb, Stalled: f.Stalls[id]})
	}
	slices.SortFunc(out, func(a, b Worker) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// fromInternal converts the protocol's lease to the operator's, deep-copying
// its slices.
func fromInternal(l ilease.Lease) Lease {
	l = l.Clone()
	return Lease{
		Key: l.Key, Owner: l.Owner, Counter: l.Counter,
		Checkpoint: l.Checkpoint, CheckpointTimestamp: l.CheckpointTimestamp,
		PendingCheckpoint:            l.PendingCheckpoint,
		OwnerSwitchesSinceCheckpoint: l.OwnerSwitchesSinceCheckpoint,
		ParentShardIDs:               l.ParentShardIDs, ChildShardIDs: l.ChildShardIDs,
		HandoffTo: l.HandoffTo,
	}
}

// toInternal is the inverse of fromInternal.
func toInternal(l Lease) ilease.Lease {
	return ilease.Lease{
		Key: l.Key, Owner: l.Owner, Counter: l.Counter,
		Checkpoint: l.Checkpoint, CheckpointTimestamp: l.CheckpointTimestamp,
		PendingCheckpoint:            l.PendingCheckpoint,
		OwnerSwitchesSinceCheckpoint: l.OwnerSwitchesSinceCheckpoint,
		ParentShardIDs:               slices.Clone(l.ParentShardIDs), ChildShardIDs: slices.Clone(l.ChildShardIDs),
		HandoffTo: l.HandoffTo,
	}
}

// clone deep-copies l.
func (l Lease) clone() Lease { return fromInternal(toInternal(l)) }
