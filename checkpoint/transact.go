// Transactional checkpoints: a record processor
// whose output is DynamoDB commits its writes and its checkpoint together,
// in one DynamoDB transaction fenced by the shard's lease, so that a batch's
// effects and its checkpoint are stored together or not at all, and a worker
// that lost the lease (taken over after a crash, a pause or a partition)
// cannot commit anything. After a crash the records after the checkpoint are
// processed again, but their writes were not stored: the output is
// effectively once.
//
//	func (p *proc) ProcessRecords(ctx context.Context, in kcl.ProcessRecordsInput) error {
//		var ws []checkpoint.Write
//		for _, r := range in.Records {
//			ws = append(ws, checkpoint.Write{Position: r.Position(), Items: p.writesFor(r)})
//		}
//		return checkpoint.Transact(ctx, in.Checkpointer, ws...)
//	}
//
// The writes may go to any table of the lease table's account and region
// (they use the worker's DynamoDB client); they must not touch the lease
// table's items.
package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// Write is what one record (or a run of records) of a batch writes: the
// application's DynamoDB writes, and the position processed once they are
// stored, usually the record's Position().
type Write struct {
	// Position is the checkpoint stored with Items.
	Position kcl.ExtendedSequenceNumber
	// Items are Put, Update, Delete and ConditionCheck actions, one per
	// entry, at most [MaxItems] and about 4 MB in all.
	Items []types.TransactWriteItem
}

// MaxItems is the number of writes one transaction takes besides the
// checkpoint (DynamoDB's 100 actions, less the lease's).
const MaxItems = lease.MaxTransactItems

// transactional is the [kcl.Checkpointer] of a worker whose lease table is
// in DynamoDB: TransactCheckpoint commits items and the checkpoint at pos in
// one transaction. The checkpointer in kcl.ProcessRecordsInput (and
// kcltest's) implements it; [Transact] is the way to use it.
type transactional interface {
	TransactCheckpoint(ctx context.Context, pos kcl.ExtendedSequenceNumber, items []types.TransactWriteItem) error
}

// Errors of [Transact]. Test with errors.Is and errors.As. Besides them:
// an error matching kcl.ErrLeaseLost means the lease was lost and the
// transaction refused (nothing written); one matching kcl.ErrThrottled, that
// transactions kept conflicting with others or being throttled after retries
// with backoff (nothing written); one matching kcl.ErrInvalidCheckpoint, a
// position before the stored checkpoint or after the last delivered record.
var (
	// ErrUnsupported: the checkpointer cannot commit transactions (the
	// lease table is not in DynamoDB, or the client has no
	// TransactWriteItems).
	ErrUnsupported = lease.ErrTransactUnsupported
	// ErrTooLarge: one Write holds more than MaxItems writes or about 4 MB;
	// it cannot be committed atomically. Nothing of it was written.
	ErrTooLarge = lease.ErrTransactTooLarge
	// ErrOutcomeUnknown: a transaction failed in flight and may or may not
	// have been committed. The error matches kcl.ErrLeaseLost too: the
	// worker gives the lease up, and the shard starts again from its stored
	// checkpoint, which agrees with what was committed either way.
	ErrOutcomeUnknown = lease.ErrOutcomeUnknown
)

// ConditionFailedError reports a transaction cancelled because the
// condition of one of the application's writes failed (Write and Index say
// which; Code, Message and Item why). Nothing of that transaction was
// written; earlier transactions of the same call stay committed.
type ConditionFailedError = lease.ConditionFailedError

// Transact commits the writes and their checkpoints: in one transaction
// when they fit in one (MaxItems writes, about 4 MB), otherwise in several,
// each with the checkpoint of the last Write it holds, so that a crash
// between two leaves the checkpoint exactly after what was committed. The
// Writes must come in record order.
//
// DynamoDB refuses a transaction that writes one item twice: a Write whose
// Update, Delete or ConditionCheck names an item (by table and Key) that
// the transaction being filled already touches starts a new one. Puts are
// not recognised (their key attributes are not known here): do not Put an
// item that another Write of the same call touches. Aggregating a batch's
// changes per item into few Writes (see examples/totals) makes fewer,
// cheaper transactions.
//
// Writes at or before the stored checkpoint (cp.Last()) are skipped: they
// were committed by an earlier call. So when ProcessRecords returns
// Transact's error and the worker delivers the batch again, calling Transact
// again with the same Writes commits only what was not committed.
//
// On error, cp.Last() is the position committed so far.
func Transact(ctx context.Context, cp kcl.Checkpointer, writes ...Write) error {
	tc, ok := cp.(transactional)
	if !ok {
		return fmt.Errorf("%w (checkpointer %T)", ErrUnsupported, cp)
	}
	last := cp.Last()
	var (
		group     []types.TransactWriteItem
		groupSize int
		first     int // index of the group's first Write
		start     []int
		pos       kcl.ExtendedSequenceNumber
		havePos   bool
		inGroup   map[string]bool // items the group touches (see itemID)
	)
	commit := func() error {
		if !havePos {
			return nil
		}
		err := tc.TransactCheckpoint(ctx, pos, group)
		var cf *ConditionFailedError
		if errors.As(err, &cf) && cf.Index < len(group) {
			// Map the transaction's index back to the caller's Write.
			w := first
			for j, s := range start {
				if s <= cf.Index {
					w = first + j
				}
			}
			idx := cf.Index - start[w-first]
			cf.Write, cf.Index = w, idx
		}
		group, groupSize, start, havePos, inGroup = nil, 0, nil, false, nil
		return err
	}
	for i, w := range writes {
		if !last.IsZero() && w.Position.Compare(last) <= 0 && !last.IsSentinel() {
			continue // committed already
		}
		if err := lease.CheckTransactItems(w.Items); err != nil {
			return fmt.Errorf("checkpoint: transact write %d at %s: %w", i, w.Position, err)
		}
		size := 0
		for _, it := range w.Items {
			size += lease.TransactItemSize(it)
		}
		if havePos && (len(group)+len(w.Items) > MaxItems || groupSize+size > lease.MaxTransactBytes || touches(inGroup, w.Items)) {
			if err := commit(); err != nil {
				return err
			}
		}
		if !havePos {
			first = i
		}
		if inGroup == nil {
			inGroup = map[string]bool{}
		}
		for _, it := range w.Items {
			if id, ok := itemID(it); ok {
				inGroup[id] = true
			}
		}
		start = append(start, len(group))
		group = append(group, w.Items...)
		groupSize += size
		pos, havePos = w.Position, true
	}
	return commit()
}

// touches reports whether items name an item in seen.
func touches(seen map[string]bool, items []types.TransactWriteItem) bool {
	for _, it := range items {
		if id, ok := itemID(it); ok && seen[id] {
			return true
		}
	}
	return false
}

// itemID identifies the item an Update, Delete or ConditionCheck names:
// its table and key. Puts have no explicit key: ok is false.
func itemID(it types.TransactWriteItem) (id string, ok bool) {
	var (
		table *string
		key   map[string]types.AttributeValue
	)
	switch {
	case it.Update != nil:
		table, key = it.Update.TableName, it.Update.Key
	case it.Delete != nil:
		table, key = it.Delete.TableName, it.Delete.Key
	case it.ConditionCheck != nil:
		table, key = it.ConditionCheck.TableName, it.ConditionCheck.Key
	default:
		return "", false
	}
	names := slices.Sorted(maps.Keys(key))
	var b strings.Builder
	b.WriteString(aws.ToString(table))
	for _, n := range names {
		b.WriteString("\x00" + n + "\x00")
		switch v := key[n].(type) {
		case *types.AttributeValueMemberS:
			b.WriteString("S" + v.Value)
		case *types.AttributeValueMemberN:
			b.WriteString("N" + v.Value)
		case *types.AttributeValueMemberB:
			b.WriteString("B" + string(v.Value))
		default:
			return "", false
		}
	}
	return b.String(), true
}
