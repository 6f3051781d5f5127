package lease

import (
	"errors"
	"slices"
	"testing"

	ilease "github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// multiStreamTable holds the lineage of two streams of a multi-stream
// application, keyed as the Java KCL keys them.
func multiStreamTable(streams ...string) []Lease {
	var out []Lease
	for _, id := range streams {
		for _, l := range lineage() {
			l.Key = ilease.MultiStreamKey(id, l.Key)
			out = append(out, l)
		}
	}
	return out
}

// In a multi-stream table a reset names its stream, by identifier or by
// name; it resets that stream's leases only, following the lineage (parent
// and child shard IDs are plain shard IDs) and writes by lease key.
func TestResetOneStreamOfAMultiStreamTable(t *testing.T) {
	a, b := "123456789012:orders:100", "123456789012:payments:200"
	s := storeWith(t, multiStreamTable(a, b))
	tbl := newTableOn(s)
	plan, err := tbl.Reset(t.Context(), ResetRequest{Stream: "orders", Shards: []string{"p"}, Position: kcl.StartAtTrimHorizon()})
	if err != nil {
		t.Fatal(err)
	}
	changes, _ := planned(plan)
	want := []string{a + ":p=TRIM_HORIZON (selected)", a + ":c1=TRIM_HORIZON (descendant of p)", a + ":c2=TRIM_HORIZON (descendant of p)"}
	if !slices.Equal(changes, want) {
		t.Fatalf("changes %q, want %q", changes, want)
	}
	all, err := s.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range all {
		reset := l.Checkpoint == kcl.TrimHorizon
		if wantReset := slices.ContainsFunc(want, func(c string) bool { return len(c) > len(l.Key) && c[:len(l.Key)+1] == l.Key+"=" }); reset != wantReset {
			t.Errorf("lease %s checkpoint %s", l.Key, l.Checkpoint)
		}
	}

	// By identifier, every shard of b.
	plan, err = tbl.Reset(t.Context(), ResetRequest{Stream: b, Position: kcl.StartAtLatest(), DryRun: true})
	if err != nil || len(plan.Changes) != 3 {
		t.Fatalf("reset of %s: %d changes, %v; want 3", b, len(plan.Changes), err)
	}
	for _, c := range plan.Changes {
		if ilease.StreamOfKey(c.Shard) != b || c.Before.Key != c.Shard {
			t.Errorf("change %s (before %s) is not of %s", c.Shard, c.Before.Key, b)
		}
	}

	if _, err := tbl.Reset(t.Context(), ResetRequest{Position: kcl.StartAtLatest(), DryRun: true}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("reset without a stream: %v, want ErrInvalidArgument", err)
	}
	if _, err := tbl.Reset(t.Context(), ResetRequest{Stream: "refunds", Position: kcl.StartAtLatest(), DryRun: true}); !errors.Is(err, ErrNotFound) {
		t.Errorf("reset of an unknown stream: %v, want ErrNotFound", err)
	}
	// A name that two identifiers carry (a stream re-created) is ambiguous.
	s2 := storeWith(t, multiStreamTable(a, "123456789012:orders:300"))
	if _, err := newTableOn(s2).Reset(t.Context(), ResetRequest{Stream: "orders", Position: kcl.StartAtLatest(), DryRun: true}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("reset of an ambiguous name: %v, want ErrInvalidArgument", err)
	}
}
