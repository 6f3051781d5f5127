package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// Leases returns the leases in the application's lease table; none while
// the table does not exist yet.
func Leases(ctx context.Context, dc lease.DynamoDBAPI, table string) ([]lease.Lease, error) {
	store, err := lease.NewDynamoStore(dc, table)
	if err != nil {
		return nil, err
	}
	ls, err := store.List(ctx)
	if errors.Is(err, kcl.ErrTableNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: list leases of %s: %w", table, err)
	}
	return ls, nil
}

// Ownership maps each worker ID to the shards it holds, sorted; shards with
// no owner are under the empty ID.
func Ownership(leases []lease.Lease) map[string][]string {
	own := make(map[string][]string)
	for _, l := range leases {
		own[l.Owner] = append(own[l.Owner], l.Key)
	}
	for _, shards := range own {
		slices.Sort(shards)
	}
	return own
}

// Checkpoints maps each shard to its stored checkpoint.
func Checkpoints(leases []lease.Lease) map[string]kcl.ExtendedSequenceNumber {
	cps := make(map[string]kcl.ExtendedSequenceNumber, len(leases))
	for _, l := range leases {
		cps[l.Key] = l.Checkpoint
	}
	return cps
}

// Balanced reports whether the leases are all owned by the given workers,
// each holding between floor(n/w) and ceil(n/w) of them, plus or minus
// slack.
func Balanced(leases []lease.Lease, workers []string, slack int) bool {
	if len(leases) == 0 || len(workers) == 0 {
		return false
	}
	own := Ownership(leases)
	lo, hi := len(leases)/len(workers)-slack, (len(leases)+len(workers)-1)/len(workers)+slack
	held := 0
	for _, w := range workers {
		n := len(own[w])
		if n < lo || n > hi {
			return false
		}
		held += n
	}
	return held == len(leases)
}

// OwnershipTable formats who holds which shard and how many records each
// worker was delivered, one worker a line.
func OwnershipTable(leases []lease.Lease, workers []string, delivered map[string]int) string {
	own := Ownership(leases)
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tSHARDS\tRECORDS")
	for _, w := range workers {
		shards := strings.Join(own[w], " ")
		if shards == "" {
			shards = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\n", w, shards, delivered[w])
	}
	for owner, shards := range own {
		if !slices.Contains(workers, owner) {
			name := owner
			if name == "" {
				name = "(nobody)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\n", name, strings.Join(shards, " "), delivered[owner])
		}
	}
	_ = tw.Flush()
	return b.String()
}

// DeleteTable deletes a lease table; a missing table is not an error.
func DeleteTable(ctx context.Context, dc *dynamodb.Client, table string) error {
	_, err := dc.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	var missing *dtypes.ResourceNotFoundException
	if err != nil && !errors.As(err, &missing) {
		return fmt.Errorf("fleet: delete table %s: %w", table, err)
	}
	return nil
}
