package fleet

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shardline/shardline/kcl"
)

// Report is what [Check] found.
type Report struct {
	// Produced counts records written; Delivered counts record events
	// (every delivery); Distinct counts records delivered at least once.
	Produced, Delivered, Distinct int
	// Lost lists produced records never delivered.
	Lost []Produced
	// Unexpected counts deliveries of records the producer did not write
	// (or wrote to a different shard).
	Unexpected int
	// Retries counts deliveries repeated within one shard session because
	// the processor failed a batch (Attempt > 1).
	Retries int
	// Duplicates counts deliveries of records already delivered in an
	// earlier session of the same shard (after a crash, lease loss or
	// hand-over). Each is classified against the last checkpoint the shard
	// had before the session began: AfterCheckpoint is allowed
	// (at-least-once), BeforeCheckpoint is a bug.
	Duplicates, DuplicatesAfterCheckpoint, DuplicatesBeforeCheckpoint int
	// DuplicateDeliveries are the duplicate events themselves.
	DuplicateDeliveries []Event
	// OrderViolations counts, per shard, records delivered at or before a
	// record already delivered in the same session (not as a retry).
	OrderViolations map[string]int
	// Skips counts, per shard, records delivered while the record before
	// them in the shard was neither delivered earlier in the session nor
	// covered by the checkpoint the session started from.
	Skips map[string]int
	// CheckpointRegressions lists sessions that started from a checkpoint
	// older than one a previous owner had already stored.
	CheckpointRegressions []string
	// ByWorker counts deliveries per worker ID.
	ByWorker map[string]int
	// ByShard counts distinct records delivered per shard.
	ByShard map[string]int
	// Damaged counts unreadable event lines.
	Damaged int
	// Ownership maps worker IDs to the shards they hold in the lease table
	// (see [Fleet.Check]); nil when the table was not read.
	Ownership map[string][]string
	// Poison counts the produced records [CheckOptions.Poison] selects;
	// DeadLettered counts those found among the dead letters.
	Poison, DeadLettered int
	// MissingDeadLetters lists poison records that are not among the dead
	// letters; WrongDeadLetters counts dead letters of records that are not
	// poison (or were not produced).
	MissingDeadLetters []Produced
	WrongDeadLetters   int
	// PoisonDelivered counts deliveries of poison records that the
	// processor reported as processed.
	PoisonDelivered int
}

// Err returns nil when nothing was lost, skipped, re-ordered, unexpectedly
// delivered or re-delivered from before a checkpoint; otherwise an error
// that says what.
func (r Report) Err() error {
	var errs []error
	if len(r.Lost) > 0 {
		errs = append(errs, fmt.Errorf("%d records lost (first: %+v)", len(r.Lost), r.Lost[0]))
	}
	if r.Unexpected > 0 {
		errs = append(errs, fmt.Errorf("%d unexpected deliveries", r.Unexpected))
	}
	if n := sum(r.OrderViolations); n > 0 {
		errs = append(errs, fmt.Errorf("%d order violations %v", n, r.OrderViolations))
	}
	if n := sum(r.Skips); n > 0 {
		errs = append(errs, fmt.Errorf("%d skipped records %v", n, r.Skips))
	}
	if r.DuplicatesBeforeCheckpoint > 0 {
		errs = append(errs, fmt.Errorf("%d duplicates of checkpointed records", r.DuplicatesBeforeCheckpoint))
	}
	if len(r.MissingDeadLetters) > 0 {
		errs = append(errs, fmt.Errorf("%d poison records missing from the dead letters (first: %+v)", len(r.MissingDeadLetters), r.MissingDeadLetters[0]))
	}
	if r.WrongDeadLetters > 0 {
		errs = append(errs, fmt.Errorf("%d dead letters of records that are not poison", r.WrongDeadLetters))
	}
	if r.PoisonDelivered > 0 {
		errs = append(errs, fmt.Errorf("%d poison records reported processed", r.PoisonDelivered))
	}
	if len(r.CheckpointRegressions) > 0 {
		errs = append(errs, fmt.Errorf("checkpoint regressions: %s", strings.Join(r.CheckpointRegressions, "; ")))
	}
	return errors.Join(errs...)
}

// String summarises the report on a few lines.
func (r Report) String() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "produced\t%d\n", r.Produced)
	fmt.Fprintf(tw, "delivered\t%d (distinct %d)\n", r.Delivered, r.Distinct)
	fmt.Fprintf(tw, "lost\t%d\n", len(r.Lost))
	fmt.Fprintf(tw, "duplicates\t%d (after the last checkpoint: %d, before it: %d)\n",
		r.Duplicates, r.DuplicatesAfterCheckpoint, r.DuplicatesBeforeCheckpoint)
	fmt.Fprintf(tw, "retries\t%d\n", r.Retries)
	fmt.Fprintf(tw, "order violations\t%d\n", sum(r.OrderViolations))
	fmt.Fprintf(tw, "skips\t%d\n", sum(r.Skips))
	fmt.Fprintf(tw, "unexpected\t%d\n", r.Unexpected)
	if r.Poison > 0 || r.WrongDeadLetters > 0 {
		fmt.Fprintf(tw, "poison records\t%d (dead-lettered %d, missing %d, wrong dead letters %d)\n",
			r.Poison, r.DeadLettered, len(r.MissingDeadLetters), r.WrongDeadLetters)
	}
	if r.Damaged > 0 {
		fmt.Fprintf(tw, "damaged event lines\t%d\n", r.Damaged)
	}
	for _, w := range SortedKeys(r.ByWorker) {
		fmt.Fprintf(tw, "worker %s\t%d deliveries", w, r.ByWorker[w])
		if r.Ownership != nil {
			fmt.Fprintf(tw, ", holds %d shards %v", len(r.Ownership[w]), r.Ownership[w])
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
	return b.String()
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// session is one processor's life on one shard: from an initialize event to
// the end of that process or the next initialize of the shard in it.
type session struct {
	worker string
	start  time.Time
	from   kcl.ExtendedSequenceNumber            // checkpoint the shard started from
	last   map[string]kcl.ExtendedSequenceNumber // newest record delivered in the session, by order key
	seen   map[string]bool
}

// CheckOptions adapt [CheckWith] to a consumer with delivery policies.
type CheckOptions struct {
	// PerKey checks order per partition key instead of per shard (a
	// consumer with worker.DeliveryPolicy.Parallelism keeps only that).
	PerKey bool
	// Poison, when set, selects the records the processor always fails:
	// they must be among DeadLetters and never reported processed, and
	// are not lost.
	Poison func(data string) bool
	// DeadLetters holds the dead letters found, by [DeadLetterKey].
	DeadLetters map[string]bool
}

// DeadLetterKey identifies a record among dead letters.
func DeadLetterKey(shard, seq string) string { return shard + "/" + seq }

// Check compares the produced records with the delivered ones.
//
// Events are grouped into sessions: a session begins with an initialize
// event of a shard and lasts until the same process initializes the shard
// again or the process ends. A record seen again in a later session is a
// duplicate; it is allowed only if it lies after the newest checkpoint any
// worker reported for the shard before that session began (a checkpoint
// event is written only after the write succeeded, and a write made after
// the new owner took the lease is refused, so that checkpoint is one the new
// owner must have seen).
func Check(produced []Produced, events Events) Report {
	return CheckWith(produced, events, CheckOptions{})
}

// CheckWith is [Check] for a consumer with delivery policies: order per
// partition key, poison records that must have become dead letters.
func CheckWith(produced []Produced, events Events, opts CheckOptions) Report {
	r := Report{
		Produced:        len(produced),
		OrderViolations: make(map[string]int),
		Skips:           make(map[string]int),
		ByWorker:        make(map[string]int),
		ByShard:         make(map[string]int),
		Damaged:         events.Damaged,
	}

	// The produced records of each shard in sequence order.
	type key struct{ shard, seq string }
	// orderKey names the sequence within which records must arrive in
	// order: the shard, or the shard and partition key.
	orderKey := func(shard, pk string) string {
		if opts.PerKey {
			return shard + "\x00" + pk
		}
		return shard
	}
	byKey := make(map[key]Produced, len(produced))
	perOrder := make(map[string][]kcl.ExtendedSequenceNumber)
	poison := make(map[key]bool)
	for _, p := range produced {
		k := key{p.Shard, p.Seq}
		byKey[k] = p
		ok := orderKey(p.Shard, p.PK)
		perOrder[ok] = append(perOrder[ok], kcl.NewSequence(p.Seq))
		if opts.Poison != nil && opts.Poison(p.Data) {
			poison[k] = true
			r.Poison++
			if opts.DeadLetters[DeadLetterKey(p.Shard, p.Seq)] {
				r.DeadLettered++
			} else {
				r.MissingDeadLetters = append(r.MissingDeadLetters, p)
			}
		}
	}
	for dl := range opts.DeadLetters {
		shard, seq, _ := strings.Cut(dl, "/")
		if !poison[key{shard, seq}] {
			r.WrongDeadLetters++
		}
	}
	for _, seqs := range perOrder {
		slices.SortFunc(seqs, kcl.ExtendedSequenceNumber.Compare)
	}
	// prev returns the produced record right before pos in its order
	// sequence, if any.
	prev := func(order string, pos kcl.ExtendedSequenceNumber) (kcl.ExtendedSequenceNumber, bool) {
		seqs := perOrder[order]
		i := sort.Search(len(seqs), func(i int) bool { return seqs[i].Compare(pos) >= 0 })
		if i == 0 {
			return kcl.ExtendedSequenceNumber{}, false
		}
		return seqs[i-1], true
	}

	// Checkpoints per shard in time order, to find the newest one stored
	// before a given moment.
	type stamped struct {
		at  time.Time
		pos kcl.ExtendedSequenceNumber
	}
	checkpoints := make(map[string][]stamped)
	for _, ev := range events.Records {
		if ev.Type != EventCheckpoint {
			continue
		}
		if pos, err := ParsePosition(ev.Position); err == nil {
			checkpoints[ev.Shard] = append(checkpoints[ev.Shard], stamped{ev.Time, pos})
		}
	}
	newestBefore := func(shard string, t time.Time) kcl.ExtendedSequenceNumber {
		var best kcl.ExtendedSequenceNumber
		for _, c := range checkpoints[shard] {
			if c.at.Before(t) && (best.IsZero() || c.pos.Compare(best) > 0) {
				best = c.pos
			}
		}
		return best
	}

	// Sessions are keyed by events file (worker), incarnation and shard.
	type sessKey struct {
		worker      string
		incarnation int
		shard       string
	}
	sessions := make(map[sessKey]*session)
	delivered := make(map[key]bool)
	for _, ev := range events.Records {
		sk := sessKey{ev.Worker, ev.Incarnation, ev.Shard}
		switch ev.Type {
		case EventInitialize:
			from, err := ParsePosition(ev.Checkpoint)
			if err != nil {
				from = kcl.ExtendedSequenceNumber{}
			}
			if before := newestBefore(ev.Shard, ev.Time); !before.IsZero() && !from.IsZero() && from.Compare(before) < 0 {
				r.CheckpointRegressions = append(r.CheckpointRegressions, fmt.Sprintf(
					"%s started %s at %s although %s was checkpointed before", ev.Worker, ev.Shard, from, before))
			}
			sessions[sk] = &session{worker: ev.Worker, start: ev.Time, from: from, seen: make(map[string]bool), last: make(map[string]kcl.ExtendedSequenceNumber)}
			continue
		case EventRecord:
		default:
			continue
		}

		r.Delivered++
		r.ByWorker[ev.Worker]++
		s := sessions[sk]
		if s == nil { // a record without initialize: start an open session
			s = &session{worker: ev.Worker, start: ev.Time, seen: make(map[string]bool), last: make(map[string]kcl.ExtendedSequenceNumber)}
			sessions[sk] = s
		}
		pos, err := ParsePosition(ev.Seq)
		k := key{ev.Shard, ev.Seq}
		p, ok := byKey[k]
		if !ok || err != nil {
			r.Unexpected++
			continue
		}
		if poison[k] {
			r.PoisonDelivered++
		}
		order := orderKey(ev.Shard, p.PK)

		switch {
		case s.seen[ev.Seq]:
			if ev.Attempt > 1 {
				r.Retries++
			} else {
				r.OrderViolations[ev.Shard]++
			}
			continue
		case delivered[k]:
			r.Duplicates++
			r.DuplicateDeliveries = append(r.DuplicateDeliveries, ev)
			if cp := newestBefore(ev.Shard, s.start); cp.IsSentinel() || cp.IsZero() || pos.Compare(cp) > 0 {
				r.DuplicatesAfterCheckpoint++
			} else {
				r.DuplicatesBeforeCheckpoint++
			}
		default:
			delivered[k] = true
			r.Distinct++
			r.ByShard[ev.Shard]++
		}
		s.seen[ev.Seq] = true

		// Order and continuity within the session.
		if last := s.last[order]; !last.IsZero() && pos.Compare(last) <= 0 {
			r.OrderViolations[ev.Shard]++
			continue
		}
		if isRecordPosition(s.from) && pos.Compare(s.from) <= 0 {
			r.OrderViolations[ev.Shard]++ // at or before the starting checkpoint
			continue
		}
		if p, ok := prev(order, pos); ok {
			covered := s.seen[p.String()] || (isRecordPosition(s.from) && p.Compare(s.from) <= 0) ||
				poison[key{ev.Shard, p.String()}]
			if !covered {
				r.Skips[ev.Shard]++
			}
		}
		s.last[order] = pos
	}

	for k, p := range byKey {
		if !delivered[k] && !poison[k] {
			r.Lost = append(r.Lost, p)
		}
	}
	slices.SortFunc(r.Lost, func(a, b Produced) int {
		if c := strings.Compare(a.Shard, b.Shard); c != 0 {
			return c
		}
		return kcl.NewSequence(a.Seq).Compare(kcl.NewSequence(b.Seq))
	})
	for shard, n := range r.OrderViolations {
		if n == 0 {
			delete(r.OrderViolations, shard)
		}
	}
	return r
}

// isRecordPosition reports whether p is the position of a record rather
// than a sentinel or nothing.
func isRecordPosition(p kcl.ExtendedSequenceNumber) bool { return !p.IsZero() && !p.IsSentinel() }

// SortedKeys returns m's keys in order; handy for printing reports.
func SortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
