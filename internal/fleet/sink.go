package fleet

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// The sink: with -sink-table the consumer counts each partition key's
// records in a DynamoDB table (item k, count n), committing the counts with
// its checkpoints in one transaction (package checkpoint's Transact). Unlike
// the deliveries in the events files, the counts must come out exact through
// kills and failovers.

// UseSink makes the consumers started from now on count records in the sink
// table (see CreateSinkTable).
func (f *Fleet) UseSink(table string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg.ExtraArgs = append(f.cfg.ExtraArgs, "-sink-table", table)
}

// CreateSinkTable creates a sink table (hash key k, a string) and waits
// until it is active.
func CreateSinkTable(ctx context.Context, dc *dynamodb.Client, table string) error {
	_, err := dc.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		BillingMode:          dtypes.BillingModePayPerRequest,
		AttributeDefinitions: []dtypes.AttributeDefinition{{AttributeName: aws.String("k"), AttributeType: dtypes.ScalarAttributeTypeS}},
		KeySchema:            []dtypes.KeySchemaElement{{AttributeName: aws.String("k"), KeyType: dtypes.KeyTypeHash}},
	})
	if err != nil {
		return fmt.Errorf("fleet: create sink table %s: %w", table, err)
	}
	w := dynamodb.NewTableExistsWaiter(dc)
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)}, 30*time.Second); err != nil {
		return fmt.Errorf("fleet: sink table %s: %w", table, err)
	}
	return nil
}

// SinkReport compares a sink table with what was produced.
type SinkReport struct {
	// Records is the number of records produced; Counted the sum of the
	// sink's counts.
	Records, Counted int
	// Duplicates sums, over the keys, the counts above what was produced;
	// Lost the counts below.
	Duplicates, Lost int
}

// String returns the line `sink: records <n> duplicates <d> lost <l>`.
func (r SinkReport) String() string {
	return fmt.Sprintf("sink: records %d duplicates %d lost %d", r.Records, r.Duplicates, r.Lost)
}

// CheckSink reads the sink table (consistently) and compares its counts with
// the records produced per partition key.
func CheckSink(ctx context.Context, dc *dynamodb.Client, table string, produced []Produced) (SinkReport, error) {
	want := map[string]int{}
	for _, p := range produced {
		want[p.PK]++
	}
	got := map[string]int{}
	in := &dynamodb.ScanInput{TableName: aws.String(table), ConsistentRead: aws.Bool(true)}
	for {
		out, err := dc.Scan(ctx, in)
		if err != nil {
			return SinkReport{}, fmt.Errorf("fleet: scan sink %s: %w", table, err)
		}
		for _, item := range out.Items {
			k, _ := item["k"].(*dtypes.AttributeValueMemberS)
			n, _ := item["n"].(*dtypes.AttributeValueMemberN)
			if k == nil || n == nil {
				return SinkReport{}, fmt.Errorf("fleet: sink %s: malformed item %v", table, item)
			}
			v, err := strconv.Atoi(n.Value)
			if err != nil {
				return SinkReport{}, fmt.Errorf("fleet: sink %s: count of %s: %w", table, k.Value, err)
			}
			got[k.Value] += v
		}
		if len(out.LastEvaluatedKey) == 0 {
			break
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
	r := SinkReport{Records: len(produced)}
	for k, n := range got {
		r.Counted += n
		r.Duplicates += max(0, n-want[k])
	}
	for k, n := range want {
		r.Lost += max(0, n-got[k])
	}
	return r, nil
}
