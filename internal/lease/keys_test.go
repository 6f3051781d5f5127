package lease

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

func TestMultiStreamKeyFormat(t *testing.T) {
	id := StreamIdentifier("123456789012", "orders", 1700000000)
	if id != "123456789012:orders:1700000000" {
		t.Fatalf("StreamIdentifier = %q", id)
	}
	key := MultiStreamKey(id, "shardId-000000000003")
	if key != "123456789012:orders:1700000000:shardId-000000000003" {
		t.Fatalf("MultiStreamKey = %q", key)
	}
	if got := MultiStreamKey("", "shardId-000000000003"); got != "shardId-000000000003" {
		t.Fatalf("single-stream key = %q", got)
	}
	for _, tc := range []struct {
		key, stream, shard string
		ok                 bool
	}{
		{"shardId-000000000001", "", "shardId-000000000001", true},
		{"123456789012:orders:1700000000:shardId-000000000001", "123456789012:orders:1700000000", "shardId-000000000001", true},
		{"123456789012:my.stream-1_x:0:shardId-1", "123456789012:my.stream-1_x:0", "shardId-1", true},
		{"", "", "", false},
		{"a:b", "", "", false}, // two parts
		{"123456789012:orders:notanumber:shardId-1", "", "", false}, // epoch
		{"123456789012:orders:-5:shardId-1", "", "", false},         // negative epoch
		{"123456789012:orders:1700000000:", "", "", false},          // no shard
		{":orders:1700000000:shardId-1", "", "", false},             // no account
		{"123456789012::1700000000:shardId-1", "", "", false},       // no name
		{"x:123456789012:orders:1:shardId-1", "", "", false},        // five parts
	} {
		stream, shard, ok := SplitKey(tc.key)
		if stream != tc.stream || shard != tc.shard || ok != tc.ok {
			t.Errorf("SplitKey(%q) = %q, %q, %v; want %q, %q, %v", tc.key, stream, shard, ok, tc.stream, tc.shard, tc.ok)
		}
	}
	acct, name, epoch, ok := ParseStreamIdentifier(id)
	if acct != "123456789012" || name != "orders" || epoch != 1700000000 || !ok {
		t.Fatalf("ParseStreamIdentifier = %q %q %d %v", acct, name, epoch, ok)
	}
	if ShardIDOf(key) != "shardId-000000000003" || ShardIDOf("shardId-7") != "shardId-7" {
		t.Fatal("ShardIDOf")
	}
	if StreamOfKey(key) != id || StreamOfKey("shardId-7") != "" {
		t.Fatal("StreamOfKey")
	}
}

// A multi-stream lease is written with the attributes the Java KCL's
// multi-stream serializer writes and reads: streamName (the stream
// identifier) and shardId.
func TestEncodeMultiStreamLeaseAttributes(t *testing.T) {
	key := MultiStreamKey(StreamIdentifier("123456789012", "orders", 42), "shardId-000000000000")
	item := encodeLease(Lease{Key: key})
	if got := stringAttr(t, item, "leaseKey"); got != key {
		t.Fatalf("leaseKey = %q", got)
	}
	if got := stringAttr(t, item, "streamName"); got != "123456789012:orders:42" {
		t.Fatalf("streamName = %q", got)
	}
	if got := stringAttr(t, item, "shardId"); got != "shardId-000000000000" {
		t.Fatalf("shardId = %q", got)
	}
	single := encodeLease(Lease{Key: "shardId-000000000000"})
	for _, a := range []string{"streamName", "shardId"} {
		if _, ok := single[a]; ok {
			t.Fatalf("single-stream lease has %s", a)
		}
	}
}

func stringAttr(t *testing.T, item map[string]types.AttributeValue, name string) string {
	t.Helper()
	v, ok := item[name].(*types.AttributeValueMemberS)
	if !ok {
		t.Fatalf("attribute %s is %T, not a string", name, item[name])
	}
	return v.Value
}
