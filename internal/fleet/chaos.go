package fleet

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shardline/shardline/kcl"
)

// DisruptionKind is what a chaos driver did to a worker process.
type DisruptionKind string

// The disruptions a chaos driver applies.
const (
	// Kill is a SIGKILL: the worker stops at once, without a word.
	Kill DisruptionKind = "kill"
	// Terminate is a SIGTERM: the worker stops gracefully, handing its
	// shards over with a final checkpoint.
	Terminate DisruptionKind = "terminate"
)

// Disruption is one signal a chaos driver sent to a worker process.
type Disruption struct {
	Worker string
	Kind   DisruptionKind
	At     time.Time
}

// How a shard session ended.
type sessionEnd int

const (
	endProcess  sessionEnd = iota // the process ended without a word (killed)
	endLost                       // LeaseLost
	endPlanned                    // ShutdownRequested: a hand-over or a graceful stop
	endShardEnd                   // the shard was read to its end
)

// shardSession is one processor's life on a shard, from its initialize
// event to its end.
type shardSession struct {
	worker      string
	incarnation int
	shard       string
	start, end  time.Time
	how         sessionEnd
	// final is the checkpoint stored after ShutdownRequested (zero if
	// none was).
	final    kcl.ExtendedSequenceNumber
	records  map[string]bool // sequence numbers delivered
	firstRec time.Time
}

// sessions splits events into shard sessions, in file order.
func sessions(evs Events) []*shardSession {
	type key struct {
		worker      string
		incarnation int
		shard       string
	}
	open := map[key]*shardSession{}
	var all []*shardSession
	for _, ev := range evs.Records {
		if ev.Shard == "" {
			continue
		}
		k := key{ev.Worker, ev.Incarnation, ev.Shard}
		s := open[k]
		if ev.Type == EventInitialize || s == nil {
			s = &shardSession{worker: ev.Worker, incarnation: ev.Incarnation, shard: ev.Shard, start: ev.Time, records: map[string]bool{}}
			open[k] = s
			all = append(all, s)
		}
		switch ev.Type {
		case EventRecord:
			s.records[ev.Seq] = true
			if s.firstRec.IsZero() {
				s.firstRec = ev.Time
			}
		case EventLeaseLost:
			s.how, s.end = endLost, ev.Time
		case EventShutdownRequested:
			s.how, s.end = endPlanned, ev.Time
		case EventShardEnded:
			s.how, s.end = endShardEnd, ev.Time
		case EventCheckpoint:
			if s.how == endPlanned {
				if pos, err := ParsePosition(ev.Position); err == nil {
					s.final = pos
				}
			}
		}
	}
	return all
}

// Move is a shard changing hands.
type Move struct {
	// Shard moved from worker From to worker To, the worker that delivered
	// on it next ("" if none did).
	Shard, From, To string
	// At is the SIGKILL of the old owner, or its ShutdownRequested.
	At time.Time
	// Idle is the time from At to the next delivery on the shard.
	Idle time.Duration
	// Chained reports that another worker started the shard in between
	// and lost it before delivering anything (it was killed or stopped in
	// turn): Idle covers more than one move.
	Chained bool
}

// String describes the move for logs.
func (m Move) String() string {
	s := fmt.Sprintf("%s %s -> %s at %s: idle %v", m.Shard, m.From, m.To, m.At.Format("15:04:05.000"), m.Idle.Round(time.Millisecond))
	if m.Chained {
		s += " (chained)"
	}
	return s
}

// Idle returns the idle times of the moves, leaving chained ones out
// unless chained is set.
func Idle(moves []Move, chained bool) []time.Duration {
	var out []time.Duration
	for _, m := range moves {
		if chained || !m.Chained {
			out = append(out, m.Idle)
		}
	}
	return out
}

// Slowest returns the n moves with the longest idle times, slowest first.
func Slowest(moves []Move, n int) []Move {
	s := slices.Clone(moves)
	slices.SortFunc(s, func(a, b Move) int { return int(b.Idle - a.Idle) })
	return s[:min(n, len(s))]
}

// ChaosFigures are the timings and the duplicate attribution of a chaos run.
type ChaosFigures struct {
	// Failovers are, per shard held by a killed worker, the time from the
	// SIGKILL to the next delivery on the shard (by whichever worker).
	Failovers []Move
	// Handoffs are, per shard moved by a hand-over (balancing), the time
	// the shard was idle: from ShutdownRequested on the old owner to the
	// first delivery by the new one.
	Handoffs []Move
	// Releases are the same for shards given up by a graceful stop
	// (SIGTERM).
	Releases []Move
	// Duplicates sorts the duplicate deliveries by how the session that had
	// delivered the record before ended: killed, lease lost, or a planned
	// move whose final checkpoint did not cover the record (allowed), or a
	// planned move whose final checkpoint did (a bug).
	DupAfterKill, DupAfterLeaseLost, DupAfterUncheckpointedMove, DupAfterPlannedMove int
	// PlannedMoveDuplicates are the deliveries counted in DupAfterPlannedMove.
	PlannedMoveDuplicates []Event
}

// Err reports duplicates that no failover explains.
func (f ChaosFigures) Err() error {
	if f.DupAfterPlannedMove > 0 {
		return fmt.Errorf("%d duplicates after planned moves whose final checkpoint covered them (first: %+v)",
			f.DupAfterPlannedMove, f.PlannedMoveDuplicates[0])
	}
	return nil
}

// Chaos computes the figures of a chaos run from the events the workers
// wrote, the duplicates Check found and the disruptions the driver applied.
// graceful bounds how long after a SIGTERM a ShutdownRequested still counts
// as part of the graceful stop rather than a hand-over.
func Chaos(evs Events, r Report, ds []Disruption, graceful time.Duration) ChaosFigures {
	var f ChaosFigures
	all := sessions(evs)
	byShard := map[string][]*shardSession{}
	for _, s := range all {
		byShard[s.shard] = append(byShard[s.shard], s)
	}
	// The moves: the first delivery on the shard after at, and whether
	// some session started in between without delivering.
	recs := map[string][]Event{}
	for _, ev := range evs.Records {
		if ev.Type == EventRecord {
			recs[ev.Shard] = append(recs[ev.Shard], ev)
		}
	}
	for _, rs := range recs {
		slices.SortStableFunc(rs, func(a, b Event) int { return a.Time.Compare(b.Time) })
	}
	move := func(shard, from string, at time.Time) (Move, bool) {
		rs := recs[shard]
		i, _ := slices.BinarySearchFunc(rs, at, func(e Event, t time.Time) int {
			if !e.Time.After(t) {
				return -1
			}
			return 1
		})
		if i == len(rs) {
			return Move{}, false
		}
		next := rs[i]
		m := Move{Shard: shard, From: from, To: next.Worker, At: at, Idle: next.Time.Sub(at)}
		for _, s := range byShard[shard] {
			if s.start.After(at) && s.start.Before(next.Time) && !(s.worker == next.Worker && s.incarnation == next.Incarnation) {
				m.Chained = true
			}
		}
		return m, true
	}

	// Failovers: the shards whose session was open in the killed
	// incarnation.
	for _, d := range ds {
		if d.Kind != Kill {
			continue
		}
		inc := 0
		for _, ev := range evs.Records {
			if ev.Worker == d.Worker && ev.Time.Before(d.At) {
				inc = max(inc, ev.Incarnation)
			}
		}
		for _, s := range all {
			if s.worker != d.Worker || s.incarnation != inc || !s.start.Before(d.At) || !s.end.IsZero() && s.end.Before(d.At) {
				continue
			}
			if m, ok := move(s.shard, s.worker, d.At); ok {
				f.Failovers = append(f.Failovers, m)
			}
		}
	}

	// Planned moves.
	for _, s := range all {
		if s.how != endPlanned {
			continue
		}
		m, ok := move(s.shard, s.worker, s.end)
		if !ok {
			continue
		}
		release := slices.ContainsFunc(ds, func(d Disruption) bool {
			return d.Kind == Terminate && d.Worker == s.worker && !s.end.Before(d.At) && s.end.Sub(d.At) <= graceful
		})
		if release {
			f.Releases = append(f.Releases, m)
		} else {
			f.Handoffs = append(f.Handoffs, m)
		}
	}

	// Duplicates: the latest earlier session that delivered the record.
	for _, d := range r.DuplicateDeliveries {
		var own, prev *shardSession
		for _, s := range byShard[d.Shard] {
			if s.worker == d.Worker && s.incarnation == d.Incarnation && !s.start.After(d.Time) &&
				(own == nil || s.start.After(own.start)) {
				own = s
			}
		}
		for _, s := range byShard[d.Shard] {
			if s != own && s.records[d.Seq] && s.start.Before(d.Time) && (prev == nil || s.start.After(prev.start)) {
				prev = s
			}
		}
		switch {
		case prev == nil || prev.how == endProcess:
			f.DupAfterKill++
		case prev.how == endLost:
			f.DupAfterLeaseLost++
		case prev.how == endPlanned:
			pos, err := ParsePosition(d.Seq)
			if err == nil && !prev.final.IsZero() && !prev.final.IsSentinel() && pos.Compare(prev.final) <= 0 {
				f.DupAfterPlannedMove++
				f.PlannedMoveDuplicates = append(f.PlannedMoveDuplicates, d)
			} else {
				f.DupAfterUncheckpointedMove++
			}
		default:
			f.DupAfterKill++
		}
	}
	return f
}

// Median returns the median of ds (zero for none).
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// Percentile returns the p-th percentile of ds (0 < p <= 100; nearest
// rank; zero for none).
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Max returns the largest of ds (zero for none).
func Max(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return slices.Max(ds)
}

// ChaosTable formats a chaos run's figures as a small table.
func ChaosTable(r Report, f ChaosFigures, ds []Disruption, elapsed time.Duration) string {
	kills, terms := 0, 0
	for _, d := range ds {
		if d.Kind == Kill {
			kills++
		} else {
			terms++
		}
	}
	timing := func(moves []Move) string {
		v := Idle(moves, false)
		if len(v) == 0 {
			return "-"
		}
		r := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
		s := fmt.Sprintf("median %v, p90 %v, max %v (%d)", r(Median(v)), r(Percentile(v, 90)), r(Max(v)), len(v))
		if n := len(moves) - len(v); n > 0 {
			s += fmt.Sprintf("; %d chained moves left out, max %v", n, Max(Idle(moves, true)).Round(10*time.Millisecond))
		}
		return s
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "run\t%v, %d SIGKILL, %d SIGTERM\n", elapsed.Round(time.Second), kills, terms)
	fmt.Fprintf(tw, "records produced\t%d\n", r.Produced)
	fmt.Fprintf(tw, "records delivered\t%d (distinct %d)\n", r.Delivered, r.Distinct)
	fmt.Fprintf(tw, "lost\t%d\n", len(r.Lost))
	fmt.Fprintf(tw, "order violations\t%d\n", sum(r.OrderViolations))
	fmt.Fprintf(tw, "duplicates\t%d: %d after a kill, %d after a lease loss, %d after a move without final checkpoint, %d after a clean move; %d before a checkpoint\n",
		r.Duplicates, f.DupAfterKill, f.DupAfterLeaseLost, f.DupAfterUncheckpointedMove, f.DupAfterPlannedMove, r.DuplicatesBeforeCheckpoint)
	fmt.Fprintf(tw, "failover (SIGKILL to next delivery)\t%s\n", timing(f.Failovers))
	fmt.Fprintf(tw, "hand-over idle (balancing)\t%s\n", timing(f.Handoffs))
	fmt.Fprintf(tw, "release idle (SIGTERM)\t%s\n", timing(f.Releases))
	if r.Poison > 0 || r.WrongDeadLetters > 0 {
		fmt.Fprintf(tw, "poison records\t%d: %d in the dead-letter stream, %d missing; %d other records there\n",
			r.Poison, r.DeadLettered, len(r.MissingDeadLetters), r.WrongDeadLetters)
	}
	_ = tw.Flush()
	return b.String()
}
