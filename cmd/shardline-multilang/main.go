// Command shardline-multilang is a MultiLangDaemon without a JVM. It reads
// the .properties file of the Java KCL's MultiLangDaemon, runs a Shardline
// worker, and for every shard it holds starts the configured executable
// (executableName) and speaks the KCL MultiLang protocol with it over JSON
// lines: record processors written with amazon-kclpy (Python), aws-kcl
// (Node.js) or any other implementation of the child side run unchanged.
//
// Usage:
//
//	shardline-multilang [flags] app.properties
//	shardline-multilang [flags] -properties app.properties
//
// Flags override the file. SIGTERM or SIGINT stop gracefully: every child
// receives shutdownRequested and may checkpoint, then the leases are
// released so that other daemons take the shards at once.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/internal/multilang"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/metrics"
	"github.com/shardline/shardline/worker"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// defaultChildTimeout applies when timeoutInSeconds is not set.
const defaultChildTimeout = 5 * time.Minute

// options are the command line.
type options struct {
	properties      string
	metricsAddr     string
	logLevel        string
	logFormat       string
	shutdownTimeout time.Duration
	ignoreUnknown   bool
	overrides       map[string]string // property key -> value, from flags given
}

// flagProperties maps override flags to the property they replace.
var flagProperties = []struct{ flag, key, help string }{
	{"executable", "executableName", "the record processor command line (executableName)"},
	{"stream", "streamName", "stream name (streamName)"},
	{"stream-arn", "streamArn", "stream ARN (streamArn)"},
	{"app", "applicationName", "application name (applicationName)"},
	{"table", "tableName", "lease table (tableName; default: the application name)"},
	{"worker-id", "workerId", "worker ID in the lease table (workerId)"},
	{"region", "regionName", "AWS region (regionName)"},
	{"kinesis-endpoint", "kinesisEndpoint", "Kinesis endpoint URL (kinesisEndpoint)"},
	{"dynamodb-endpoint", "dynamoDBEndpoint", "DynamoDB endpoint URL (dynamoDBEndpoint)"},
	{"initial-position", "initialPositionInStream", "TRIM_HORIZON, LATEST or AT_TIMESTAMP (initialPositionInStream)"},
	{"initial-timestamp", "initialPositionInStreamExtended", "AT_TIMESTAMP start, epoch seconds (initialPositionInStreamExtended)"},
	{"max-records", "maxRecords", "records per GetRecords call (maxRecords)"},
	{"idle-time-millis", "idleTimeBetweenReadsInMillis", "pause after an empty read, ms (idleTimeBetweenReadsInMillis)"},
	{"failover-time-millis", "failoverTimeMillis", "lease duration, ms (failoverTimeMillis)"},
	{"timeout-seconds", "timeoutInSeconds", "longest silence of a child during an action, s (timeoutInSeconds)"},
	{"credentials", "AWSCredentialsProvider", "credentials provider (AWSCredentialsProvider)"},
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{overrides: make(map[string]string)}
	fs := flag.NewFlagSet("shardline-multilang", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.properties, "properties", "", "the MultiLangDaemon .properties file (or give it as the argument)")
	fs.StringVar(&o.properties, "properties-file", "", "same as -properties (the Java daemon's spelling)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://ADDR/metrics and health on /healthz (default: off)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 0, "how long a graceful stop may take (default: shutdownGraceMillis, else 30s)")
	fs.BoolVar(&o.ignoreUnknown, "ignore-unknown-properties", false, "warn about unknown keys instead of refusing to start")
	vals := make(map[string]*string, len(flagProperties))
	for _, fp := range flagProperties {
		vals[fp.flag] = fs.String(fp.flag, "", fp.help)
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	fs.Visit(func(f *flag.Flag) {
		if v, ok := vals[f.Name]; ok {
			for _, fp := range flagProperties {
				if fp.flag == f.Name {
					o.overrides[fp.key] = *v
				}
			}
		}
	})
	switch {
	case fs.NArg() == 1 && o.properties == "":
		o.properties = fs.Arg(0)
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, nil
}

// loadConfig reads the properties file (if any) and applies the overrides.
func loadConfig(o options, log *slog.Logger) (*multilang.Config, error) {
	cfg := &multilang.Config{}
	if o.properties != "" {
		f, err := os.Open(o.properties)
		if err != nil {
			return nil, err
		}
		cfg, err = multilang.ReadConfig(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.properties, err)
		}
	}
	for _, fp := range flagProperties { // in a fixed order
		if v, ok := o.overrides[fp.key]; ok {
			if err := cfg.Set(fp.key, v); err != nil {
				return nil, fmt.Errorf("-%s: %w", fp.flag, err)
			}
		}
	}
	for _, k := range cfg.Ignored {
		log.Warn("property has no effect in shardline-multilang", "property", k)
	}
	if len(cfg.Unknown) > 0 {
		if !o.ignoreUnknown {
			return nil, fmt.Errorf("unknown properties %s (neither daemon knows them: a typo?; "+
				"-ignore-unknown-properties starts anyway)", strings.Join(cfg.Unknown, ", "))
		}
		log.Warn("unknown properties ignored", "properties", cfg.Unknown)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// A missing program would otherwise fail every shard, over and over.
	if _, err := exec.LookPath(cfg.Command()[0]); err != nil {
		return nil, fmt.Errorf("executableName %q: %w", cfg.Executable, err)
	}
	return cfg, nil
}

func newLogger(o options, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: want text or json", o.logFormat)
}

func run(args []string, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "shardline-multilang:", err)
		return 2
	}
	log, err := newLogger(o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "shardline-multilang:", err)
		return 2
	}
	// Signals first: one that arrives during start-up is then a clean stop.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)

	cfg, err := loadConfig(o, log)
	if err != nil {
		log.Error("invalid configuration", "err", err)
		return 2
	}
	shutdownTimeout := o.shutdownTimeout
	if shutdownTimeout == 0 {
		shutdownTimeout = cfg.ShutdownGrace
	}
	if shutdownTimeout == 0 {
		shutdownTimeout = 30 * time.Second
	}

	ctx := context.Background()
	kc, dc, err := newClients(ctx, cfg)
	if err != nil {
		log.Error("cannot configure AWS clients", "err", err)
		return 1
	}
	childTimeout := cfg.ChildTimeout
	if childTimeout == 0 {
		// The Java daemon waits forever by default; a hung child would then
		// hold its shard (and keep renewing the lease) for ever.
		childTimeout = defaultChildTimeout
	}
	factory, err := multilang.NewFactory(multilang.Options{
		Command: cfg.Command(),
		Timeout: childTimeout,
		Logger:  log,
	})
	if err != nil {
		log.Error("invalid configuration", "err", err)
		return 2
	}
	defer factory.Close()

	var hooks []worker.Hook
	var healthy atomic.Bool
	if o.metricsAddr != "" {
		m, err := metrics.New()
		if err != nil {
			log.Error("cannot set up metrics", "err", err)
			return 1
		}
		ln, err := net.Listen("tcp", o.metricsAddr)
		if err != nil {
			log.Error("cannot serve metrics", "err", err)
			return 1
		}
		defer serve(ln, m.Handler(), &healthy, log).Close()
		hooks = append(hooks, m)
	}

	wc := worker.Config{
		ApplicationName:      cfg.ApplicationName,
		TableName:            cfg.TableName,
		WorkerID:             cfg.WorkerID,
		Kinesis:              kc,
		DynamoDB:             dc,
		ProcessorFactory:     factory.New,
		InitialPosition:      cfg.InitialPosition,
		LeaseDuration:        cfg.FailoverTime,
		MaxRecords:           cfg.MaxRecords,
		IdleTimeBetweenReads: cfg.IdleTimeBetweenReads,
		Logger:               log,
		Hooks:                hooks,
	}
	if cfg.StreamARN != "" {
		wc.StreamARN = cfg.StreamARN // takes precedence, as in the Java daemon
	} else {
		wc.StreamName = cfg.StreamName
	}
	w, err := worker.New(wc)
	if err != nil {
		log.Error("invalid configuration", "err", err)
		return 2
	}
	log.Info("shardline-multilang starting", "worker", w.ID(), "stream", wc.StreamName+wc.StreamARN,
		"application", cfg.ApplicationName, "executable", cfg.Executable, "language", cfg.ProcessingLanguage,
		"initial_position", cfg.InitialPosition.String())

	runErr := make(chan error, 1)
	healthy.Store(true)
	go func() { runErr <- w.Run(ctx) }()

	status := 0
	select {
	case err := <-runErr:
		healthy.Store(false)
		if err != nil {
			log.Error("worker stopped", "err", err)
			status = 1
		}
	case sig := <-signals:
		log.Info("signal received; stopping gracefully", "signal", sig.String(), "timeout", shutdownTimeout)
		sctx, cancel := context.WithTimeout(ctx, shutdownTimeout)
		go func() { // a second signal cuts the graceful stop short
			select {
			case <-signals:
				log.Warn("second signal: stopping at once")
				cancel()
			case <-sctx.Done():
			}
		}()
		if err := w.Shutdown(sctx); err != nil {
			log.Error("graceful stop incomplete", "err", err)
			status = 1
		}
		cancel()
		healthy.Store(false)
		if err := <-runErr; err != nil && !errors.Is(err, kcl.ErrShutdown) {
			log.Error("worker stopped", "err", err)
			status = 1
		}
	}
	log.Info("shardline-multilang stopped", "exit_status", status)
	return status
}

// newClients makes the Kinesis and DynamoDB clients from the configuration.
func newClients(ctx context.Context, cfg *multilang.Config) (*kinesis.Client, *dynamodb.Client, error) {
	kcfg, err := awsConfig(ctx, cfg.Credentials, cfg.Region)
	if err != nil {
		return nil, nil, fmt.Errorf("kinesis: %w", err)
	}
	dcreds := cfg.DynamoDBCredentials
	if dcreds.Kind == "" {
		dcreds = cfg.Credentials
	}
	dregion := cfg.DynamoDBRegion
	if dregion == "" {
		dregion = cfg.Region
	}
	dcfg, err := awsConfig(ctx, dcreds, dregion)
	if err != nil {
		return nil, nil, fmt.Errorf("dynamodb: %w", err)
	}
	kc := kinesis.NewFromConfig(kcfg, func(o *kinesis.Options) {
		if cfg.KinesisEndpoint != "" {
			o.BaseEndpoint = aws.String(cfg.KinesisEndpoint)
		}
	})
	dc := dynamodb.NewFromConfig(dcfg, func(o *dynamodb.Options) {
		if cfg.DynamoDBEndpoint != "" {
			o.BaseEndpoint = aws.String(cfg.DynamoDBEndpoint)
			// DynamoDB Local's error responses fail the SDK's checksum check.
			o.DisableValidateResponseChecksum = true
		}
	})
	return kc, dc, nil
}

// awsConfig loads the SDK configuration for one credentials setting.
func awsConfig(ctx context.Context, cr multilang.Credentials, region string) (aws.Config, error) {
	var opts []func(*config.LoadOptions) error
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	switch cr.Kind {
	case "env":
		env, err := config.NewEnvConfig()
		if err != nil {
			return aws.Config{}, err
		}
		if !env.Credentials.HasKeys() {
			return aws.Config{}, errors.New("EnvironmentVariableCredentialsProvider: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set")
		}
		opts = append(opts, config.WithCredentialsProvider(credentials.StaticCredentialsProvider{Value: env.Credentials}))
	case "profile":
		if cr.Profile != "" {
			opts = append(opts, config.WithSharedConfigProfile(cr.Profile))
		}
	}
	return config.LoadDefaultConfig(ctx, opts...)
}

// serve serves the metrics at /metrics and the daemon's health at /healthz
// on ln until the returned server is closed.
func serve(ln net.Listener, metricsHandler http.Handler, healthy *atomic.Bool, log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", metricsHandler)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !healthy.Load() {
			http.Error(w, "stopped", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Info("serving metrics and health", "metrics", "http://"+ln.Addr().String()+"/metrics",
		"health", "http://"+ln.Addr().String()+"/healthz")
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return srv
}
