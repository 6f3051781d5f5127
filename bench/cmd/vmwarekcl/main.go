// Command vmwarekcl is the peer consumer of the benchmarks: the same job as
// Shardline's examples/consumer (write one JSON line per delivered record to
// an events file, checkpoint after every batch, stop on SIGTERM), built on
// github.com/vmware/vmware-go-kcl-v2. It accepts the flags internal/fleet
// passes to a consumer, so the same harness starts, kills and checks both.
//
// vmware-go-kcl-v2's settings are at their defaults unless a flag below sets
// them; -lease-duration maps to FailoverTimeMillis, and -shard-sync-interval,
// -lease-refresh and -idle-time to ShardSyncIntervalMillis,
// LeaseRefreshWaitTime and IdleTimeBetweenReadsInMillis.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/vmware/vmware-go-kcl-v2/clientlibrary/config"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"
	wk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/worker"
	"github.com/vmware/vmware-go-kcl-v2/logger"
)

func main() { os.Exit(run()) }

func run() int {
	fs := flag.NewFlagSet("vmwarekcl", flag.ContinueOnError)
	stream := fs.String("stream", "", "stream name (required)")
	app := fs.String("app", "", "application name, also the lease table (required)")
	workerID := fs.String("worker-id", "", "worker ID")
	kinesisEndpoint := fs.String("kinesis-endpoint", "", "Kinesis endpoint URL")
	dynamoEndpoint := fs.String("dynamodb-endpoint", "", "DynamoDB endpoint URL")
	initial := fs.String("initial-position", "trim_horizon", "trim_horizon or latest")
	events := fs.String("events", "", "events file")
	leaseDuration := fs.Duration("lease-duration", 0, "FailoverTimeMillis (0: library default 10s)")
	idle := fs.Duration("idle-time", 0, "IdleTimeBetweenReadsInMillis (0: library default 1s)")
	shardSync := fs.Duration("shard-sync-interval", 0, "ShardSyncIntervalMillis (0: library default 60s)")
	refresh := fs.Duration("lease-refresh", 0, "LeaseRefreshWaitTime (0: library default 2.5s)")
	_ = fs.Duration("checkpoint-interval", 0, "ignored: checkpoints after every batch")
	shutdownTimeout := fs.Duration("shutdown-timeout", 20*time.Second, "ignored beyond the library's own grace")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if *stream == "" || *app == "" {
		fmt.Fprintln(os.Stderr, "vmwarekcl: -stream and -app are required")
		return 2
	}
	_ = shutdownTimeout

	ev, err := openEvents(*events)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmwarekcl:", err)
		return 1
	}
	defer ev.close()

	creds := credentials.NewStaticCredentialsProvider("shardline", "shardline", "")
	cfg := config.NewKinesisClientLibConfigWithCredential(*app, *stream, "us-east-1", *workerID, creds).
		WithKinesisEndpoint(*kinesisEndpoint).
		WithDynamoDBEndpoint(*dynamoEndpoint).
		WithLogger(logger.NewLogrusLoggerWithConfig(logger.Configuration{EnableConsole: true, ConsoleLevel: logger.Warn}))
	switch strings.ToLower(*initial) {
	case "trim_horizon":
		cfg = cfg.WithInitialPositionInStream(config.TRIM_HORIZON)
	case "latest":
		cfg = cfg.WithInitialPositionInStream(config.LATEST)
	default:
		fmt.Fprintln(os.Stderr, "vmwarekcl: bad -initial-position")
		return 2
	}
	if *leaseDuration > 0 {
		cfg = cfg.WithFailoverTimeMillis(int(leaseDuration.Milliseconds()))
	}
	if *idle > 0 {
		cfg = cfg.WithIdleTimeBetweenReadsInMillis(int(idle.Milliseconds()))
	}
	if *shardSync > 0 {
		cfg = cfg.WithShardSyncIntervalMillis(int(shardSync.Milliseconds()))
	}
	if *refresh > 0 {
		cfg = cfg.WithLeaseRefreshWaitTime(int(refresh.Milliseconds()))
	}

	ev.write(event{Type: "start", Worker: cfg.WorkerID, PID: os.Getpid()})
	w := wk.NewWorker(factory{id: cfg.WorkerID, ev: ev}, cfg)
	// Workers started together race to create the lease table; the losers'
	// Start fails with ResourceInUseException. Starting again finds the table.
	for attempt := 1; ; attempt++ {
		err := w.Start()
		if err == nil {
			break
		}
		if attempt == 5 {
			fmt.Fprintln(os.Stderr, "vmwarekcl: start:", err)
			return 1
		}
		fmt.Fprintln(os.Stderr, "vmwarekcl: start failed, retrying:", err)
		time.Sleep(200 * time.Millisecond)
		w = wk.NewWorker(factory{id: cfg.WorkerID, ev: ev}, cfg)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	w.Shutdown()
	ev.write(event{Type: "stop", Worker: cfg.WorkerID, PID: os.Getpid()})
	return 0
}

type factory struct {
	id string
	ev *eventLog
}

func (f factory) CreateProcessor() kcl.IRecordProcessor { return &processor{worker: f.id, ev: f.ev} }

// processor writes every record to the events file and checkpoints after
// every batch.
type processor struct {
	worker, shard string
	ev            *eventLog
}

func (p *processor) Initialize(in *kcl.InitializationInput) {
	p.shard = in.ShardId
	cp := ""
	if in.ExtendedSequenceNumber != nil {
		cp = aws.ToString(in.ExtendedSequenceNumber.SequenceNumber)
	}
	p.ev.write(event{Type: "initialize", Worker: p.worker, Shard: p.shard, Checkpoint: cp})
}

func (p *processor) ProcessRecords(in *kcl.ProcessRecordsInput) {
	if len(in.Records) == 0 {
		return
	}
	batch := make([]event, 0, len(in.Records))
	for _, r := range in.Records {
		batch = append(batch, event{Type: "record", Worker: p.worker, Shard: p.shard,
			Seq: aws.ToString(r.SequenceNumber), PK: aws.ToString(r.PartitionKey), Data: string(r.Data)})
	}
	p.ev.write(batch...)
	last := in.Records[len(in.Records)-1].SequenceNumber
	if err := in.Checkpointer.Checkpoint(last); err != nil {
		fmt.Fprintln(os.Stderr, "vmwarekcl: checkpoint:", err)
	}
}

func (p *processor) Shutdown(in *kcl.ShutdownInput) {
	if in.ShutdownReason == kcl.TERMINATE {
		_ = in.Checkpointer.Checkpoint(nil)
	}
	p.ev.write(event{Type: "shutdown_requested", Worker: p.worker, Shard: p.shard})
}

// event is one line of the events file, in internal/fleet's format.
type event struct {
	Type       string `json:"type"`
	Time       string `json:"ts"`
	Worker     string `json:"worker"`
	PID        int    `json:"pid,omitempty"`
	Shard      string `json:"shard,omitempty"`
	Seq        string `json:"seq,omitempty"`
	PK         string `json:"pk,omitempty"`
	Data       string `json:"data,omitempty"`
	Checkpoint string `json:"checkpoint,omitempty"`
}

// eventLog appends events to a file, one write per call, so that a SIGKILL
// loses at most the call in progress.
type eventLog struct {
	mu sync.Mutex
	f  *os.File
}

func openEvents(path string) (*eventLog, error) {
	if path == "" {
		return &eventLog{}, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &eventLog{f: f}, nil
}

func (l *eventLog) write(evs ...event) {
	if l.f == nil {
		return
	}
	var b bytes.Buffer
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for _, e := range evs {
		e.Time = now
		line, _ := json.Marshal(e)
		b.Write(line)
		b.WriteByte('\n')
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.f.Write(b.Bytes())
}

func (l *eventLog) close() {
	if l.f != nil {
		_ = l.f.Close()
	}
}
