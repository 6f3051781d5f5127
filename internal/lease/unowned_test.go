package lease_test

import (
	"maps"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/internal/lease"
)

// TestUnownedRisesWhileOwnerIsDead cuts one of two workers off the store:
// the other reports its leases as unowned from when it last saw the dead
// worker's heartbeat move, rising until it has taken them over; a held or
// live-owned lease is never reported.
func TestUnownedRisesWhileOwnerIsDead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFleet(t, 4)
		defer f.closeAll()
		pa := &partitionedStore{Store: f.store}
		a := f.start("a", pa)
		b := f.start("b", nil)
		advance(4 * takeInterval)
		if got := counts([]*lease.Manager{a, b}); !slices.Equal(got, []int{2, 2}) {
			t.Fatalf("managers hold %v, want 2/2", got)
		}
		if u := b.Unowned(); len(u) != 0 {
			t.Fatalf("unowned %v with both workers alive, want none", u)
		}
		aKeys := heldKeys(a)
		pa.Down.Store(true)
		crash := time.Now()

		var prev time.Duration
		rose := false
		for time.Since(crash) < leaseDuration+3*maxTakePeriod {
			advance(100 * time.Millisecond)
			u := b.Unowned()
			if len(u) == 0 {
				continue
			}
			for key := range u {
				if !slices.Contains(aKeys, key) {
					t.Fatalf("unowned %v, want only a's leases %v", u, aKeys)
				}
			}
			d := slices.Max(slices.Collect(maps.Values(u)))
			if d < 0 || d > time.Since(crash)+renewInterval {
				t.Fatalf("unowned for %v, %v after the crash: want between 0 and the time since a's last heartbeat", d, time.Since(crash))
			}
			if d < prev {
				t.Fatalf("unowned time fell from %v to %v while the lease waited", prev, d)
			}
			rose = rose || d > prev && prev > 0
			prev = d
		}
		if !rose {
			t.Errorf("unowned time never rose after the crash (last %v)", prev)
		}
		if got := counts([]*lease.Manager{b}); !slices.Equal(got, []int{4}) {
			t.Fatalf("b holds %v after the failover, want 4", got)
		}
		if u := b.Unowned(); len(u) != 0 {
			t.Errorf("unowned %v after b took every lease, want none", u)
		}
	})
}
