package fleet

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// history builds produced records and events by hand.
type history struct {
	t0       time.Time
	tick     int
	produced []Produced
	events   []Event
	inc      map[string]int
}

func newHistory() *history {
	return &history{t0: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), inc: make(map[string]int)}
}

func (h *history) now() time.Time {
	h.tick++
	return h.t0.Add(time.Duration(h.tick) * time.Millisecond)
}

// produce writes n records to shard, with sequence numbers 100, 101, ...
func (h *history) produce(shard string, n int) {
	base := 100
	for _, p := range h.produced {
		if p.Shard == shard {
			base++
		}
	}
	for i := range n {
		seq := strconv.Itoa(base + i)
		h.produced = append(h.produced, Produced{PK: "pk", N: base + i, Data: "pk:" + seq, Shard: shard, Seq: seq})
	}
}

func (h *history) add(e Event) {
	e.Time = h.now()
	if e.Type == EventStart {
		h.inc[e.Worker]++
	}
	e.Incarnation = max(h.inc[e.Worker], 1)
	h.events = append(h.events, e)
}

func (h *history) start(w string) { h.add(Event{Type: EventStart, Worker: w}) }
func (h *history) initialize(w, shard, from string) {
	h.add(Event{Type: EventInitialize, Worker: w, Shard: shard, Checkpoint: from})
}
func (h *history) checkpoint(w, shard string, seq int) {
	h.add(Event{Type: EventCheckpoint, Worker: w, Shard: shard, Position: strconv.Itoa(seq)})
}

// deliver delivers records with sequence numbers from..to (inclusive).
func (h *history) deliver(w, shard string, from, to, attempt int) {
	for s := from; s <= to; s++ {
		h.add(Event{Type: EventRecord, Worker: w, Shard: shard, Seq: strconv.Itoa(s), Attempt: attempt})
	}
}

func (h *history) check() Report { return Check(h.produced, Events{Records: h.events}) }

func TestCheckCleanRun(t *testing.T) {
	h := newHistory()
	h.produce("s0", 10)
	h.produce("s1", 5)
	h.start("a")
	h.initialize("a", "s0", "TRIM_HORIZON")
	h.initialize("a", "s1", "TRIM_HORIZON")
	h.deliver("a", "s0", 100, 104, 1)
	h.checkpoint("a", "s0", 104)
	h.deliver("a", "s1", 100, 104, 1)
	h.deliver("a", "s0", 105, 109, 1)
	r := h.check()
	if err := r.Err(); err != nil {
		t.Fatalf("Err() = %v\n%s", err, r)
	}
	if r.Produced != 15 || r.Distinct != 15 || r.Delivered != 15 || r.Duplicates != 0 {
		t.Fatalf("report:\n%s", r)
	}
}

func TestCheckCrashDuplicatesAfterCheckpointAreAllowed(t *testing.T) {
	h := newHistory()
	h.produce("s0", 10)
	h.start("a")
	h.initialize("a", "s0", "TRIM_HORIZON")
	h.deliver("a", "s0", 100, 104, 1)
	h.checkpoint("a", "s0", 104)
	h.deliver("a", "s0", 105, 107, 1) // processed, not checkpointed: a dies
	h.start("b")
	h.initialize("b", "s0", "104")
	h.deliver("b", "s0", 105, 109, 1)
	r := h.check()
	if err := r.Err(); err != nil {
		t.Fatalf("Err() = %v\n%s", err, r)
	}
	if r.Duplicates != 3 || r.DuplicatesAfterCheckpoint != 3 || r.DuplicatesBeforeCheckpoint != 0 {
		t.Fatalf("duplicates: %+v", r)
	}
}

func TestCheckFindsProblems(t *testing.T) {
	tests := []struct {
		name  string
		build func(h *history)
		want  func(r Report) bool
	}{
		{"lost", func(h *history) {
			h.initialize("a", "s0", "TRIM_HORIZON")
			h.deliver("a", "s0", 100, 108, 1)
		}, func(r Report) bool { return len(r.Lost) == 1 && r.Lost[0].Seq == "109" }},
		{"skip in the middle", func(h *history) {
			h.initialize("a", "s0", "TRIM_HORIZON")
			h.deliver("a", "s0", 100, 103, 1)
			h.deliver("a", "s0", 105, 109, 1)
		}, func(r Report) bool { return r.Skips["s0"] == 1 && len(r.Lost) == 1 }},
		{"skip at the start", func(h *history) {
			h.initialize("a", "s0", "TRIM_HORIZON")
			h.deliver("a", "s0", 102, 109, 1)
		}, func(r Report) bool { return r.Skips["s0"] == 1 }},
		{"out of order", func(h *history) {
			h.initialize("a", "s0", "TRIM_HORIZON")
			h.deliver("a", "s0", 100, 104, 1)
			h.deliver("a", "s0", 103, 103, 1)
			h.deliver("a", "s0", 105, 109, 1)
		}, func(r Report) bool { return r.OrderViolations["s0"] == 1 }},
		{"re-delivered before the checkpoint", func(h *history) {
			h.start("a")
			h.initialize("a", "s0", "TRIM_HORIZON")
			h.deliver("a", "s0", 100, 105, 1)
			h.checkpoint("a", "s0", 105)
			h.start("b")
			h.initialize("b", "s0", "102") // started from an old checkpoint
			h.deliver("b", "s0", 103, 109, 1)
		}, func(r Report) bool {
			return r.DuplicatesBeforeCheckpoint == 3 && len(r.CheckpointRegressions) == 1
		}},
		{"unexpected record", func(h *history) {
			h.initialize("a", "s0", "TRIM_HORIZON")
			h.deliver("a", "s0", 100, 110, 1)
		}, func(r Report) bool { return r.Unexpected == 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHistory()
			h.produce("s0", 10)
			tc.build(h)
			r := h.check()
			if r.Err() == nil || !tc.want(r) {
				t.Fatalf("Err() = %v; report:\n%s%+v", r.Err(), r, r)
			}
		})
	}
}

func TestCheckRetriesAreNotDuplicates(t *testing.T) {
	h := newHistory()
	h.produce("s0", 4)
	h.initialize("a", "s0", "TRIM_HORIZON")
	h.deliver("a", "s0", 100, 101, 1)
	h.deliver("a", "s0", 102, 103, 1)
	h.deliver("a", "s0", 102, 103, 2)
	h.deliver("a", "s0", 102, 103, 3)
	r := h.check()
	if err := r.Err(); err != nil || r.Retries != 4 || r.Duplicates != 0 {
		t.Fatalf("Err() = %v; %+v", err, r)
	}
}

func TestCheckRestartResumesAfterCheckpoint(t *testing.T) {
	h := newHistory()
	h.produce("s0", 10)
	h.start("a")
	h.initialize("a", "s0", "TRIM_HORIZON")
	h.deliver("a", "s0", 100, 104, 1)
	h.checkpoint("a", "s0", 104)
	h.add(Event{Type: EventStop, Worker: "a"})
	h.start("a") // same worker ID, new process
	h.initialize("a", "s0", "104")
	h.deliver("a", "s0", 105, 109, 1)
	r := h.check()
	if err := r.Err(); err != nil || r.Duplicates != 0 {
		t.Fatalf("Err() = %v\n%s", err, r)
	}
}

func TestReadEvents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.events.jsonl")
	content := `{"type":"start","ts":"2026-01-01T00:00:00Z","worker":"a","pid":1}
{"type":"initialize","ts":"2026-01-01T00:00:01Z","worker":"a","shard":"s0","checkpoint":"TRIM_HORIZON"}
{"type":"record","ts":"2026-01-01T00:00:02Z","worker":"a","shard":"s0","seq":"100","pk":"pk","data":"pk:1","attempt":1}
{"type":"rec
{"type":"start","ts":"2026-01-01T00:00:03Z","worker":"a","pid":2}
{"type":"record","ts":"2026-01-01T00:00:04Z","worker":"a","shard":"s0","seq":"101","pk":"pk","data":"pk:2","attempt":1}
{"type":"record","ts":"2026-01-01T00:00:05Z","wor`
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	evs, err := ReadEvents(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Records) != 5 || evs.Damaged != 1 {
		t.Fatalf("got %d events, %d damaged; want 5, 1", len(evs.Records), evs.Damaged)
	}
	if got := evs.Records[4]; got.Incarnation != 2 || got.Seq != "101" || got.Time.Second() != 4 {
		t.Fatalf("last event = %+v", got)
	}
	if missing, err := ReadEvents(filepath.Join(t.TempDir(), "none")); err != nil || len(missing.Records) != 0 {
		t.Fatalf("missing file: %v, %v", missing, err)
	}
}

func TestParsePosition(t *testing.T) {
	for _, s := range []string{"TRIM_HORIZON", "SHARD_END", "49590338271490256608559692538361571095921575989136588898", "12/3"} {
		p, err := ParsePosition(s)
		if err != nil || p.String() != s {
			t.Errorf("ParsePosition(%q) = %v, %v", s, p, err)
		}
	}
	for _, s := range []string{"", "abc", "12/x", "12/"} {
		if _, err := ParsePosition(s); err == nil {
			t.Errorf("ParsePosition(%q) succeeded", s)
		}
	}
}

func TestPollGivesUpAtDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	calls := 0
	err := Poll(ctx, time.Millisecond, "nothing", func(context.Context) (bool, error) {
		calls++
		return false, errors.New("not yet")
	})
	if !errors.Is(err, context.DeadlineExceeded) || calls < 2 {
		t.Fatalf("Poll = %v after %d calls", err, calls)
	}
	if err := Poll(context.Background(), time.Hour, "now", func(context.Context) (bool, error) { return true, nil }); err != nil {
		t.Fatalf("Poll = %v", err)
	}
}

// TestCheckPerKey: with two keys interleaved on one shard, a delivery order
// that is per-key correct passes CheckWith{PerKey} but is an order violation
// per shard; a per-key inversion fails both; a poison record must be a dead
// letter and is neither lost nor a skip.
func TestCheckPerKey(t *testing.T) {
	h := newHistory()
	for i := range 6 { // 100..105: keys a, b, a, b, a, b
		pk := []string{"a", "b"}[i%2]
		seq := strconv.Itoa(100 + i)
		h.produced = append(h.produced, Produced{PK: pk, N: i, Data: pk + ":" + seq, Shard: "s0", Seq: seq})
	}
	h.start("w")
	h.initialize("w", "s0", "TRIM_HORIZON")
	deliver := func(seqs ...int) {
		for _, s := range seqs {
			h.add(Event{Type: EventRecord, Worker: "w", Shard: "s0", Seq: strconv.Itoa(s), Attempt: 1})
		}
	}
	// Key b's lane runs ahead of key a's; 104 (key a) is poison.
	deliver(101, 103, 105, 100, 102)
	poison := func(data string) bool { return data == "a:104" }
	dead := map[string]bool{DeadLetterKey("s0", "104"): true}

	if r := h.check(); sum(r.OrderViolations) == 0 {
		t.Errorf("per shard: want order violations, got %+v", r)
	}
	r := CheckWith(h.produced, Events{Records: h.events}, CheckOptions{PerKey: true, Poison: poison, DeadLetters: dead})
	if err := r.Err(); err != nil || r.Poison != 1 || r.DeadLettered != 1 {
		t.Errorf("per key with the poison record dead-lettered: %v (%+v)", err, r)
	}
	if r := CheckWith(h.produced, Events{Records: h.events}, CheckOptions{PerKey: true, Poison: poison}); len(r.MissingDeadLetters) != 1 || r.Err() == nil {
		t.Errorf("poison record not dead-lettered: want it reported, got %+v", r)
	}
	wrong := map[string]bool{DeadLetterKey("s0", "104"): true, DeadLetterKey("s0", "100"): true}
	if r := CheckWith(h.produced, Events{Records: h.events}, CheckOptions{PerKey: true, Poison: poison, DeadLetters: wrong}); r.WrongDeadLetters != 1 {
		t.Errorf("a good record among the dead letters: want 1 wrong, got %+v", r)
	}
	deliver(100) // key a goes back: a per-key violation
	if r := CheckWith(h.produced, Events{Records: h.events}, CheckOptions{PerKey: true, Poison: poison, DeadLetters: dead}); sum(r.OrderViolations) == 0 {
		t.Errorf("per-key inversion not found: %+v", r)
	}
}

func TestFailures(t *testing.T) {
	f, err := ParseFailures("poison=100,flaky=200")
	if err != nil {
		t.Fatal(err)
	}
	poison, flaky := 0, 0
	for i := range 10000 {
		d := "pk:" + strconv.Itoa(i)
		if f.Poison(d) {
			poison++
			if f.Flaky(d) {
				t.Fatalf("%s is both poison and flaky", d)
			}
		}
		if f.Flaky(d) {
			flaky++
		}
	}
	// About 10% and 18% (20% of the 90% not poison).
	if poison < 800 || poison > 1200 || flaky < 1500 || flaky > 2100 {
		t.Errorf("poison %d, flaky %d of 10000", poison, flaky)
	}
	for _, bad := range []string{"poison=x", "poison=2000", "slow=1"} {
		if _, err := ParseFailures(bad); err == nil {
			t.Errorf("ParseFailures(%q) accepted", bad)
		}
	}
}
