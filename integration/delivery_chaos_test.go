package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/internal/testenv"
)

const (
	deliveryChaosShards   = 4 // 8 after the split, 12 with the closed parents
	deliveryChaosShortRun = 30 * time.Second
	// deliveryChaosFailures: 0.5% of the records are poison (every
	// attempt fails), 2% flaky (the first attempt in each process fails).
	deliveryChaosFailures = "poison=5,flaky=20"
)

// TestDeliveryChaos is TestChaos for the delivery policies: every worker
// runs 8 lanes per shard (Parallelism 8), bisects failing batches, gives a
// record up after 3 attempts to a dead-letter stream, and its processor
// fails chosen records: poison ones always (half of them named by a
// partial-failure error, half failing their whole batch), flaky ones once per
// process. Workers are killed and stopped as in TestChaos, with AWS faults
// injected, and halfway through every shard splits in two. Then: nothing
// lost; per partition key, across parents and children, no record first
// delivered before an earlier one of its key; every poison record in the dead-letter stream and no
// other record there; duplicates only after the last checkpoint and never
// after a graceful stop.
func TestDeliveryChaos(t *testing.T) {
	run, n, seed := chaosSettings(t, deliveryChaosShortRun)
	failures, err := fleet.ParseFailures(deliveryChaosFailures)
	if err != nil {
		t.Fatal(err)
	}
	e := setup(t, deliveryChaosShards, 0)
	ctx, cancel := context.WithTimeout(context.Background(), run+3*time.Minute)
	defer cancel()
	dlq := testenv.CreateStream(t, e.kc, 1)
	// 16 keys per shard, so that the lanes have work to share.
	prod, err := fleet.NewProducer(ctx, e.kc, e.fleet.Config().Stream, 16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prod.Stop() })
	e.prod = prod
	for k, v := range map[string]string{
		"SHARDLINE_PARALLELISM":        "8",
		"SHARDLINE_BISECT":             "true",
		"SHARDLINE_MAX_ATTEMPTS":       "3",
		"SHARDLINE_FAILURES":           deliveryChaosFailures,
		"SHARDLINE_DEAD_LETTER_STREAM": dlq,
	} {
		t.Setenv(k, v)
	}

	var ids []string
	for i := 1; i <= n; i++ {
		ids = append(ids, "d"+strconv.Itoa(i))
	}
	prod.Start(50*time.Millisecond, 8) // 160 records/s, 40 per shard
	// Halfway through, every shard splits in two: children must wait
	// until every record of their parent was processed.
	stream := e.fleet.Config().Stream
	splitErr := make(chan error, 1)
	split := time.AfterFunc(run/2, func() {
		_, err := e.kc.UpdateShardCount(ctx, &kinesis.UpdateShardCountInput{StreamName: aws.String(stream),
			TargetShardCount: aws.Int32(2 * deliveryChaosShards), ScalingType: ktypes.ScalingTypeUniformScaling})
		splitErr <- err
	})
	defer split.Stop()
	ds, elapsed := disrupt(ctx, t, e, ids, run, seed)
	select {
	case err := <-splitErr:
		if err != nil {
			t.Fatalf("UpdateShardCount: %v", err)
		}
	default:
		t.Fatal("the shards were not split during the run")
	}
	if err := prod.Stop(); err != nil {
		t.Fatal(err)
	}

	// Wait until every record was processed or given up.
	opts := fleet.CheckOptions{PerKey: true, Poison: failures.Poison}
	var r fleet.Report
	dead := 0
	err = fleet.Poll(ctx, 500*time.Millisecond, "every record processed or dead-lettered", func(ctx context.Context) (bool, error) {
		var err error
		if opts.DeadLetters, dead, err = fleet.DeadLetters(ctx, e.kc, dlq); err != nil {
			return false, err
		}
		r = fleet.CheckWith(prod.Records(), e.events(), opts)
		if len(r.Lost) > 0 || len(r.MissingDeadLetters) > 0 {
			return false, fmt.Errorf("%d records not delivered, %d poison records not dead-lettered yet", len(r.Lost), len(r.MissingDeadLetters))
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f := fleet.Chaos(e.events(), r, ds, 15*time.Second)
	retried := len(e.events().Filter(func(ev fleet.Event) bool { return ev.Type == fleet.EventRecord && ev.Attempt > 1 }))
	table := fleet.ChaosTable(r, f, ds, elapsed) + fmt.Sprintf(
		"order checked per partition key; %d dead letters written (%d records); %d records delivered on a retry\n", dead, len(opts.DeadLetters), retried)
	t.Logf("delivery chaos figures:\n%s", table)
	if path := os.Getenv("SHARDLINE_CHAOS_REPORT"); path != "" {
		path = strings.TrimSuffix(path, ".txt") + "-delivery.txt"
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			t.Error(err)
		}
	}
	if err := r.Err(); err != nil {
		t.Error(err)
	}
	// Per key across shards: each record first delivered only after every
	// earlier record of its key, parents' included.
	if err := keyOrder(e.events(), failures.Poison); err != nil {
		t.Error(err)
	}
	if n := len(listAll(ctx, t, e.kc, stream)); n != 3*deliveryChaosShards {
		t.Errorf("%d shards after the split, want %d", n, 3*deliveryChaosShards)
	}
	if err := f.Err(); err != nil {
		t.Error(err)
	}
	if r.Poison == 0 || retried == 0 {
		t.Errorf("the run exercised too little: %d poison records, %d records delivered on a retry", r.Poison, retried)
	}
	if !slices.ContainsFunc(ds, func(d fleet.Disruption) bool { return d.Kind == fleet.Kill }) {
		t.Errorf("no kill among %d disruptions", len(ds))
	}
	stopAll(ctx, t, e, ids)
}
