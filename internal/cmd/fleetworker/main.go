// Command fleetworker is the consumer the test harness runs: the fleet
// integration tests, the chaos test, `make demo` (internal/cmd/demo) and the fleet
// benchmark (bench/cmd/bench) start replicas of it through internal/fleet. It
// reads a Kinesis stream together with any number of replicas of itself,
// counts the records of each shard, checkpoints after every batch (or every
// -checkpoint-interval) and stops gracefully on SIGTERM or SIGINT.
//
// Beyond what examples/consumer shows users, it can:
//
//   - append one JSON line per delivered record and per lifecycle event to
//     the file given by -events; internal/fleet reads those lines to check
//     what was delivered;
//   - inject the failures real AWS produces into its SDK clients' HTTP calls
//     (-faults, see internal/faults);
//   - simulate processing time (-work) and checkpoint less often
//     (-checkpoint-interval);
//   - read by enhanced fan-out from kinesis-mock (-fanout
//     -emulator-fanout-shim, a test-only wrapper for an event the emulator
//     omits);
//   - run the delivery policies: several batches of a shard at once
//     (-parallelism), fail chosen records (-failures, see fleet.Failures:
//     poison ones always, flaky ones once per process) and give poison
//     records up after -max-attempts to a dead-letter stream
//     (-dead-letter-stream), optionally bisecting failing batches (-bisect);
//   - consume several streams as one multi-stream worker (-streams-file: one
//     stream name per line, read again at every shard sync, every
//     -shard-sync-interval, so that a test can add and remove streams while
//     the processes run); its events then name each record's stream.
//
// Every flag can also be set through the environment variable named in its
// help text:
//
//	go run ./internal/cmd/fleetworker -stream orders -app orders-counter \
//	    -kinesis-endpoint http://127.0.0.1:4568 -dynamodb-endpoint http://127.0.0.1:8000 \
//	    -events /tmp/events.jsonl -faults seed=1,kinesis=0.05,dynamodb=0.02
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/fanout"
	"github.com/shardline/shardline/internal/efotest"
	"github.com/shardline/shardline/internal/faults"
	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/metrics"
	"github.com/shardline/shardline/producer"
	"github.com/shardline/shardline/worker"
)

func main() {
	os.Exit(run())
}

// options are the command line settings.
type options struct {
	stream, app, workerID           string
	streamsFile                     string // multi-stream: see readStreams
	shardSyncInterval               time.Duration
	kinesisEndpoint, dynamoEndpoint string
	initialPosition                 string
	leaseDuration, idleTime         time.Duration
	checkpointInterval              time.Duration
	work                            time.Duration
	failBatches                     int
	shutdownTimeout                 time.Duration
	eventsPath                      string
	metricsAddr                     string
	faults                          string
	sinkTable                       string // see sink.go
	fanOut, emulatorFanOutShim      bool
	// Delivery policies (see the package comment).
	parallelism, maxAttempts int
	bisect                   bool
	failures                 string
	deadLetterStream         string
}

func parseFlags() (options, error) {
	var o options
	var envErrs []error
	fs := flag.NewFlagSet("fleetworker", flag.ContinueOnError)
	str := func(p *string, name, env, def, help string) {
		if v := os.Getenv(env); v != "" {
			def = v
		}
		fs.StringVar(p, name, def, help+" (env "+env+")")
	}
	dur := func(p *time.Duration, name, env string, def time.Duration, help string) {
		fs.DurationVar(p, name, fromEnv(env, def, time.ParseDuration, &envErrs), help+" (env "+env+")")
	}
	boolean := func(p *bool, name, env, help string) {
		fs.BoolVar(p, name, fromEnv(env, false, strconv.ParseBool, &envErrs), help+" (env "+env+")")
	}
	str(&o.stream, "stream", "SHARDLINE_STREAM", "", "Kinesis stream name or ARN (required, unless -streams-file)")
	str(&o.streamsFile, "streams-file", "SHARDLINE_STREAMS_FILE", "", "consume the streams named in this file, one a line, read again at every shard sync (instead of -stream)")
	str(&o.app, "app", "SHARDLINE_APP", "", "application name; also the lease table name (required)")
	str(&o.workerID, "worker-id", "SHARDLINE_WORKER_ID", "", "worker ID in the lease table (default: host name + random suffix)")
	str(&o.kinesisEndpoint, "kinesis-endpoint", "SHARDLINE_KINESIS_ENDPOINT", "", "Kinesis endpoint URL (default: AWS)")
	str(&o.dynamoEndpoint, "dynamodb-endpoint", "SHARDLINE_DYNAMODB_ENDPOINT", "", "DynamoDB endpoint URL (default: AWS)")
	str(&o.initialPosition, "initial-position", "SHARDLINE_INITIAL_POSITION", "trim_horizon", "where shards without a checkpoint start: trim_horizon or latest")
	str(&o.eventsPath, "events", "SHARDLINE_EVENTS", "", "append a JSON line per record and lifecycle event to this file")
	str(&o.faults, "faults", "SHARDLINE_FAULTS", "", "inject AWS failures into the HTTP calls, e.g. seed=1,kinesis=0.05,dynamodb=0.02 (see internal/faults)")
	str(&o.sinkTable, "sink-table", "SHARDLINE_SINK_TABLE", "", "also count each partition key's records in this DynamoDB table (hash key k), committed with the checkpoint in one transaction (see sink.go)")
	str(&o.metricsAddr, "metrics-addr", "SHARDLINE_METRICS_ADDR", "", "serve Prometheus metrics on http://ADDR/metrics, e.g. 127.0.0.1:9090 (default: off)")
	boolean(&o.fanOut, "fanout", "SHARDLINE_FANOUT", "read by enhanced fan-out (SubscribeToShard) instead of polling")
	boolean(&o.emulatorFanOutShim, "emulator-fanout-shim", "SHARDLINE_EMULATOR_FANOUT_SHIM",
		"kinesis-mock only, with -fanout: add the initial-response event the emulator omits (test-only client wrapper; needs -kinesis-endpoint)")
	integer := func(p *int, name, env, help string) {
		fs.IntVar(p, name, fromEnv(env, 0, strconv.Atoi, &envErrs), help+" (env "+env+")")
	}
	integer(&o.parallelism, "parallelism", "SHARDLINE_PARALLELISM", "batches of one shard processed at once (worker.DeliveryPolicy.Parallelism; 0: one)")
	integer(&o.maxAttempts, "max-attempts", "SHARDLINE_MAX_ATTEMPTS", "give a failing record up after this many attempts (needs -dead-letter-stream; 0: never)")
	boolean(&o.bisect, "bisect", "SHARDLINE_BISECT", "split failing batches to isolate the failing records")
	str(&o.failures, "failures", "SHARDLINE_FAILURES", "", "fail chosen records: poison=P,flaky=F in permille (see internal/fleet.Failures)")
	str(&o.deadLetterStream, "dead-letter-stream", "SHARDLINE_DEAD_LETTER_STREAM", "", "write given-up records to this Kinesis stream")
	dur(&o.leaseDuration, "lease-duration", "SHARDLINE_LEASE_DURATION", 10*time.Second, "how long a lease lasts without renewal")
	dur(&o.idleTime, "idle-time", "SHARDLINE_IDLE_TIME", time.Second, "pause after a read that returned nothing")
	dur(&o.work, "work", "SHARDLINE_WORK", 0, "simulated processing time per batch, before its checkpoint")
	fs.IntVar(&o.failBatches, "fail-batches", 0, "the first N deliveries of records in this process fail (each batch is delivered again): a stall to observe")
	dur(&o.checkpointInterval, "checkpoint-interval", "SHARDLINE_CHECKPOINT_INTERVAL", 0, "checkpoint at most this often (0: after every batch)")
	dur(&o.shardSyncInterval, "shard-sync-interval", "SHARDLINE_SHARD_SYNC_INTERVAL", 0, "how often the shard list (and the -streams-file) is read again (0: the worker's default)")
	dur(&o.shutdownTimeout, "shutdown-timeout", "SHARDLINE_SHUTDOWN_TIMEOUT", 20*time.Second, "how long a graceful shutdown may take")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return o, err
	}
	if len(envErrs) > 0 {
		return o, errors.Join(envErrs...)
	}
	if (o.stream == "") == (o.streamsFile == "") || o.app == "" {
		return o, errors.New("-app and one of -stream and -streams-file are required")
	}
	if o.faults != "" && o.fanOut {
		return o, errors.New("-faults covers polling only, not -fanout")
	}
	if _, err := fleet.ParseFailures(o.failures); err != nil {
		return o, err
	}
	if o.emulatorFanOutShim && o.kinesisEndpoint == "" {
		return o, errors.New("-emulator-fanout-shim is for kinesis-mock only: it needs -kinesis-endpoint")
	}
	return o, nil
}

// fromEnv returns the value of the environment variable env parsed by
// parse, or def when it is unset; a value parse rejects is added to errs.
func fromEnv[T any](env string, def T, parse func(string) (T, error), errs *[]error) T {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	t, err := parse(v)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s: %w", env, err))
		return def
	}
	return t
}

func run() int {
	opts, err := parseFlags()
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetworker:", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	// Listen for signals first: one that arrives while the program starts
	// is then a clean stop rather than the default action (dying at once).
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)

	var initial kcl.InitialPosition
	switch strings.ToLower(opts.initialPosition) {
	case "trim_horizon":
		initial = kcl.StartAtTrimHorizon()
	case "latest":
		initial = kcl.StartAtLatest()
	default:
		fmt.Fprintf(os.Stderr, "fleetworker: -initial-position %q: want trim_horizon or latest\n", opts.initialPosition)
		return 2
	}

	ctx := context.Background()
	// Test and chaos runs: inject the failures real AWS produces.
	fk, fd, err := newFaults(opts.faults)
	if err != nil {
		log.Error("invalid -faults", "err", err)
		return 2
	}
	kc, dc, err := newClients(ctx, opts, fk, fd)
	if err != nil {
		log.Error("cannot configure AWS clients", "err", err)
		return 1
	}

	events, err := openEventLog(opts.eventsPath)
	if err != nil {
		log.Error("cannot open events file", "err", err)
		return 1
	}
	defer events.Close()

	// Metrics: the worker feeds them through its hooks; this program, not
	// the library, decides where they are served.
	var hooks []worker.Hook
	if opts.metricsAddr != "" {
		m, err := metrics.New()
		if err != nil {
			log.Error("cannot set up metrics", "err", err)
			return 1
		}
		stop, err := serveMetrics(opts.metricsAddr, m.Handler(), log)
		if err != nil {
			log.Error("cannot serve metrics", "err", err)
			return 1
		}
		defer stop()
		hooks = append(hooks, m)
	}

	failures, _ := fleet.ParseFailures(opts.failures) // checked by parseFlags
	delivery := worker.DeliveryPolicy{Parallelism: opts.parallelism, MaxAttempts: opts.maxAttempts, BisectOnError: opts.bisect}
	if opts.deadLetterStream != "" {
		dlq, err := producer.New(producer.Config{StreamName: opts.deadLetterStream, Client: kc, Logger: log})
		if err != nil {
			log.Error("invalid dead-letter stream", "err", err)
			return 2
		}
		defer func() {
			if err := dlq.Close(context.Background()); err != nil {
				log.Error("dead-letter producer", "err", err)
			}
		}()
		delivery.DeadLetters = dlq
	}
	flaky := &flakySet{failed: map[string]bool{}}

	counts := newShardCounts()
	var failBatches atomic.Int64
	failBatches.Store(int64(opts.failBatches))
	var workerID string // set once the worker exists; the factory runs later
	// factory makes the processors of one stream; stream is empty for a
	// single-stream worker.
	factory := func(stream string) kcl.ProcessorFactory {
		return func(shardID string) (kcl.RecordProcessor, error) {
			return &processor{
				stream:             stream,
				shardID:            shardID,
				worker:             workerID,
				checkpointInterval: opts.checkpointInterval,
				sink:               opts.sinkTable,
				work:               opts.work,
				failures:           failures,
				bisect:             opts.bisect,
				flaky:              flaky,
				failBatches:        &failBatches,
				counts:             counts,
				events:             events,
				log:                log.With("stream", stream, "shard", shardID),
			}, nil
		}
	}
	cfg := worker.Config{
		StreamName:           streamName(opts.stream),
		StreamARN:            streamARN(opts.stream),
		ProcessorFactory:     factory(""),
		ApplicationName:      opts.app,
		WorkerID:             opts.workerID,
		Kinesis:              kc,
		DynamoDB:             dc,
		InitialPosition:      initial,
		LeaseDuration:        opts.leaseDuration,
		IdleTimeBetweenReads: opts.idleTime,
		Logger:               log,
		Hooks:                hooks,
		FanOut:               fanOutOptions(opts.fanOut),
		Delivery:             delivery,
		ShardSyncInterval:    opts.shardSyncInterval,
	}
	if opts.streamsFile != "" {
		// Multi-stream: each stream's factory is a closure that knows it.
		if _, err := readStreams(opts.streamsFile, factory); err != nil {
			log.Error("cannot read streams file", "err", err)
			return 2
		}
		cfg.ProcessorFactory = nil
		cfg.StreamsFunc = func(context.Context) ([]worker.StreamConfig, error) {
			return readStreams(opts.streamsFile, factory)
		}
	}
	w, err := worker.New(cfg)
	if err != nil {
		log.Error("invalid configuration", "err", err)
		return 2
	}
	workerID = w.ID()
	log = log.With("worker", workerID)
	events.Write(fleet.Event{Type: fleet.EventStart, Worker: workerID, PID: os.Getpid()})
	_ = events.Flush()
	log.Info("consumer starting", "stream", opts.stream, "streams_file", opts.streamsFile, "app", opts.app, "initial_position", initial.String())

	// Run in the background; the main goroutine waits for a signal.
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(runCtx) }()

	status := 0
	select {
	case err := <-runErr:
		// The worker stopped on its own: it could not start or run.
		if err != nil {
			log.Error("worker stopped", "err", err)
			status = 1
		}
	case sig := <-signals:
		log.Info("signal received, shutting down", "signal", sig.String(), "timeout", opts.shutdownTimeout)
		shutdownCtx, cancel := context.WithTimeout(ctx, opts.shutdownTimeout)
		if err := w.Shutdown(shutdownCtx); err != nil {
			log.Error("graceful shutdown incomplete", "err", err)
			status = 1
		}
		cancel()
		cancelRun() // Run returns promptly after Shutdown; this is only a backstop.
		// ErrShutdown: the signal came before Run had even started.
		if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, kcl.ErrShutdown) {
			log.Error("worker stopped", "err", err)
			status = 1
		}
	}

	events.Write(fleet.Event{Type: fleet.EventStop, Worker: workerID, PID: os.Getpid()})
	if err := events.Flush(); err != nil {
		log.Error("events file", "err", err)
	}
	if fk != nil {
		log.Info("injected faults", "kinesis", faults.Summary(fk.Stats()), "dynamodb", faults.Summary(fd.Stats()))
	}
	counts.print(os.Stdout, workerID)
	log.Info("consumer stopped", "records", counts.total(), "exit_status", status)
	return status
}

// serveMetrics serves h at /metrics on addr until the returned function is
// called.
func serveMetrics(addr string, h http.Handler, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// newClients makes the Kinesis and DynamoDB clients. Without endpoints they
// talk to AWS with the default credential chain; with endpoints (local
// emulators) they use dummy static credentials in us-east-1. Their HTTP calls
// go through fk and fd when those are set.
func newClients(ctx context.Context, opts options, fk, fd *faults.Client) (*kinesis.Client, *dynamodb.Client, error) {
	local := opts.kinesisEndpoint != "" || opts.dynamoEndpoint != ""
	var cfg aws.Config
	if local {
		// The emulators accept any credentials, but DynamoDB Local keeps a
		// separate set of tables per access key: use the same key as the
		// project's tests and tools so that they all see one lease table.
		cfg = aws.Config{
			Region:      "us-east-1",
			Credentials: credentials.NewStaticCredentialsProvider("shardline", "shardline", ""),
		}
	} else {
		var err error
		if cfg, err = config.LoadDefaultConfig(ctx); err != nil {
			return nil, nil, err
		}
	}
	kc := kinesis.NewFromConfig(cfg, func(o *kinesis.Options) {
		if opts.kinesisEndpoint != "" {
			o.BaseEndpoint = aws.String(opts.kinesisEndpoint)
		}
		if fk != nil {
			o.HTTPClient = fk
		}
		if opts.emulatorFanOutShim {
			// Test-only: kinesis-mock omits the initial-response event of
			// SubscribeToShard. Never on the way to real Kinesis (parseFlags
			// refuses it without -kinesis-endpoint).
			o.HTTPClient = &efotest.InitialResponseClient{Next: o.HTTPClient}
		}
	})
	dc := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		if opts.dynamoEndpoint != "" {
			o.BaseEndpoint = aws.String(opts.dynamoEndpoint)
			// DynamoDB Local's error responses fail the SDK's checksum check.
			o.DisableValidateResponseChecksum = true
		}
		if fd != nil {
			o.HTTPClient = fd
		}
	})
	return kc, dc, nil
}

// newFaults returns the fault injectors of spec (see internal/faults), or
// nils when spec is empty.
func newFaults(spec string) (fk, fd *faults.Client, err error) {
	if spec == "" {
		return nil, nil, nil
	}
	cfg, err := faults.Parse(spec)
	if err != nil {
		return nil, nil, err
	}
	if fk, err = faults.NewKinesis(cfg, nil); err != nil {
		return nil, nil, err
	}
	fd, err = faults.NewDynamoDB(cfg, nil)
	return fk, fd, err
}

// readStreams reads the streams file: one stream name or ARN a line; blank
// lines and lines starting with # are skipped. Each stream's processors come
// from factory(stream).
func readStreams(path string, factory func(stream string) kcl.ProcessorFactory) ([]worker.StreamConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var streams []worker.StreamConfig
	for line := range strings.Lines(string(b)) {
		name := strings.TrimSpace(line)
		if name == "" || strings.HasPrefix(name, "#") {
			continue
		}
		streams = append(streams, worker.StreamConfig{Stream: name, ProcessorFactory: factory(name)})
	}
	return streams, nil
}

func streamName(s string) string {
	if strings.HasPrefix(s, "arn:") {
		return ""
	}
	return s
}

func streamARN(s string) string {
	if strings.HasPrefix(s, "arn:") {
		return s
	}
	return ""
}

// processor handles one shard (of stream, in a multi-stream worker). With -parallelism the worker calls
// ProcessRecords from several goroutines at once; mu guards the fields that
// change.
type processor struct {
	stream, shardID    string
	worker             string
	checkpointInterval time.Duration
	work               time.Duration
	counts             *shardCounts
	events             *eventLog
	log                *slog.Logger
	sink               string // sink table; see sink.go
	failures           fleet.Failures
	bisect             bool
	flaky              *flakySet
	failBatches        *atomic.Int64 // deliveries of records still to fail in the process (-fail-batches), when positive

	mu             sync.Mutex
	lastCheckpoint time.Time
	batches        int // ProcessRecords calls so far, numbering the batches in the events file
}

// flakySet remembers the flaky records this process has failed once.
type flakySet struct {
	mu     sync.Mutex
	failed map[string]bool
}

// failFirst reports whether a flaky record fails now: the first time only.
func (f *flakySet) failFirst(seq string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failed[seq] {
		return false
	}
	f.failed[seq] = true
	return true
}

// firstFailure returns the index of the first record of recs this
// processor fails now, or -1.
func (p *processor) firstFailure(recs []kcl.Record) int {
	for i, r := range recs {
		d := string(r.Data)
		if p.failures.Poison(d) || (p.failures.Flaky(d) && p.flaky.failFirst(r.Position().String())) {
			return i
		}
	}
	return -1
}

// The optional lifecycle interfaces this processor implements.
var (
	_ kcl.RecordProcessor          = (*processor)(nil)
	_ kcl.Initializer              = (*processor)(nil)
	_ kcl.LeaseLostHandler         = (*processor)(nil)
	_ kcl.ShutdownRequestedHandler = (*processor)(nil)
	_ kcl.ShardEndedHandler        = (*processor)(nil)
)

// Initialize is called once before the first batch, with the position the
// shard resumes after.
func (p *processor) Initialize(ctx context.Context, in kcl.InitializeInput) error {
	p.log.Info("shard starting", "checkpoint", in.Checkpoint.String())
	p.write(fleet.Event{Type: fleet.EventInitialize, Checkpoint: in.Checkpoint.String()})
	return p.events.Flush()
}

// ProcessRecords handles one ordered batch. The work is done (here: counted
// and written to the events file) before the checkpoint is stored, so a
// crash at any point loses nothing: at worst the batch is delivered again.
func (p *processor) ProcessRecords(ctx context.Context, in kcl.ProcessRecordsInput) error {
	if len(in.Records) == 0 {
		return nil
	}
	if left := p.failBatches.Add(-1); left >= 0 {
		return fmt.Errorf("fleetworker: -fail-batches: %d more failures to come", left)
	}
	p.mu.Lock()
	p.batches++
	batch := p.batches
	p.mu.Unlock()
	recs, failed := in.Records, error(nil)
	if i := p.firstFailure(recs); i >= 0 {
		// The records before the failing one are processed; a partial
		// failure says so. With -bisect every other failure fails the
		// whole batch instead, for the worker to isolate the record.
		r := recs[i]
		failed = &kcl.PartialFailureError{Position: r.Position(), Err: fmt.Errorf("record %s (%s) fails", r.Position(), r.Data)}
		if p.bisect && i%2 == 1 {
			i, failed = 0, fmt.Errorf("batch fails at record %s (%s)", r.Position(), r.Data)
		}
		recs = recs[:i]
	}
	for _, r := range recs {
		p.write(fleet.Event{
			Type: fleet.EventRecord, Batch: batch,
			Seq: r.Position().String(), PK: r.PartitionKey, Data: string(r.Data), Attempt: in.Attempt,
		})
	}
	if failed != nil {
		if err := p.events.Flush(); err != nil {
			return err
		}
		p.counts.add(p.countKey(), len(recs))
		return failed
	}
	// Returning an error makes the worker deliver the same batch again.
	if err := p.events.Flush(); err != nil {
		return err
	}
	p.counts.add(p.countKey(), len(in.Records))
	if p.work > 0 {
		select { // simulated work; cut short when the lease is lost
		case <-ctx.Done():
		case <-time.After(p.work):
		}
	}

	if p.sink != "" {
		return p.commitToSink(ctx, in)
	}
	p.mu.Lock()
	later := time.Since(p.lastCheckpoint) < p.checkpointInterval
	p.mu.Unlock()
	if later {
		return nil // checkpoint later; a crash until then re-delivers these records
	}
	if err := in.Checkpointer.Checkpoint(ctx); err != nil {
		// The records were processed; without the checkpoint they are
		// delivered again after a failover. When the lease is lost the worker
		// stops this shard by itself.
		p.log.Warn("checkpoint failed", "err", err)
		p.write(fleet.Event{Type: fleet.EventCheckpointFailed})
		return p.events.Flush()
	}
	p.checkpointed(in.Checkpointer)
	p.log.Debug("batch processed", "records", len(in.Records), "millis_behind_latest", in.MillisBehindLatest)
	return nil
}

// LeaseLost is called when another worker took the shard (or the lease could
// not be renewed in time). Checkpointing is no longer possible.
func (p *processor) LeaseLost(ctx context.Context, in kcl.LeaseLostInput) error {
	p.log.Warn("lease lost")
	p.write(fleet.Event{Type: fleet.EventLeaseLost})
	return p.events.Flush()
}

// ShutdownRequested is called when the worker gives the shard up on purpose;
// the checkpointer still works: storing the final position here means the
// next owner of the shard delivers none of these records again.
func (p *processor) ShutdownRequested(ctx context.Context, in kcl.ShutdownRequestedInput) error {
	p.log.Info("shutdown requested")
	if p.sink != "" { // the last delivered batch may not be committed to the sink
		p.write(fleet.Event{Type: fleet.EventShutdownRequested})
		return p.events.Flush()
	}
	return p.finalCheckpoint(ctx, fleet.Event{Type: fleet.EventShutdownRequested}, in.Checkpointer)
}

// ShardEnded is called when the shard was read to its end (after a split or
// merge). Checkpointing now stores SHARD_END and lets its children start.
func (p *processor) ShardEnded(ctx context.Context, in kcl.ShardEndedInput) error {
	p.log.Info("shard ended", "children", in.ChildShardIDs)
	return p.finalCheckpoint(ctx, fleet.Event{Type: fleet.EventShardEnded, Children: in.ChildShardIDs}, in.Checkpointer)
}

// finalCheckpoint writes ev to the events file, then checkpoints with c.
func (p *processor) finalCheckpoint(ctx context.Context, ev fleet.Event, c kcl.Checkpointer) error {
	p.write(ev)
	if err := p.events.Flush(); err != nil {
		return err
	}
	if err := c.Checkpoint(ctx); err != nil {
		return err
	}
	p.checkpointed(c)
	return nil
}

// checkpointed records a successful checkpoint in the events file.
func (p *processor) checkpointed(c kcl.Checkpointer) {
	p.mu.Lock()
	p.lastCheckpoint = time.Now()
	p.mu.Unlock()
	p.write(fleet.Event{Type: fleet.EventCheckpoint, Position: c.Last().String()})
	if err := p.events.Flush(); err != nil {
		p.log.Warn("events file", "err", err)
	}
}

// write buffers ev as an event of this processor's worker, stream and shard.
func (p *processor) write(ev fleet.Event) {
	ev.Worker, ev.Stream, ev.Shard = p.worker, p.stream, p.shardID
	p.events.Write(ev)
}

// countKey names the shard in the counts the program prints: the shard ID,
// after the stream's name in a multi-stream worker.
func (p *processor) countKey() string {
	if p.stream == "" {
		return p.shardID
	}
	return p.stream + "/" + p.shardID
}

// shardCounts counts processed records per shard. Processors of different
// shards run concurrently, hence the mutex.
type shardCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func newShardCounts() *shardCounts { return &shardCounts{n: make(map[string]int)} }

func (c *shardCounts) add(shard string, n int) {
	c.mu.Lock()
	c.n[shard] += n
	c.mu.Unlock()
}

func (c *shardCounts) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := 0
	for _, n := range c.n {
		t += n
	}
	return t
}

func (c *shardCounts) print(f *os.File, workerID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tw := tabwriter.NewWriter(f, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "worker %s processed:\nSHARD\tRECORDS\n", workerID)
	total := 0
	for _, shard := range slices.Sorted(maps.Keys(c.n)) {
		fmt.Fprintf(tw, "%s\t%d\n", shard, c.n[shard])
		total += c.n[shard]
	}
	fmt.Fprintf(tw, "total\t%d\n", total)
	_ = tw.Flush()
}

// eventLog appends JSON lines to a file. Write buffers in memory; Flush
// hands the whole buffer to the operating system in one write, after which a
// SIGKILL cannot lose it. A nil *eventLog (no -events flag) does nothing.
type eventLog struct {
	mu  sync.Mutex
	f   *os.File
	buf bytes.Buffer
}

func openEventLog(path string) (*eventLog, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	l := &eventLog{f: f}
	// A process killed in the middle of a write may have left a partial last
	// line; start on a fresh line so that it stays the only damaged one.
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, st.Size()-1); err == nil && last[0] != '\n' {
			l.buf.WriteByte('\n')
		}
	}
	return l, nil
}

// Write buffers one event, stamped with the current time.
func (l *eventLog) Write(e fleet.Event) {
	if l == nil {
		return
	}
	e.Time = time.Now().UTC()
	line, _ := json.Marshal(e) // cannot fail: strings, ints, a time and a slice
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(line)
	l.buf.WriteByte('\n')
}

// Flush writes the buffered events to the file.
func (l *eventLog) Flush() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() == 0 {
		return nil
	}
	_, err := l.f.Write(l.buf.Bytes())
	l.buf.Reset()
	return err
}

// Close flushes and closes the file.
func (l *eventLog) Close() error {
	if l == nil {
		return nil
	}
	err := l.Flush()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// fanOutOptions selects enhanced fan-out with its defaults when on is set.
func fanOutOptions(on bool) *fanout.Options {
	if !on {
		return nil
	}
	return &fanout.Options{}
}
