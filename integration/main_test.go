// Package integration runs several worker processes (the example consumer,
// started by internal/fleet) against kinesis-mock and DynamoDB Local, kills,
// stops and restarts them, and checks what was delivered. The tests skip
// under -short.
package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
)

// Timings every test uses.
const (
	leaseDuration = 3 * time.Second
	renewInterval = time.Second // the worker's default: LeaseDuration/3
	idleTime      = 100 * time.Millisecond
)

// binDir holds the consumer binary, built once for the package.
var (
	binDir   string
	binOnce  sync.Once
	binPath  string
	binError error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// consumerBinary builds the example consumer once per test binary (with the
// race detector when the tests have it).
func consumerBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binError = os.MkdirTemp("", "shardline-consumer-")
		if binError != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		start := time.Now()
		binPath, binError = fleet.Build(ctx, binDir, raceEnabled)
		t.Logf("built consumer (race=%v) in %v", raceEnabled, time.Since(start).Round(time.Millisecond))
	})
	if binError != nil {
		t.Fatalf("build consumer: %v", binError)
	}
	return binPath
}

// env is one test's stream, application, fleet and producer.
type env struct {
	t     *testing.T
	kc    *kinesis.Client
	dc    *dynamodb.Client
	app   string
	fleet *fleet.Fleet
	prod  *fleet.Producer
}

// setup creates a stream with the given number of shards and a fleet of
// consumers for a fresh application. The consumers checkpoint after every
// batch, or at most every checkpointInterval if it is not zero (which leaves
// processed records behind the checkpoint, as real applications do). Everything is torn down when the test
// ends: processes are killed, the producer stopped, the table and stream
// deleted; on failure the tail of every worker's log is printed.
func setup(t *testing.T, shards int, checkpointInterval time.Duration) *env {
	t.Helper()
	testenv.Require(t)
	kc, dc := testenv.Kinesis(t), testenv.DynamoDB(t)
	bin := consumerBinary(t)
	stream := testenv.CreateStream(t, kc, shards)
	app := testenv.UniqueName("app")
	f, err := fleet.New(fleet.Config{
		Binary:             bin,
		Dir:                t.TempDir(),
		Stream:             stream,
		App:                app,
		KinesisEndpoint:    testenv.KinesisEndpoint(),
		DynamoDBEndpoint:   testenv.DynamoDBEndpoint(),
		LeaseDuration:      leaseDuration,
		IdleTime:           idleTime,
		CheckpointInterval: checkpointInterval,
		ShutdownTimeout:    15 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prod, err := fleet.NewProducer(ctx, kc, stream, 4)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, kc: kc, dc: dc, app: app, fleet: f, prod: prod}
	t.Cleanup(func() {
		_ = prod.Stop()
		e.teardown()
	})
	return e
}

// teardown kills the fleet's processes, fails the test on race detector
// reports in their logs, prints the logs if the test failed and deletes the
// lease table.
func (e *env) teardown() {
	e.fleet.Close()
	if races, err := e.fleet.DataRaces(); err != nil {
		e.t.Errorf("read worker logs: %v", err)
	} else if len(races) > 0 {
		e.t.Errorf("race detector reports in worker processes:\n%s", strings.Join(races, "\n"))
	}
	if e.t.Failed() {
		e.dumpLogs()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = fleet.DeleteTable(ctx, e.dc, e.app)
}

// start starts workers with the given IDs.
func (e *env) start(ids ...string) {
	e.t.Helper()
	for _, id := range ids {
		if _, err := e.fleet.Start(id); err != nil {
			e.t.Fatal(err)
		}
	}
}

// leases reads the lease table.
func (e *env) leases(ctx context.Context) []lease.Lease {
	e.t.Helper()
	ls, err := fleet.Leases(ctx, e.dc, e.app)
	if err != nil {
		e.t.Fatal(err)
	}
	return ls
}

// events reads every worker's events.
func (e *env) events() fleet.Events {
	e.t.Helper()
	evs, err := e.fleet.Events()
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

// check compares what the producer wrote with what was delivered.
func (e *env) check() fleet.Report {
	e.t.Helper()
	return fleet.Check(e.prod.Records(), e.events())
}

// waitDelivered waits until every record produced so far was delivered.
func (e *env) waitDelivered(ctx context.Context) {
	e.t.Helper()
	err := fleet.Poll(ctx, 200*time.Millisecond, "every record delivered", func(context.Context) (bool, error) {
		r := e.check()
		if len(r.Lost) > 0 {
			return false, fmt.Errorf("%d of %d records not delivered yet", len(r.Lost), r.Produced)
		}
		return true, nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// waitBalanced waits until the given workers hold every lease, each within
// slack of an even share, and every shard has delivered a record.
func (e *env) waitBalanced(ctx context.Context, workers []string, slack int) []lease.Lease {
	e.t.Helper()
	var ls []lease.Lease
	err := fleet.Poll(ctx, 200*time.Millisecond, "balanced leases", func(ctx context.Context) (bool, error) {
		var err error
		if ls, err = fleet.Leases(ctx, e.dc, e.app); err != nil {
			return false, err
		}
		if !fleet.Balanced(ls, workers, slack) {
			return false, fmt.Errorf("ownership %v", fleet.Ownership(ls))
		}
		return true, nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return ls
}

// dumpLogs prints the end of every worker's log.
func (e *env) dumpLogs() {
	for _, id := range e.fleet.IDs() {
		b, err := os.ReadFile(e.fleet.LogPath(id))
		if err != nil {
			e.t.Logf("%s: %v", id, err)
			continue
		}
		lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		e.t.Logf("--- last lines of %s:\n%s", filepath.Base(e.fleet.LogPath(id)), bytes.Join(lines, []byte("\n")))
	}
}

// report checks every delivery, reads the lease table and logs both.
func (e *env) report(ctx context.Context) fleet.Report {
	e.t.Helper()
	r, err := e.fleet.Check(ctx, e.prod.Records())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Logf("delivery report:\n%s", r)
	e.t.Logf("lease table:\n%s", fleet.OwnershipTable(e.leases(ctx), e.fleet.IDs(), r.ByWorker))
	return r
}
