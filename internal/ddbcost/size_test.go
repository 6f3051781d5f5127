package ddbcost

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

func TestItemSize(t *testing.T) {
	item := map[string]types.AttributeValue{
		"leaseKey":     &types.AttributeValueMemberS{Value: "shardId-000000000001"}, // 8+20
		"leaseCounter": &types.AttributeValueMemberN{Value: "12345"},                // 12+4
		"big":          &types.AttributeValueMemberN{Value: "-1200.500"},            // 3+(5 digits: 3)+1
		"set":          &types.AttributeValueMemberSS{Value: []string{"ab", "cde"}}, // 3+5
		"m": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{ // 1+3+(1+2+2)+(1+1+2)
			"w1": &types.AttributeValueMemberN{Value: "7"},
			"x":  &types.AttributeValueMemberN{Value: "100"},
		}},
	}
	if got, want := ItemSize(item), 28+16+7+8+13; got != want {
		t.Errorf("ItemSize = %d, want %d", got, want)
	}
}

func TestUnits(t *testing.T) {
	for _, c := range []struct {
		bytes      int
		consistent bool
		want       float64
	}{{0, true, 1}, {4096, true, 1}, {4097, true, 2}, {4097, false, 1}, {100, false, 0.5}} {
		if got := ReadUnits(c.bytes, c.consistent); got != c.want {
			t.Errorf("ReadUnits(%d, %v) = %v, want %v", c.bytes, c.consistent, got, c.want)
		}
	}
	if WriteUnits(1025) != 2 || WriteUnits(10) != 1 {
		t.Errorf("WriteUnits(1025), WriteUnits(10) = %v, %v; want 2, 1", WriteUnits(1025), WriteUnits(10))
	}
}

func TestIndexWriteUnits(t *testing.T) {
	ix := []Index{{Keys: []string{"owner"}, Projected: []string{}}}
	s := func(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
	a := map[string]types.AttributeValue{"k": s("1"), "owner": s("w1"), "cp": s("5")}
	b := map[string]types.AttributeValue{"k": s("1"), "owner": s("w1"), "cp": s("6")}
	c := map[string]types.AttributeValue{"k": s("1"), "owner": s("w2"), "cp": s("6")}
	d := map[string]types.AttributeValue{"k": s("1"), "cp": s("6")}
	keys := []string{"k"}
	for _, tc := range []struct {
		name     string
		old, new map[string]types.AttributeValue
		want     float64
	}{
		{"unprojected change", a, b, 0},
		{"key change", b, c, 2},
		{"leaves index", c, d, 1},
		{"never in index", d, d, 0},
		{"created", nil, a, 1},
	} {
		if got := IndexWriteUnits(ix, keys, tc.old, tc.new); got != tc.want {
			t.Errorf("%s: %v units, want %v", tc.name, got, tc.want)
		}
	}
}
