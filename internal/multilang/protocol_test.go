package multilang

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/shardline/shardline/kcl"
)

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "pk-1", `quote " and \ backslash`, "tab\tnew\nline\r\x00\x1f", "héllo ✓ 日本",
		"bad \xff utf8 \xc3", "<html>&amp;", "\u2028"} {
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Errorf("%q: invalid JSON %s: %v", s, got, err)
			continue
		}
		want, _ := json.Marshal(s)
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Errorf("%q: decodes to %q, encoding/json's to %q", s, back, wantBack)
		}
	}
}

func TestAppendProcessRecords(t *testing.T) {
	in := kcl.ProcessRecordsInput{MillisBehindLatest: 7, Records: []kcl.Record{
		{Data: []byte{0, 1, 2, 255}, PartitionKey: `p"k`, SequenceNumber: "123", SubSequenceNumber: 4,
			ApproximateArrivalTimestamp: time.UnixMilli(1700000000999)},
		{PartitionKey: "k2", SequenceNumber: "124"},
	}}
	var got struct {
		Action  string `json:"action"`
		Records []struct {
			Action            string `json:"action"`
			Data              []byte `json:"data"`
			PartitionKey      string `json:"partitionKey"`
			SequenceNumber    string `json:"sequenceNumber"`
			SubSequenceNumber int64  `json:"subSequenceNumber"`
			Arrival           *int64 `json:"approximateArrivalTimestamp"`
		} `json:"records"`
		MillisBehindLatest int64 `json:"millisBehindLatest"`
	}
	b := appendProcessRecords(nil, in)
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	if got.Action != "processRecords" || got.MillisBehindLatest != 7 || len(got.Records) != 2 {
		t.Fatalf("decoded %+v", got)
	}
	r0, r1 := got.Records[0], got.Records[1]
	if r0.Action != "record" || string(r0.Data) != "\x00\x01\x02\xff" || r0.PartitionKey != `p"k` ||
		r0.SequenceNumber != "123" || r0.SubSequenceNumber != 4 || r0.Arrival == nil || *r0.Arrival != 1700000000999 {
		t.Errorf("record 0 = %+v", r0)
	}
	if r1.Arrival != nil || len(r1.Data) != 0 || r1.SequenceNumber != "124" {
		t.Errorf("record 1 = %+v", r1)
	}
}
