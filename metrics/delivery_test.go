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
	m.OnDelivery(worker.DeliveryEvent{ShardID: "a", Kind: "filtered", Records: 5})
	m.OnDelivery(worker.DeliveryEvent{ShardID: "a", Kind: "filtered", Records: 2})
	m.OnDelivery(worker.DeliveryEvent{ShardID: "a", Kind: "bisect", Records: 8, Err: errors.New("x")})
	m.OnDelivery(worker.DeliveryEvent{ShardID: "a", Kind: "bisect", Records: 4, Err: errors.New("x")})
	m.OnDelivery(worker.DeliveryEvent{ShardID: "a", Kind: "dead_letter", Records: 3})
	m.OnDelivery(worker.DeliveryEvent{ShardID: "a", Kind: "partial_failure", Records: 9})
	m.OnDelivery(worker.DeliveryEvent{ShardID: "a", Kind: "lanes", LanesBusy: 6})
	m.OnDelivery(worker.DeliveryEvent{ShardID: "b", Kind: "lanes", LanesBusy: 2})
	got = Gather(t, g)
	want(t, got, "shardline_delivery_filtered_records_total", sw, 7)
	want(t, got, "shardline_delivery_bisects_total", sw, 2)
	want(t, got, "shardline_delivery_dead_letters_total", sw, 3)
	want(t, got, "shardline_delivery_partial_failures_total", sw, 1)
	want(t, got, "shardline_delivery_lanes_busy", sw, 8)
	m.OnShard(worker.ShardEvent{ShardID: "a", Kind: worker.ShardStopped, Reason: "shutdown"})
	want(t, Gather(t, g), "shardline_delivery_lanes_busy", sw, 2)
}
