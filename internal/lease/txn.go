package lease

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/internal/ddbcost"
	"github.com/shardline/shardline/kcl"
)

// Transactional checkpoints: the application's DynamoDB writes and the
// checkpoint of the lease, committed by one TransactWriteItems. The lease's
// part is the very update of [DynamoStore.UpdateCheckpoint] (checkpointUpdate
// and update.fence build both), so it is conditioned on leaseOwner and
// leaseCounter and moves the counter. A worker fenced through the fleet row
// cannot commit: its leases are taken (owner and counter move) before
// anyone acts on them, and a take and a transaction on the same lease item
// are serialised by DynamoDB, so every transaction the old owner committed
// precedes the take, and the new owner starts from the checkpoint it left.

// TransactAPI is the method of the DynamoDB client that transactional
// checkpoints need. A *dynamodb.Client has it; a [DynamoDBAPI] without it
// makes [Handle.Transact] fail with an error matching
// [ErrTransactUnsupported].
type TransactAPI interface {
	TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, opts ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error)
}

var _ TransactAPI = (*dynamodb.Client)(nil)

// MaxTransactItems is the number of application writes one transaction
// takes: DynamoDB's limit of 100 actions, less the lease's own update.
const MaxTransactItems = 99

// MaxTransactBytes bounds the application writes of one transaction, so that
// with the lease's update the request stays under DynamoDB's 4 MB.
const MaxTransactBytes = 4<<20 - 16<<10

// Errors of transactional checkpoints. Test with errors.Is.
var (
	// ErrTransactUnsupported reports a lease store that cannot commit
	// transactions: not a DynamoDB store, or a client without
	// TransactWriteItems.
	ErrTransactUnsupported = errors.New("shardline: transactional checkpoints need a DynamoDB lease table and a client with TransactWriteItems")
	// ErrTransactTooLarge reports writes that do not fit in one
	// transaction (99 application writes and 4 MB).
	ErrTransactTooLarge = errors.New("shardline: writes exceed one transaction")
	// ErrOutcomeUnknown reports a transaction that failed in flight (a
	// timeout, a 5xx after the SDK's retries) and whose outcome could not be
	// learned before the lease's deadline: it may or may not have been
	// committed. The lease is given up (the error matches kcl.ErrLeaseLost
	// too), so that the shard starts again from its stored checkpoint,
	// which is exact either way. (Usually the outcome is learned at once,
	// see Handle.Transact.)
	ErrOutcomeUnknown = errors.New("shardline: transaction outcome unknown")
)

// ConditionFailedError reports a transaction cancelled because the condition
// of one of the application's writes failed. Nothing was written, neither
// the application's writes nor the checkpoint.
type ConditionFailedError struct {
	// Write is the index of the checkpoint.Write holding the failed
	// write, in the call to the public checkpoint.Transact (0 below it).
	Write int
	// Index is the position of the failed write in its Write's Items
	// (below checkpoint.Transact: in the transaction's writes), from 0.
	Index int
	// Code and Message are DynamoDB's cancellation reason
	// ("ConditionalCheckFailed" and its message).
	Code, Message string
	// Item is the item as stored when the condition failed, if the write
	// asked for it (ReturnValuesOnConditionCheckFailure ALL_OLD); nil
	// otherwise.
	Item map[string]types.AttributeValue
}

// Error implements error.
func (e *ConditionFailedError) Error() string {
	return fmt.Sprintf("shardline: transaction cancelled, nothing written: condition of write %d.%d failed: %s %s", e.Write, e.Index, e.Code, e.Message)
}

// transactBackoff bounds the waits between attempts of a transaction that
// conflicted with another or was throttled; maxTransactAttempts bounds the
// attempts (the lease deadline bounds them too).
const (
	transactBackoffMin  = 20 * time.Millisecond
	transactBackoffMax  = time.Second
	maxTransactAttempts = 12
)

// dynamoStoreOf finds the DynamoDB store under s, looking through wrappers
// that implement Unwrap() Store (such as the worker's, which times
// heartbeats for its health probes).
func dynamoStoreOf(s Store) (*DynamoStore, bool) {
	for s != nil {
		if ds, ok := s.(*DynamoStore); ok {
			return ds, true
		}
		u, ok := s.(interface{ Unwrap() Store })
		if !ok {
			return nil, false
		}
		s = u.Unwrap()
	}
	return nil, false
}

// Transact commits items and the checkpoint fields of the lease after edit
// in one TransactWriteItems fenced like [Handle.UpdateCheckpoint]: on leaseOwner
// and leaseCounter. After success the handle knows the new counter, as after a
// checkpoint write. A lost lease fails with an error matching
// kcl.ErrLeaseLost (a *ConflictError when DynamoDB refused: nothing
// written); an application condition with a *[ConditionFailedError];
// conflicts with other transactions and throttling are retried with
// backoff, and once retries are exhausted the error matches
// kcl.ErrThrottled (nothing written). A transaction that failed in flight
// (timeout, 5xx) is settled by a renewal conditioned on the counter it was
// sent with: refused showing the transaction's result, it was committed
// (Transact succeeds); accepted, it was not and never will be (Transact
// fails, nothing written). Only when that cannot be learned before the
// lease's deadline is the lease given up ([ErrOutcomeUnknown]).
func (h *Handle) Transact(ctx context.Context, edit func(*Lease), items []types.TransactWriteItem) (Lease, error) {
	ds, ok := dynamoStoreOf(h.m.store)
	if !ok {
		return Lease{}, fmt.Errorf("%w (store %T)", ErrTransactUnsupported, h.m.store)
	}
	api, err := ds.transactAPI()
	if err != nil {
		return Lease{}, err
	}
	if err := CheckTransactItems(items); err != nil {
		return Lease{}, err
	}
	return h.write(ctx, false, edit, func(ctx context.Context, l Lease) (Lease, error) {
		nl, err := ds.transact(ctx, api, l, items)
		if !errors.Is(err, ErrOutcomeUnknown) {
			return nl, err
		}
		return h.settle(ctx, l, err)
	})
}

// settle learns the outcome of a transaction that failed in flight, whose
// lease update was l (h.wmu held): a renewal conditioned on l's counter
// either succeeds (the transaction was not applied, and now never will be:
// the counter moved) or is refused showing the transaction's result. The
// handle then knows the counter, as after any write. If the outcome stays
// unknown (until the handle's deadline, or because another write came in
// between), the lease is given up: the shard restarts from what is stored,
// which is exact either way.
func (h *Handle) settle(ctx context.Context, l Lease, failed error) (Lease, error) {
	mine := normalizeLease(l)
	// Settle even if the caller gave up (a worker stopping): the handle must
	// know its counter. The handle's deadline bounds ctx (see write).
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(context.WithoutCancel(ctx), d)
		defer cancel()
	}
	wait := transactBackoffMin
	for ctx.Err() == nil {
		r, err := h.m.store.Renew(ctx, l)
		if err == nil {
			h.smu.Lock()
			h.lease = r
			h.smu.Unlock()
			return Lease{}, fmt.Errorf("%w (it was not committed)", errors.Unwrap(failed))
		}
		var ce *ConflictError
		if errors.As(err, &ce) {
			cur := ce.Current
			if cur != nil && cur.Owner == mine.Owner && cur.Counter == mine.Counter+1 && sameStored(mine, *cur) {
				return *cur, nil // it was committed
			}
			// Another write came since (a take, a reset, lineage): the
			// transaction may or may not have come before it.
			return Lease{}, h.giveUp(failed)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		wait = min(2*wait, transactBackoffMax)
	}
	return Lease{}, h.giveUp(failed)
}

// giveUp loses the handle after a transaction whose outcome stays unknown,
// and releases the lease if its counter did not move (see
// Manager.releaseExpired): the shard restarts from what is stored.
func (h *Handle) giveUp(failed error) error {
	lost := fmt.Errorf("%w: %w", kcl.ErrLeaseLost, failed)
	h.markLost(lost)
	h.m.forget(h)
	h.m.expired(h)
	return lost
}

// CheckTransactItems refuses writes that cannot go into one transaction
// with a checkpoint: more than [MaxTransactItems], more than
// [MaxTransactBytes], or an entry with no action or several.
func CheckTransactItems(items []types.TransactWriteItem) error {
	if len(items) > MaxTransactItems {
		return fmt.Errorf("%w: %d writes, at most %d", ErrTransactTooLarge, len(items), MaxTransactItems)
	}
	size := 0
	for i, it := range items {
		n := 0
		for _, set := range []bool{it.Put != nil, it.Update != nil, it.Delete != nil, it.ConditionCheck != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("shardline: transaction write %d has %d actions, want exactly one", i, n)
		}
		size += TransactItemSize(it)
	}
	if size > MaxTransactBytes {
		return fmt.Errorf("%w: about %d bytes, at most %d", ErrTransactTooLarge, size, MaxTransactBytes)
	}
	return nil
}

// transactAPI returns the client's TransactWriteItems, bounded like the
// store's other calls (WithDynamoCallTimeout).
func (s *DynamoStore) transactAPI() (TransactAPI, error) {
	c, bound := s.client, time.Duration(0)
	if tc, ok := c.(timeoutClient); ok {
		c, bound = tc.DynamoDBAPI, tc.d
	}
	api, ok := c.(TransactAPI)
	if !ok {
		return nil, fmt.Errorf("%w: DynamoDB client %T has no TransactWriteItems", ErrTransactUnsupported, c)
	}
	if bound > 0 {
		return boundedTransact{api, bound}, nil
	}
	return api, nil
}

// boundedTransact gives every transaction its own deadline.
type boundedTransact struct {
	TransactAPI
	d time.Duration
}

func (c boundedTransact) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, opts ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, c.d)
	defer cancel()
	return c.TransactAPI.TransactWriteItems(ctx, in, opts...)
}

// checkpointTransactItem returns the lease's part of a transaction: the
// update of UpdateCheckpoint, fenced on leaseOwner and leaseCounter.
func (s *DynamoStore) checkpointTransactItem(l Lease) types.TransactWriteItem {
	u := checkpointUpdate(l)
	in := u.input(s.table, l.Key, u.fence(l, true))
	return types.TransactWriteItem{Update: &types.Update{
		TableName:                           in.TableName,
		Key:                                 in.Key,
		UpdateExpression:                    in.UpdateExpression,
		ConditionExpression:                 in.ConditionExpression,
		ExpressionAttributeNames:            in.ExpressionAttributeNames,
		ExpressionAttributeValues:           in.ExpressionAttributeValues,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}}
}

// transact commits items with l's checkpoint, retrying conflicts and
// throttling, and returns the lease as now stored (l with the counter moved;
// a transaction returns no item). Every refusal is definite: nothing was
// written. An error in flight is ErrOutcomeUnknown.
func (s *DynamoStore) transact(ctx context.Context, api TransactAPI, l Lease, items []types.TransactWriteItem) (Lease, error) {
	if err := checkLeaseKey("transact", l.Key); err != nil {
		return Lease{}, err
	}
	all := append(slices.Clone(items), s.checkpointTransactItem(l))
	in := &dynamodb.TransactWriteItemsInput{TransactItems: all}
	wait := transactBackoffMin
	var last error
	for attempt := 1; attempt <= maxTransactAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return Lease{}, s.transactGaveUp(l.Key, err, last)
		}
		// A fresh token per attempt: every attempt before was refused.
		in.ClientRequestToken = nil
		_, err := api.TransactWriteItems(ctx, in)
		if err == nil {
			nl := normalizeLease(l)
			nl.Counter++
			return nl, nil
		}
		retry, err := s.transactRefusal(l.Key, len(items), err)
		if !retry {
			return Lease{}, err
		}
		last = err
		d := rand.N(wait) + wait/2
		wait = min(2*wait, transactBackoffMax)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return Lease{}, s.transactGaveUp(l.Key, ctx.Err(), last)
		case <-t.C:
		}
	}
	return Lease{}, fmt.Errorf("lease: transact %s: %d attempts: %w: %w", l.Key, maxTransactAttempts, kcl.ErrThrottled, last)
}

// transactGaveUp is the error of a transaction abandoned between attempts
// (ctx ended): nothing was written.
func (s *DynamoStore) transactGaveUp(key string, err, last error) error {
	if last != nil {
		return fmt.Errorf("lease: transact %s: %w (last refusal: %w)", key, err, last)
	}
	return fmt.Errorf("lease: transact %s: %w", key, err)
}

// transactRefusal classifies the error of one TransactWriteItems with n
// application writes (the lease's update last): whether to try again, and
// the error otherwise.
func (s *DynamoStore) transactRefusal(key string, n int, err error) (retry bool, _ error) {
	var tce *types.TransactionCanceledException
	if errors.As(err, &tce) {
		reasons := tce.CancellationReasons
		if n < len(reasons) && aws.ToString(reasons[n].Code) == "ConditionalCheckFailed" {
			e := &ConflictError{Op: "transact", Key: key}
			if len(reasons[n].Item) > 0 {
				cur, derr := decodeLease(reasons[n].Item)
				if derr == nil {
					e.Current = &cur
				}
			}
			return false, e
		}
		again := false
		for i, r := range reasons {
			switch code := aws.ToString(r.Code); code {
			case "", "None":
			case "ConditionalCheckFailed":
				return false, &ConditionFailedError{Index: i, Code: code, Message: aws.ToString(r.Message), Item: r.Item}
			case "TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded":
				again = true
			default:
				return false, fmt.Errorf("lease: transact %s: write %d refused: %s: %s: %w", key, i, code, aws.ToString(r.Message), err)
			}
		}
		if again {
			return true, fmt.Errorf("lease: transact %s: %w", key, err)
		}
		return false, fmt.Errorf("lease: transact %s: %w", key, err)
	}
	var (
		tip *types.TransactionInProgressException
		tc  *types.TransactionConflictException
	)
	if errors.As(err, &tip) || errors.As(err, &tc) || awsx.Classify(err) == awsx.Throttled {
		return true, fmt.Errorf("lease: transact %s: %w", key, err)
	}
	if awsx.Classify(err) == awsx.NotFound {
		return false, fmt.Errorf("lease: transact %s: %w: %w", key, kcl.ErrTableNotFound, err)
	}
	var coded interface{ ErrorCode() string }
	if errors.As(err, &coded) && coded.ErrorCode() == "ValidationException" {
		return false, fmt.Errorf("lease: transact %s: %w", key, err) // refused before running
	}
	return false, &unknownOutcome{fmt.Errorf("lease: transact %s: %w", key, err)}
}

// unknownOutcome is the error of a transaction that failed in flight: it
// matches ErrOutcomeUnknown and unwraps to the failure.
type unknownOutcome struct{ err error }

func (e *unknownOutcome) Error() string        { return e.err.Error() + " (outcome unknown)" }
func (e *unknownOutcome) Unwrap() error        { return e.err }
func (e *unknownOutcome) Is(target error) bool { return target == ErrOutcomeUnknown }

// TransactItemSize estimates the bytes a write adds to a transaction: its
// item or key and expression values, sized as DynamoDB sizes items, and its
// expressions.
func TransactItemSize(it types.TransactWriteItem) int {
	var (
		item, values map[string]types.AttributeValue
		names        map[string]string
		exprs        []*string
	)
	switch {
	case it.Put != nil:
		p := it.Put
		item, values, names, exprs = p.Item, p.ExpressionAttributeValues, p.ExpressionAttributeNames, []*string{p.ConditionExpression}
	case it.Update != nil:
		u := it.Update
		item, values, names, exprs = u.Key, u.ExpressionAttributeValues, u.ExpressionAttributeNames, []*string{u.UpdateExpression, u.ConditionExpression}
	case it.Delete != nil:
		d := it.Delete
		item, values, names, exprs = d.Key, d.ExpressionAttributeValues, d.ExpressionAttributeNames, []*string{d.ConditionExpression}
	case it.ConditionCheck != nil:
		c := it.ConditionCheck
		item, values, names, exprs = c.Key, c.ExpressionAttributeValues, c.ExpressionAttributeNames, []*string{c.ConditionExpression}
	}
	n := ddbcost.ItemSize(item) + ddbcost.ItemSize(values)
	for k, v := range names {
		n += len(k) + len(v)
	}
	for _, e := range exprs {
		n += len(aws.ToString(e))
	}
	return n
}
