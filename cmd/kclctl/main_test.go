package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	ilease "github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
)

// result is what one kclctl run printed and returned.
type result struct {
	code           int
	stdout, stderr string
}

// kclctl runs the command in-process.
func kclctl(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(t.Context(), args, strings.NewReader(stdin), &out, &errb)
	return result{code, out.String(), errb.String()}
}

// oneErrorLine checks that r failed with status code and one line on
// stderr containing want.
func (r result) oneErrorLine(t *testing.T, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit status %d, want %d (stderr %q)", r.code, code, r.stderr)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "kclctl") || !strings.Contains(r.stderr, want) {
		t.Errorf("stderr %q: want one line starting with kclctl and containing %q", r.stderr, want)
	}
}

// abortedAfterPrompt checks that r asked for confirmation and then failed
// with one error line.
func (r result) abortedAfterPrompt(t *testing.T) {
	t.Helper()
	i := strings.Index(r.stderr, "Type 'yes' to continue: \n")
	if i < 0 {
		t.Fatalf("no prompt on stderr %q", r.stderr)
	}
	rest := result{r.code, r.stdout, r.stderr[i+len("Type 'yes' to continue: \n"):]}
	rest.oneErrorLine(t, exitFail, "aborted: nothing changed")
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"leases"}, "--app (or --table) is required"},
		{[]string{"leases", "--app", "a", "-o", "yaml"}, `-o "yaml"`},
		{[]string{"leases", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"leases", "--app", "a", "extra"}, `unexpected argument "extra"`},
		{[]string{"replay", "--app", "a", "--stream", "s", "--to", "latest"}, "--shard, or pass --all"},
		{[]string{"replay", "--app", "a", "--stream", "s", "--all", "--shard", "x", "--to", "latest"}, "exclude each other"},
		{[]string{"replay", "--app", "a", "--stream", "s", "--all"}, "--to is required"},
		{[]string{"replay", "--app", "a", "--stream", "s", "--all", "--to", "yesterday"}, `--to "yesterday"`},
		{[]string{"replay", "--app", "a", "--stream", "s", "--all", "--to", "12345"}, "exactly one with --shard"},
		{[]string{"replay", "--app", "a", "--stream", "s", "--all", "--to", "2099-01-01T00:00:00Z"}, "is in the future"},
		{[]string{"replay", "--app", "a", "--stream", "s", "--all", "--to=--5m"}, `"-5m" is not a positive duration`},
		{[]string{"replay", "--app", "a", "--all", "--to", "latest"}, "--stream is required"},
		{[]string{"replay", "--app", "a", "--stream", "s", "--shard", ",", "--to", "latest"}, "empty shard ID"},
		{[]string{"workers", "--app", "a", "--probe", "2m"}, "--probe"},
		{[]string{"consumers", "deregister", "--stream", "s"}, "needs --consumer"},
		{[]string{"consumers", "list", "--stream", "s", "--yes"}, "go with deregister"},
		{[]string{"consumers", "--stream", "s", "purge"}, `unknown action "purge"`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			kclctl(t, "", tc.args...).oneErrorLine(t, exitUsage, tc.want)
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"help"}, {"replay", "-h"}, {"leases", "--help"}} {
		r := kclctl(t, "", args...)
		if r.code != exitOK || !strings.Contains(r.stdout, "usage: kclctl") || r.stderr != "" {
			t.Errorf("%v: status %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
	if r := kclctl(t, ""); r.code != exitUsage || !strings.Contains(r.stdout, "replay") {
		t.Errorf("no arguments: status %d, stdout %q", r.code, r.stdout)
	}
}

func TestParsePosition(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want target
	}{
		{"trim_horizon", target{initial: kcl.StartAtTrimHorizon()}},
		{"TRIM-HORIZON", target{initial: kcl.StartAtTrimHorizon()}},
		{"latest", target{initial: kcl.StartAtLatest()}},
		{"2026-04-30T08:00:00.5+02:00", target{initial: kcl.StartAtTimestamp(time.Date(2026, 4, 30, 6, 0, 0, 5e8, time.UTC))}},
		{"-90m", target{initial: kcl.StartAtTimestamp(now.Add(-90 * time.Minute))}},
		{"49590338271490256608559692538361571095921575989136588898", target{seq: kcl.NewSequence("49590338271490256608559692538361571095921575989136588898")}},
		{"123/4", target{seq: kcl.ExtendedSequenceNumber{SequenceNumber: "123", SubSequenceNumber: 4}}},
	}
	for _, tc := range tests {
		got, err := parsePosition(tc.in, now)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got.String() != tc.want.String() || !got.initial.Timestamp().Equal(tc.want.initial.Timestamp()) {
			t.Errorf("%q: got %v, want %v", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"", "soon", "-x", "12a", "1/2/3", "2026-13-01T00:00:00Z",
		"2099-01-01T00:00:00Z", "2026-05-01T12:05:00Z", "--5m", "-+5m", "-0x"} { // the future is refused
		if got, err := parsePosition(bad, now); err == nil {
			t.Errorf("%q: got %v, want an error", bad, got)
		}
	}
}

// fixture is a stream with records and a lease table as a running fleet
// leaves it: shard 0 owned by w1 and checkpointed at its third record,
// shard 1 unowned at TRIM_HORIZON, presence rows of w1 and w2.
type fixture struct {
	stream, app string
	kc          *kinesis.Client
	store       *ilease.DynamoStore
	seqs        map[string][]string // shard -> sequence numbers in order
}

// endpoints are the flags pointing kclctl at the emulators.
func endpoints() []string {
	return []string{"--kinesis-endpoint", testenv.KinesisEndpoint(), "--dynamodb-endpoint", testenv.DynamoDBEndpoint()}
}

func (f *fixture) args(cmd string, more ...string) []string {
	args := append([]string{cmd, "--app", f.app, "--stream", f.stream}, endpoints()...)
	return append(args, more...)
}

// useCredentials gives kclctl, through the standard credential chain, the
// access key of the test clients (internal/testenv) or another one, and
// their region. DynamoDB Local keeps one database per access key and region.
func useCredentials(t *testing.T, accessKey string) {
	t.Helper()
	cfg := testenv.AWSConfig()
	creds, err := cfg.Credentials.Retrieve(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if accessKey == "" {
		accessKey = creds.AccessKeyID
	}
	none := filepath.Join(t.TempDir(), "none") // no shared files: the environment alone
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": accessKey, "AWS_SECRET_ACCESS_KEY": creds.SecretAccessKey, "AWS_SESSION_TOKEN": "",
		"AWS_REGION": cfg.Region, "AWS_PROFILE": "", "AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none,
	} {
		t.Setenv(k, v)
	}
}

// ensureTable creates the lease table of store, deleted when the test ends.
func ensureTable(t *testing.T, store *ilease.DynamoStore, name string) {
	t.Helper()
	if err := store.EnsureTable(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = testenv.DynamoDB(t).DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(name)})
	})
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	useCredentials(t, "")
	kc, dc := testenv.Kinesis(t), testenv.DynamoDB(t)
	ctx := t.Context()
	f := &fixture{stream: testenv.CreateStream(t, kc, 2), app: testenv.UniqueName("kclctl"), kc: kc, seqs: map[string][]string{}}
	store, err := ilease.NewDynamoStore(dc, f.app)
	if err != nil {
		t.Fatal(err)
	}
	f.store = store
	ensureTable(t, store, f.app)
	for i := range 5 {
		for _, shard := range []string{"shardId-000000000000", "shardId-000000000001"} {
			hk := "0"
			if shard == "shardId-000000000001" {
				hk = "340282366920938463463374607431768211455"
			}
			out, err := kc.PutRecord(ctx, &kinesis.PutRecordInput{
				StreamName: aws.String(f.stream), PartitionKey: aws.String("k"), ExplicitHashKey: aws.String(hk),
				Data: fmt.Appendf(nil, "%s-%d", shard, i),
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := aws.ToString(out.ShardId); got != shard {
				t.Fatalf("record went to %s, want %s", got, shard)
			}
			f.seqs[shard] = append(f.seqs[shard], aws.ToString(out.SequenceNumber))
		}
	}
	for _, shard := range []string{"shardId-000000000000", "shardId-000000000001"} {
		if err := store.Create(ctx, ilease.Lease{Key: shard, Checkpoint: kcl.TrimHorizon}); err != nil {
			t.Fatal(err)
		}
	}
	l, err := store.Get(ctx, "shardId-000000000000")
	if err != nil {
		t.Fatal(err)
	}
	if l, err = store.Take(ctx, l, "w1"); err != nil {
		t.Fatal(err)
	}
	l.Checkpoint = kcl.NewSequence(f.seqs["shardId-000000000000"][2])
	if _, err := store.UpdateCheckpoint(ctx, l); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"w1", "w2"} {
		if _, err := store.Beat(ctx, id, 0, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fixture) lease(t *testing.T, key string) ilease.Lease {
	t.Helper()
	l, err := f.store.Get(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func decode[T any](t *testing.T, r result) T {
	t.Helper()
	if r.code != exitOK {
		t.Fatalf("exit status %d, stderr %q", r.code, r.stderr)
	}
	var v T
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, r.stdout)
	}
	return v
}

func TestLeasesAndWorkers(t *testing.T) {
	f := newFixture(t)
	rows := decode[[]leaseRow](t, kclctl(t, "", f.args("leases", "-o", "json")...))
	if len(rows) != 2 {
		t.Fatalf("%d leases, want 2: %+v", len(rows), rows)
	}
	r0, r1 := rows[0], rows[1]
	if r0.Shard != "shardId-000000000000" || r0.Owner != "w1" || r0.Checkpoint != f.seqs[r0.Shard][2] || r0.Counter != 2 {
		t.Errorf("shard 0: %+v", r0)
	}
	if r0.Lag == nil || r0.Lag.Error != "" || r0.Lag.MillisBehindLatest == nil || r0.Lag.CheckpointArrival == nil {
		t.Errorf("shard 0 lag: %+v", r0.Lag)
	} else if age := time.Since(*r0.Lag.CheckpointArrival); age < 0 || age > time.Minute {
		t.Errorf("checkpointed record arrived %v ago", age)
	}
	if r1.Owner != "" || r1.Checkpoint != kcl.TrimHorizon.SequenceNumber || r1.Lag == nil || r1.Lag.MillisBehindLatest == nil {
		t.Errorf("shard 1: %+v lag %+v", r1, r1.Lag)
	}

	table := kclctl(t, "", f.args("leases")...)
	if table.code != exitOK || !strings.Contains(table.stdout, "SHARD") || !strings.Contains(table.stdout, "w1") {
		t.Errorf("table output (status %d):\n%s%s", table.code, table.stdout, table.stderr)
	}

	rep := decode[workersReport](t, kclctl(t, "", f.args("workers", "-o", "json")...))
	if rep.ActiveLeases != 2 || len(rep.Unowned) != 1 || len(rep.Workers) != 2 {
		t.Fatalf("workers report %+v", rep)
	}
	w1, w2 := rep.Workers[0], rep.Workers[1]
	if w1.ID != "w1" || w1.Leases != 1 || w1.SharePct != 50 || w1.Status != statusPresent ||
		w2.ID != "w2" || w2.Leases != 0 || w2.SharePct != 0 {
		t.Errorf("workers %+v", rep.Workers)
	}
}

func TestWorkersProbe(t *testing.T) {
	f := newFixture(t)
	// w1 keeps heartbeating during the probe, w2 does not.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	beat := make(chan struct{})
	go func() {
		defer close(beat)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if fl, err := f.store.ReadFleet(ctx); err == nil {
					_, _ = f.store.Beat(ctx, "w1", fl.Members["w1"], false, false, nil)
				}
			}
		}
	}()
	rep := decode[workersReport](t, kclctl(t, "", f.args("workers", "-o", "json", "--probe", "500ms")...))
	cancel()
	<-beat
	status := map[string]string{}
	for _, w := range rep.Workers {
		status[w.ID] = w.Status
	}
	if status["w1"] != statusLive || status["w2"] != statusStale {
		t.Errorf("statuses %v, want w1 live and w2 stale", status)
	}
}

func TestReplayConfirmation(t *testing.T) {
	f := newFixture(t)
	before := f.lease(t, "shardId-000000000000")

	dry := decode[replayReport](t, kclctl(t, "", f.args("replay", "--all", "--to", "trim_horizon", "--dry-run", "-o", "json")...))
	if !dry.DryRun || len(dry.Changes) != 2 || dry.Changes[0].Applied {
		t.Errorf("dry run report %+v", dry)
	}
	kclctl(t, "no\n", f.args("replay", "--all", "--to", "trim_horizon")...).abortedAfterPrompt(t)
	kclctl(t, "", f.args("replay", "--all", "--to", "trim_horizon")...).abortedAfterPrompt(t)
	if got := f.lease(t, before.Key); got.Counter != before.Counter || got.Owner != "w1" {
		t.Fatalf("lease changed without confirmation: %+v", got)
	}

	r := kclctl(t, "yes\n", f.args("replay", "--all", "--to", "-1h")...)
	if r.code != exitOK || !strings.Contains(r.stderr, "Type 'yes'") || !strings.Contains(r.stdout, "reset") {
		t.Fatalf("confirmed replay: status %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	got := f.lease(t, before.Key)
	if got.Owner != "" || got.Checkpoint != kcl.AtTimestamp || time.Since(got.CheckpointTimestamp) < 59*time.Minute ||
		got.Counter != before.Counter+1 {
		t.Errorf("lease after the replay: %+v", got)
	}
}

func TestReplaySequence(t *testing.T) {
	f := newFixture(t)
	shard := "shardId-000000000001"
	seq := f.seqs[shard][3]
	rep := decode[replayReport](t, kclctl(t, "", f.args("replay", "--shard", shard, "--to", seq, "--yes", "-o", "json")...))
	if len(rep.Changes) != 1 || !rep.Changes[0].Applied || rep.Changes[0].To != seq+"/-1" {
		t.Errorf("report %+v", rep)
	}
	if got := f.lease(t, shard).Checkpoint; got != kcl.NewSequence(seq).Before() {
		t.Errorf("checkpoint %v, want just before %s", got, seq)
	}
	// A sequence number of the other shard is refused before anything is
	// written: reading it would fail.
	other := f.seqs["shardId-000000000000"][0]
	kclctl(t, "", f.args("replay", "--shard", shard, "--to", other, "--yes")...).oneErrorLine(t, exitFail, "cannot be read in shard")
	kclctl(t, "", f.args("replay", "--shard", "shardId-000000000009", "--to", "latest", "--yes")...).oneErrorLine(t, exitFail, "not found")
}

func TestConsumers(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	summary, err := f.kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(f.stream)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.kc.RegisterStreamConsumer(ctx, &kinesis.RegisterStreamConsumerInput{
		StreamARN: summary.StreamDescriptionSummary.StreamARN, ConsumerName: aws.String("efo-app"),
	}); err != nil {
		t.Fatal(err)
	}
	list := decode[[]consumerRow](t, kclctl(t, "", f.args("consumers", "-o", "json")...))
	if len(list) != 1 || list[0].Name != "efo-app" || !strings.HasPrefix(list[0].ARN, "arn:") {
		t.Fatalf("consumers %+v", list)
	}
	kclctl(t, "n\n", f.args("consumers", "deregister", "--consumer", "efo-app")...).abortedAfterPrompt(t)
	r := kclctl(t, "", f.args("consumers", "deregister", "--consumer", "efo-app", "--yes")...)
	if r.code != exitOK || !strings.Contains(r.stdout, "deregistered consumer efo-app") {
		t.Fatalf("deregister: status %d, %q %q", r.code, r.stdout, r.stderr)
	}
	out, err := f.kc.ListStreamConsumers(ctx, &kinesis.ListStreamConsumersInput{StreamARN: summary.StreamDescriptionSummary.StreamARN})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range out.Consumers {
		if c.ConsumerStatus == ktypes.ConsumerStatusActive {
			t.Errorf("consumer %s still active", aws.ToString(c.ConsumerName))
		}
	}
}

// kclctl takes its credentials from the standard chain, also with an
// endpoint: with another access key than the program that created the table,
// DynamoDB Local shows another database, and the error says so.
func TestCredentialsComeFromTheChain(t *testing.T) {
	f := newFixture(t)
	if rows := decode[[]leaseRow](t, kclctl(t, "", f.args("leases", "-o", "json")...)); len(rows) != 2 {
		t.Fatalf("with the fixture's credentials: %d leases, want 2", len(rows))
	}
	useCredentials(t, "someoneelse") // DynamoDB Local accepts letters and digits only
	kclctl(t, "", f.args("leases")...).oneErrorLine(t, exitFail, "DynamoDB Local keeps one database per access key and region")
}

// TestBinary builds kclctl and runs it against the emulators.
func TestBinary(t *testing.T) {
	f := newFixture(t)
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "kclctl")
	if out, err := exec.CommandContext(t.Context(), goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	exe := func(stdin string, args ...string) result {
		cmd := exec.CommandContext(t.Context(), bin, args...)
		var out, errb bytes.Buffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		code := 0
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return result{code, out.String(), errb.String()}
	}

	rows := decode[[]leaseRow](t, exe("", f.args("leases", "-o", "json")...))
	if len(rows) != 2 || rows[0].Owner != "w1" {
		t.Errorf("leases %+v", rows)
	}
	plan := exe("", f.args("replay", "--shard", "shardId-000000000000", "--to", "latest", "--dry-run")...)
	if plan.code != exitOK || !strings.Contains(plan.stdout, "planned") {
		t.Errorf("dry run: status %d\n%s%s", plan.code, plan.stdout, plan.stderr)
	}
	done := exe("yes\n", f.args("replay", "--shard", "shardId-000000000000", "--to", "latest")...)
	if done.code != exitOK || f.lease(t, "shardId-000000000000").Checkpoint != kcl.Latest {
		t.Errorf("replay: status %d\n%s%s", done.code, done.stdout, done.stderr)
	}
	exe("", append([]string{"leases", "--app", "no-such-app"}, endpoints()...)...).oneErrorLine(t, exitFail, `lease table "no-such-app" not found`)
	exe("", "replay", "--app", "x").oneErrorLine(t, exitUsage, "--stream is required")
}

// In the table of a multi-stream application (lease keys
// ACCOUNT:STREAM:EPOCH:SHARD), replay resets the leases of --stream only,
// and --shard names shard IDs; leases shows the lag of that stream's
// shards.
func TestReplayMultiStream(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	d, err := f.kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(f.stream)})
	if err != nil {
		t.Fatal(err)
	}
	acct := strings.Split(aws.ToString(d.StreamDescriptionSummary.StreamARN), ":")[4]
	ours := ilease.StreamIdentifier(acct, f.stream, d.StreamDescriptionSummary.StreamCreationTimestamp.Unix())
	other := ilease.StreamIdentifier(acct, "other-stream", 1)
	app := testenv.UniqueName("kclctl-ms")
	store, err := ilease.NewDynamoStore(testenv.DynamoDB(t), app)
	if err != nil {
		t.Fatal(err)
	}
	ensureTable(t, store, app)
	for _, id := range []string{ours, other} {
		for _, shard := range []string{"shardId-000000000000", "shardId-000000000001"} {
			cp := kcl.NewSequence(f.seqs[shard][2])
			if err := store.Create(ctx, ilease.Lease{Key: ilease.MultiStreamKey(id, shard), Checkpoint: cp}); err != nil {
				t.Fatal(err)
			}
		}
	}
	args := func(cmd string, more ...string) []string {
		return append(append([]string{cmd, "--app", app, "--stream", f.stream}, endpoints()...), more...)
	}
	rep := decode[replayReport](t, kclctl(t, "", args("replay", "--shard", "shardId-000000000001", "--to", "trim_horizon", "--yes", "-o", "json")...))
	if len(rep.Changes) != 1 || !rep.Changes[0].Applied {
		t.Fatalf("report %+v", rep)
	}
	for _, id := range []string{ours, other} {
		for _, shard := range []string{"shardId-000000000000", "shardId-000000000001"} {
			l, err := store.Get(ctx, ilease.MultiStreamKey(id, shard))
			if err != nil {
				t.Fatal(err)
			}
			if reset := l.Checkpoint == kcl.TrimHorizon; reset != (id == ours && shard == "shardId-000000000001") {
				t.Errorf("lease %s: checkpoint %s", l.Key, l.Checkpoint)
			}
		}
	}
	rows := decode[[]leaseRow](t, kclctl(t, "", args("leases", "-o", "json")...))
	measured := 0
	for _, r := range rows {
		if r.Lag != nil && r.Lag.Error == "" {
			measured++
			if ilease.StreamOfKey(r.Shard) != ours {
				t.Errorf("lag measured for %s, a lease of another stream", r.Shard)
			}
		}
	}
	if measured != 2 {
		t.Errorf("lag measured for %d leases, want the 2 of %s: %+v", measured, f.stream, rows)
	}
}
