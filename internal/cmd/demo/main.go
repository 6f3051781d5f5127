// Command demo shows Shardline at work against the local emulators (run it
// with `make demo`, which starts them): three replicas of internal/cmd/fleetworker
// share a 4-shard stream; one is killed and its shards move to the others;
// it is restarted and resumes from the stored checkpoints; then everything
// stops gracefully and a checker confirms that no record was lost.
//
// It exits 0 when every check passed and 1 otherwise.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
)

const (
	shards        = 4
	leaseDuration = 3 * time.Second
	idleTime      = 200 * time.Millisecond
)

var replicas = []string{"replica-1", "replica-2", "replica-3"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "\nDEMO FAILED: %v\n", err)
		cancel()
		stop()
		os.Exit(1)
	}
	fmt.Println("\nDemo passed.")
}

// demo holds what the steps share.
type demo struct {
	kc    *kinesis.Client
	dc    *dynamodb.Client
	app   string
	fleet *fleet.Fleet
	prod  *fleet.Producer
	began time.Time
}

func run(ctx context.Context) error {
	d := &demo{
		kc:    testenv.NewKinesisClient(testenv.KinesisEndpoint()),
		dc:    testenv.NewDynamoDBClient(testenv.DynamoDBEndpoint()),
		app:   testenv.UniqueName("demo-app"),
		began: time.Now(),
	}
	stream := testenv.UniqueName("demo-stream")

	d.step("Creating stream %s with %d shards (application and lease table: %s)", stream, shards, d.app)
	if err := testenv.CreateStreamNamed(ctx, d.kc, stream, shards); err != nil {
		return fmt.Errorf("create stream (are the emulators running? `scripts/emulators.sh start`): %w", err)
	}
	defer d.cleanup(stream)

	dir, err := os.MkdirTemp("", "shardline-demo-")
	if err != nil {
		return err
	}
	keepDir := true
	defer func() {
		if keepDir {
			fmt.Printf("Worker logs and events kept in %s\n", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()

	d.step("Building internal/cmd/fleetworker")
	bin, err := fleet.Build(ctx, dir, false)
	if err != nil {
		return err
	}
	d.fleet, err = fleet.New(fleet.Config{
		Binary: bin, Dir: dir, Stream: stream, App: d.app,
		KinesisEndpoint: testenv.KinesisEndpoint(), DynamoDBEndpoint: testenv.DynamoDBEndpoint(),
		LeaseDuration: leaseDuration, IdleTime: idleTime, ShutdownTimeout: 10 * time.Second,
	})
	if err != nil {
		return err
	}
	defer d.fleet.Close() // kills whatever still runs, whatever happens

	d.prod, err = fleet.NewProducer(ctx, d.kc, stream, 4)
	if err != nil {
		return err
	}
	d.step("Producing about 40 records/s with keys %s ... (data \"<key>:<n>\")", strings.Join(d.prod.Keys()[:3], ", "))
	d.prod.Start(100*time.Millisecond, 4)
	defer d.prod.Stop()

	// 1. Three replicas share the shards.
	d.step("Starting %s (lease duration %v)", strings.Join(replicas, ", "), leaseDuration)
	for _, id := range replicas {
		if _, err := d.fleet.Start(id); err != nil {
			return err
		}
	}
	if err := d.waitOwners(ctx, "the shards spread over the three replicas", func(own map[string][]string) bool {
		return len(own[""]) == 0 && len(own[replicas[0]]) > 0 && len(own[replicas[1]]) > 0 && len(own[replicas[2]]) > 0
	}); err != nil {
		return err
	}
	if err := d.waitRecordsFrom(ctx, replicas, time.Now()); err != nil {
		return err
	}
	if err := d.table(ctx); err != nil {
		return err
	}

	// 2. SIGKILL the replica with the most shards; its shards move.
	own, err := d.ownership(ctx)
	if err != nil {
		return err
	}
	victim := slices.MaxFunc(replicas, func(a, b string) int { return len(own[a]) - len(own[b]) })
	moved := own[victim]
	d.step("SIGKILL %s, which holds %s", victim, short(moved...))
	killedAt, err := d.fleet.Process(victim).Kill()
	if err != nil {
		return err
	}
	var first map[string]fleet.Event
	if err := fleet.Poll(ctx, 100*time.Millisecond, "the killed replica's shards to move", func(context.Context) (bool, error) {
		evs, err := d.fleet.Events()
		if err != nil {
			return false, err
		}
		first = evs.FirstDeliveries(moved, killedAt, victim)
		return len(first) == len(moved), nil
	}); err != nil {
		return err
	}
	for _, shard := range moved {
		fmt.Printf("   %s moved to %s: first record %.1fs after the kill (lease duration %v)\n",
			short(shard), first[shard].Worker, first[shard].Time.Sub(killedAt).Seconds(), leaseDuration)
	}
	if err := d.table(ctx); err != nil {
		return err
	}

	// 3. Restart it: it takes a shard back and resumes from its checkpoint.
	d.step("Restarting %s", victim)
	restartedAt := time.Now()
	if _, err := d.fleet.Start(victim); err != nil {
		return err
	}
	if err := d.waitOwners(ctx, victim+" to take a shard", func(own map[string][]string) bool {
		return len(own[victim]) > 0
	}); err != nil {
		return err
	}
	if err := d.waitRecordsFrom(ctx, []string{victim}, restartedAt); err != nil {
		return err
	}
	if err := d.showResume(victim, restartedAt); err != nil {
		return err
	}
	if err := d.table(ctx); err != nil {
		return err
	}

	// 4. Stop producing, let the fleet catch up, stop every replica gracefully.
	d.step("Stopping the producer and waiting for every record to be delivered")
	if err := d.prod.Stop(); err != nil {
		return err
	}
	if err := fleet.Poll(ctx, 200*time.Millisecond, "every record delivered", func(context.Context) (bool, error) {
		evs, err := d.fleet.Events()
		return err == nil && len(fleet.Check(d.prod.Records(), evs).Lost) == 0, err
	}); err != nil {
		return err
	}
	d.step("Stopping every replica with SIGTERM (graceful shutdown)")
	var stopErrs []error
	for _, id := range replicas {
		at, err := d.fleet.Process(id).Terminate(ctx)
		if err != nil {
			stopErrs = append(stopErrs, err)
			continue
		}
		fmt.Printf("   %s stopped cleanly in %.1fs\n", id, time.Since(at).Seconds())
	}
	if err := d.table(ctx); err != nil {
		return err
	}

	// 5. The verdict.
	report, err := d.fleet.Check(ctx, d.prod.Records())
	if err != nil {
		return err
	}
	d.step("Checking every delivered record against every produced one")
	fmt.Print(indent(report.String()))
	fmt.Println("   (duplicates after the last checkpoint are expected after a SIGKILL: at-least-once;")
	fmt.Println("   leases moved to the restarted replica are handed over after a checkpoint, so none there)")
	if err := errors.Join(append(stopErrs, report.Err())...); err != nil {
		return err
	}
	keepDir = false
	return nil
}

// step prints a numbered headline with the time since the demo began.
func (d *demo) step(format string, args ...any) {
	fmt.Printf("\n[%5.1fs] %s\n", time.Since(d.began).Seconds(), fmt.Sprintf(format, args...))
}

func (d *demo) leases(ctx context.Context) ([]lease.Lease, error) {
	return fleet.Leases(ctx, d.dc, d.app)
}

func (d *demo) ownership(ctx context.Context) (map[string][]string, error) {
	ls, err := d.leases(ctx)
	if err != nil {
		return nil, err
	}
	return fleet.Ownership(ls), nil
}

// waitOwners polls the lease table until ok accepts the ownership.
func (d *demo) waitOwners(ctx context.Context, what string, ok func(map[string][]string) bool) error {
	return fleet.Poll(ctx, 200*time.Millisecond, what, func(ctx context.Context) (bool, error) {
		own, err := d.ownership(ctx)
		if err != nil {
			return false, err
		}
		if len(own) == 0 {
			return false, nil
		}
		return ok(own), nil
	})
}

// waitRecordsFrom waits until each worker delivered a record after since.
func (d *demo) waitRecordsFrom(ctx context.Context, workers []string, since time.Time) error {
	return fleet.Poll(ctx, 200*time.Millisecond, "records from "+strings.Join(workers, ", "), func(context.Context) (bool, error) {
		evs, err := d.fleet.Events()
		if err != nil {
			return false, err
		}
		for _, w := range workers {
			if !slices.ContainsFunc(evs.Records, func(ev fleet.Event) bool {
				return ev.Worker == w && ev.Type == fleet.EventRecord && ev.Time.After(since)
			}) {
				return false, nil
			}
		}
		return true, nil
	})
}

// showResume prints, for each shard the restarted worker started, the
// checkpoint it started from and the first record it delivered, and checks
// that this record is the one right after the checkpoint.
func (d *demo) showResume(worker string, since time.Time) error {
	evs, err := d.fleet.Events()
	if err != nil {
		return err
	}
	produced := d.prod.Records()
	for _, ini := range evs.Records {
		if ini.Worker != worker || ini.Type != fleet.EventInitialize || ini.Time.Before(since) {
			continue
		}
		from, err := fleet.ParsePosition(ini.Checkpoint)
		if err != nil {
			return err
		}
		next, ok := nextProduced(produced, ini.Shard, from)
		var got fleet.Event
		for _, ev := range evs.Records {
			if ev.Worker == worker && ev.Type == fleet.EventRecord && ev.Shard == ini.Shard && !ev.Time.Before(ini.Time) {
				got = ev
				break
			}
		}
		if got.Seq == "" {
			continue // not delivered yet: nothing to show
		}
		fmt.Printf("   %s resumed %s after the stored checkpoint ...%s: first record %q (...%s)\n",
			worker, short(ini.Shard), tail(from.String()), got.Data, tail(got.Seq))
		if !ok || got.Seq != next.Seq {
			return fmt.Errorf("%s resumed %s at %s, but the record after checkpoint %s is %+v", worker, ini.Shard, got.Seq, from, next)
		}
		fmt.Printf("   that is the record right after the checkpoint: nothing skipped, nothing checkpointed re-read\n")
	}
	return nil
}

// nextProduced returns the first produced record of shard after pos.
func nextProduced(produced []fleet.Produced, shard string, pos kcl.ExtendedSequenceNumber) (fleet.Produced, bool) {
	var best fleet.Produced
	found := false
	for _, p := range produced {
		seq := kcl.NewSequence(p.Seq)
		if p.Shard != shard || (!pos.IsSentinel() && seq.Compare(pos) <= 0) {
			continue
		}
		if !found || kcl.NewSequence(p.Seq).Compare(kcl.NewSequence(best.Seq)) < 0 {
			best, found = p, true
		}
	}
	return best, found
}

// table prints who holds which shard (from the lease table) and how many
// records each replica processed (from the events files).
func (d *demo) table(ctx context.Context) error {
	ls, err := d.leases(ctx)
	if err != nil {
		return err
	}
	evs, err := d.fleet.Events()
	if err != nil {
		return err
	}
	own, delivered := fleet.Ownership(ls), evs.DeliveredBy()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "   REPLICA\tPROCESS\tSHARDS HELD\tRECORDS PROCESSED")
	for _, id := range replicas {
		state := "stopped"
		if p := d.fleet.Process(id); p != nil && p.Running() {
			state = fmt.Sprintf("pid %d", p.PID)
		}
		fmt.Fprintf(tw, "   %s\t%s\t%s\t%d\n", id, state, short(own[id]...), delivered[id])
	}
	if len(own[""]) > 0 {
		fmt.Fprintf(tw, "   (no owner)\t\t%s\t\n", short(own[""]...))
	}
	fmt.Fprintf(tw, "   produced so far: %d\t\t\t\n", d.prod.Count())
	return tw.Flush()
}

// cleanup deletes the stream and the lease table.
func (d *demo) cleanup(stream string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = d.kc.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String(stream)})
	_ = fleet.DeleteTable(ctx, d.dc, d.app)
}

// short turns "shardId-000000000003" into "shard-3".
func short(ids ...string) string {
	if len(ids) == 0 {
		return "-"
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		n := strings.TrimLeft(strings.TrimPrefix(id, "shardId-"), "0")
		if n == "" {
			n = "0"
		}
		out[i] = "shard-" + n
	}
	return strings.Join(out, " ")
}

// tail keeps the end of a long sequence number.
func tail(s string) string {
	if len(s) > 8 {
		return s[len(s)-8:]
	}
	return s
}

func indent(s string) string {
	return "   " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n   ") + "\n"
}
