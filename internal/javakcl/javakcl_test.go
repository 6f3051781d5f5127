package javakcl_test

import (
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/javakcl"
)

func s(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
func n(v string) types.AttributeValue { return &types.AttributeValueMemberN{Value: v} }

// Every lease the fixtures write is one the Java reader of its version
// reads, and the checker finds what the Java reader would fail on.
func TestProblems(t *testing.T) {
	full := javakcl.Lease{
		StreamID: "123456789012:orders:1700000000", ShardID: "shardId-000000000001", Owner: "w", Counter: 9,
		Checkpoint: "4959", Pending: "4960", PendingState: []byte{1}, Parents: []string{"shardId-000000000000"},
		Children: []string{"shardId-000000000002"}, StartHash: "0", EndHash: "10", ThroughputKBps: 2.5, CheckpointOwner: "v",
	}
	for _, v := range javakcl.Versions {
		if p := javakcl.Problems(v, true, javakcl.Item(v, full)); p != nil {
			t.Errorf("Java %s cannot read its own multi-stream lease: %v", v, p)
		}
		single := full
		single.StreamID = ""
		if p := javakcl.Problems(v, false, javakcl.Item(v, single)); p != nil {
			t.Errorf("Java %s cannot read its own lease: %v", v, p)
		}
		for _, row := range javakcl.EntityRows([]string{"w"}, []string{full.StreamID}, time.Unix(1, 0)) {
			p := javakcl.Problems(v, false, row)
			if v == javakcl.V35 && p != nil {
				t.Errorf("Java 3.5 reads its %v row as a lease: %v", row["entityType"], p)
			}
			if v != javakcl.V35 && p == nil {
				t.Errorf("Java %s reads a 3.5 %v row without trouble; it lacks the lease attributes", v, row["entityType"])
			}
		}
	}
	base := func() map[string]types.AttributeValue {
		return map[string]types.AttributeValue{
			"leaseKey": s("k"), "leaseCounter": n("1"), "ownerSwitchesSinceCheckpoint": n("0"),
			"checkpoint": s("TRIM_HORIZON"), "checkpointSubSequenceNumber": n("0"),
		}
	}
	tests := []struct {
		name  string
		v     javakcl.Version
		multi bool
		edit  func(map[string]types.AttributeValue)
		want  string
	}{
		{"no owner switches", javakcl.V2, false, func(m map[string]types.AttributeValue) { delete(m, "ownerSwitchesSinceCheckpoint") }, "ownerSwitchesSinceCheckpoint missing"},
		{"no counter", javakcl.V3, false, func(m map[string]types.AttributeValue) { delete(m, "leaseCounter") }, "leaseCounter missing"},
		{"no checkpoint", javakcl.V2, false, func(m map[string]types.AttributeValue) { delete(m, "checkpoint") }, "checkpoint missing"},
		{"counter not a long", javakcl.V2, false, func(m map[string]types.AttributeValue) { m["leaseCounter"] = n("1.5") }, "not a long"},
		{"owner a number", javakcl.V2, false, func(m map[string]types.AttributeValue) { m["leaseOwner"] = n("1") }, "leaseOwner is N"},
		{"parents a string", javakcl.V2, false, func(m map[string]types.AttributeValue) { m["parentShardId"] = s("p") }, "parentShardId is S"},
		{"hash keys reversed", javakcl.V2, false, func(m map[string]types.AttributeValue) {
			m["startingHashKey"], m["endingHashKey"] = s("9"), s("1")
		}, "reversed"},
		{"throughput a string", javakcl.V3, false, func(m map[string]types.AttributeValue) { m["throughputKBps"] = s("x") }, "throughputKBps is S"},
		{"no stream name", javakcl.V2, true, func(m map[string]types.AttributeValue) { m["shardId"] = s("x") }, "streamName missing"},
		{"bad stream name", javakcl.V3, true, func(m map[string]types.AttributeValue) {
			m["streamName"], m["shardId"] = s("orders"), s("x")
		}, "not a stream identifier"},
		{"unknown entity type read as a lease by 3.5", javakcl.V35, false, func(m map[string]types.AttributeValue) {
			m["entityType"] = s("FUTURE")
			delete(m, "checkpoint")
		}, "checkpoint missing"},
	}
	for _, tt := range tests {
		m := base()
		tt.edit(m)
		p := javakcl.Problems(tt.v, tt.multi, m)
		if !strings.Contains(strings.Join(p, "; "), tt.want) {
			t.Errorf("%s: problems %v, want one with %q", tt.name, p, tt.want)
		}
	}
	if p := javakcl.Problems(javakcl.V2, false, base()); p != nil {
		t.Errorf("a minimal lease: %v", p)
	}
}

func TestWriter(t *testing.T) {
	lease := func(v javakcl.Version) map[string]types.AttributeValue {
		return javakcl.Item(v, javakcl.Lease{ShardID: "shardId-0", Checkpoint: "LATEST", ThroughputKBps: 1})
	}
	fleet := map[string]types.AttributeValue{"leaseKey": s("shardline:worker:*"), "entityType": s("SHARDLINE_FLEET")}
	for _, tt := range []struct {
		items []map[string]types.AttributeValue
		index bool
		want  string
		ok    bool
	}{
		{nil, false, "2.x", false},
		{[]map[string]types.AttributeValue{fleet}, false, "2.x", false},
		{[]map[string]types.AttributeValue{fleet, lease(javakcl.V2)}, false, "2.x", true},
		{[]map[string]types.AttributeValue{lease(javakcl.V2)}, true, "3.0-3.4", true},
		{[]map[string]types.AttributeValue{lease(javakcl.V3)}, false, "3.0-3.4", true},
		{[]map[string]types.AttributeValue{fleet, lease(javakcl.V35)}, true, "3.5", true},
	} {
		v, ok := javakcl.Writer(tt.items, tt.index)
		if v.String() != tt.want || ok != tt.ok {
			t.Errorf("Writer(%d items, index %v) = %s %v, want %s %v", len(tt.items), tt.index, v, ok, tt.want, tt.ok)
		}
	}
}
