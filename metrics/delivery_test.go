package metrics

import (
	"errors"
	"testing"

	"github.com/shardline/shardline/worker"
)

func TestDeliveryEvents(t *testing.T) {
	m, g := started(t)
	got := Gather(t, g)
	want(t, got, "shardline_delivery_dead_letters_total", sw, 0) // at zero from the start
	m.OnEvent(worker.Event{ShardID: "a", Kind: worker.EventRecordsFiltered, Records: 5})
	m.OnEvent(worker.Event{ShardID: "a", Kind: worker.EventRecordsFiltered, Records: 2})
	m.OnEvent(worker.Event{ShardID: "a", Kind: worker.EventBisect, Records: 8, Err: errors.New("x")})
	m.OnEvent(worker.Event{ShardID: "a", Kind: worker.EventBisect, Records: 4, Err: errors.New("x")})
	m.OnEvent(worker.Event{ShardID: "a", Kind: worker.EventDeadLetter, Records: 3})
	m.OnEvent(worker.Event{ShardID: "a", Kind: worker.EventPartialFailure, Records: 9})
	m.OnEvent(worker.Event{ShardID: "a", Kind: worker.EventLanesBusy, LanesBusy: 6})
	m.OnEvent(worker.Event{ShardID: "b", Kind: worker.EventLanesBusy, LanesBusy: 2})
	got = Gather(t, g)
	want(t, got, "shardline_delivery_filtered_records_total", sw, 7)
	want(t, got, "shardline_delivery_bisects_total", sw, 2)
	want(t, got, "shardline_delivery_dead_letters_total", sw, 3)
	want(t, got, "shardline_delivery_partial_failures_total", sw, 1)
	want(t, got, "shardline_delivery_lanes_busy", sw, 8)
	m.OnEvent(worker.Event{ShardID: "a", Kind: worker.EventShardStopped, Reason: "shutdown"})
	want(t, Gather(t, g), "shardline_delivery_lanes_busy", sw, 2)
}
