package lease_test

import (
	"testing"
	"time"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

func TestLeaseInitialPosition(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfgAt := kcl.StartAtTimestamp(at.Add(time.Hour))
	tests := []struct {
		l    lease.Lease
		cfg  kcl.InitialPosition
		want kcl.InitialPosition
	}{
		{lease.Lease{Checkpoint: kcl.TrimHorizon}, kcl.StartAtLatest(), kcl.StartAtTrimHorizon()},
		{lease.Lease{Checkpoint: kcl.Latest}, kcl.StartAtTrimHorizon(), kcl.StartAtLatest()},
		{lease.Lease{Checkpoint: kcl.AtTimestamp, CheckpointTimestamp: at}, cfgAt, kcl.StartAtTimestamp(at)},
		{lease.Lease{Checkpoint: kcl.AtTimestamp}, cfgAt, cfgAt},
		{lease.Lease{Checkpoint: kcl.AtTimestamp}, kcl.StartAtLatest(), kcl.StartAtTrimHorizon()},
		{lease.Lease{Checkpoint: kcl.NewSequence("5")}, cfgAt, cfgAt},
	}
	for _, tc := range tests {
		if got := tc.l.InitialPosition(tc.cfg); got != tc.want {
			t.Errorf("%v/%v with %v: got %v, want %v", tc.l.Checkpoint, tc.l.CheckpointTimestamp, tc.cfg, got, tc.want)
		}
	}
}
