package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/javakcl"
	ilease "github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
)

// javaTable creates a lease table as the Java KCL of version v does,
// deleted when the test ends.
func javaTable(t *testing.T, v javakcl.Version) (string, *dynamodb.Client) {
	t.Helper()
	useCredentials(t, "")
	dc := testenv.DynamoDB(t)
	table := testenv.UniqueName("inspect")
	if err := javakcl.CreateTable(t.Context(), dc, table, v); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = dc.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})
	return table, dc
}

func inspectJSON(t *testing.T, table string, more ...string) inspectReport {
	t.Helper()
	r := kclctl(t, "", append([]string{"inspect", "--table", table, "-o", "json", "--dynamodb-endpoint", testenv.DynamoDBEndpoint()}, more...)...)
	if r.code != exitOK {
		t.Fatalf("inspect: exit %d: %s", r.code, r.stderr)
	}
	var rep inspectReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("inspect output %q: %v", r.stdout, err)
	}
	return rep
}

// A 3.5 single-table table that Shardline workers of this and an earlier
// version ran on: inspect names the writer, skips the rows that are not
// leases, lists pending checkpoints and hand-offs, and says which rows a
// roll-back must delete.
func TestInspectJava35TableAfterShardline(t *testing.T) {
	table, dc := javaTable(t, javakcl.V35)
	ctx := t.Context()
	items := []map[string]types.AttributeValue{
		javakcl.Item(javakcl.V35, javakcl.Lease{ShardID: "shardId-000000000000", Owner: "java-a", Counter: 3, Checkpoint: "49590001", Pending: "49590002"}),
		javakcl.Item(javakcl.V35, javakcl.Lease{ShardID: "shardId-000000000001", Owner: "java-b", CheckpointOwner: "java-a", Counter: 4, Checkpoint: "TRIM_HORIZON"}),
		{"leaseKey": &types.AttributeValueMemberS{Value: "shardline:worker:old-1"}, "leaseCounter": &types.AttributeValueMemberN{Value: "7"}},
	}
	items = append(items, javakcl.EntityRows([]string{"java-a", "java-b"}, nil, time.Now())...)
	if err := javakcl.Put(ctx, dc, table, items...); err != nil {
		t.Fatal(err)
	}
	st, err := ilease.NewDynamoStore(dc, table)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Beat(ctx, "go-1", 0, false, false, nil); err != nil {
		t.Fatal(err)
	}

	rep := inspectJSON(t, table)
	if rep.Writer != "3.5" || !rep.Shardline || rep.MultiStream {
		t.Errorf("writer %q, shardline %v, multi-stream %v; want 3.5, true, false", rep.Writer, rep.Shardline, rep.MultiStream)
	}
	var leases, skipped []string
	for _, l := range rep.Leases {
		leases = append(leases, l.Key)
	}
	for _, s := range rep.Skipped {
		skipped = append(skipped, s.Key)
	}
	if want := []string{"shardId-000000000000", "shardId-000000000001"}; !slices.Equal(leases, want) {
		t.Errorf("leases %v, want %v", leases, want)
	}
	if want := []string{"Leader", "Migration3.0", "java-a", "java-b", "shardline:worker:*", "shardline:worker:old-1"}; !slices.Equal(skipped, want) {
		t.Errorf("skipped rows %v, want %v", skipped, want)
	}
	if len(rep.Unreadable) != 1 || rep.Unreadable["shardline:worker:old-1"] == nil {
		t.Errorf("rows unreadable by Java: %v, want the old presence row alone", rep.Unreadable)
	}
	all := strings.Join(append(rep.TakeOver, rep.RollBack...), "\n")
	for _, want := range []string{"yes: single-stream table of 2 leases", "pending (prepared) checkpoints on shardId-000000000000",
		"graceful hand-offs in progress (checkpointOwner) on shardId-000000000001", "owned by java-a, java-b",
		`delete the fleet row`, `delete shardline:worker:old-1`} {
		if !strings.Contains(all, want) {
			t.Errorf("report lacks %q:\n%s", want, all)
		}
	}

	text := kclctl(t, "", "inspect", "--table", table, "--dynamodb-endpoint", testenv.DynamoDBEndpoint())
	if text.code != exitOK || !strings.Contains(text.stdout, "Java KCL format 3.5") || !strings.Contains(text.stdout, "roll-back to the Java KCL:") {
		t.Errorf("text output (exit %d):\n%s%s", text.code, text.stdout, text.stderr)
	}
}

// A multi-stream table of the Java KCL 2.x is reported as such, with its
// streams; --java checks the roll-back against one version.
func TestInspectJavaMultiStreamTable(t *testing.T) {
	table, dc := javaTable(t, javakcl.V2)
	streams := []string{"123456789012:orders:1700000000", "123456789012:payments:1700000100"}
	for i, s := range streams {
		l := javakcl.Lease{StreamID: s, ShardID: "shardId-000000000000", Counter: int64(i), Checkpoint: "TRIM_HORIZON"}
		if err := javakcl.Put(t.Context(), dc, table, javakcl.Item(javakcl.V2, l)); err != nil {
			t.Fatal(err)
		}
	}
	rep := inspectJSON(t, table, "--java", "3.0-3.4")
	if rep.Writer != "2.x" || !rep.MultiStream || !slices.Equal(rep.Streams, streams) || len(rep.Unreadable) != 0 {
		t.Errorf("report %+v: want writer 2.x, multi-stream with %v, nothing unreadable", rep, streams)
	}
	if !strings.Contains(strings.Join(rep.TakeOver, "\n"), "multi-stream table (2 streams") {
		t.Errorf("take-over advice %v does not mention the multi-stream table", rep.TakeOver)
	}
	if r := kclctl(t, "", "inspect", "--table", table, "--java", "4.0"); r.code != exitUsage {
		t.Errorf("--java 4.0: exit %d, want %d", r.code, exitUsage)
	}
}
