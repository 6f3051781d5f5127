// Command kclctl is the operator's tool for Shardline applications: it shows
// the lease table (owners, status, checkpoints, lineage, lag), the live workers and
// their share, resets checkpoints to replay a stream, lists or
// deregisters enhanced fan-out consumers, and inspects a lease table left by
// the Java KCL (or by Shardline, for a roll-back to Java).
//
// Usage:
//
//	kclctl leases    --app APP [--stream STREAM] [--lag=true]
//	kclctl workers   --app APP [--probe 5s]
//	kclctl replay    --app APP --stream STREAM (--all | --shard ID...) --to POSITION [--dry-run] [--yes]
//	kclctl consumers [list] --stream STREAM
//	kclctl consumers deregister --stream STREAM --consumer NAME [--yes]
//	kclctl inspect   --app APP [--java 2.x|3.0-3.4|3.5]
//
// POSITION is trim_horizon, latest, an RFC 3339 time (2026-05-01T12:00:00Z),
// a time relative to now (-30m), or a sequence number (optionally
// SEQUENCE/SUB for a user record inside a KPL aggregate) of the one shard
// named with --shard, which is delivered again with everything after it.
//
// The STATUS of `leases` is "stalled:REASON" for a shard its owner reported
// stalled with its last heartbeat (bad-checkpoint, open-failing, checkpoint-failing,
// processor-failing, read-failing, no-progress), or what the table shows:
// unowned, expired (owner declared dead), owner-absent (owner not in the
// fleet row), finished, handoff-pending, waiting-for-parent, ok.
//
// Every command takes --region, --kinesis-endpoint, --dynamodb-endpoint,
// --table (default: the application name), -o table|json and --timeout. AWS
// credentials and region always come from the usual places (environment,
// shared config, SSO, instance or task role); an endpoint flag only changes
// where requests go (us-east-1 when no region is configured). For the local
// emulators, export the credentials the consumer uses: DynamoDB Local keeps
// one database per access key and region. Errors are one line on standard error and a non-zero exit
// status: 1 for a failure, 2 for a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// usageError is a command line the tool refuses.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *env, args []string) error
}

func commands() []command {
	return []command{
		{"leases", "show the lease table: owners, counters, checkpoints, lineage and lag", runLeases},
		{"workers", "show the workers and their share of the leases", runWorkers},
		{"replay", "reset checkpoints so that the application reads again from a position", runReplay},
		{"consumers", "list or deregister enhanced fan-out consumers of a stream", runConsumers},
		{"inspect", "tell whether this version can take over a (Java KCL) lease table, and what a roll-back to Java needs", runInspect},
	}
}

// env is what a command reads and writes.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// run runs kclctl with args (without the program name) and returns the exit
// status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	name := args[0]
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		err := c.run(ctx, e, args[1:])
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, flag.ErrHelp):
			return exitOK
		}
		fmt.Fprintf(stderr, "kclctl %s: %s\n", name, oneLine(err))
		var ue *usageError
		if errors.As(err, &ue) {
			return exitUsage
		}
		return exitFail
	}
	fmt.Fprintf(stderr, "kclctl: unknown command %q (commands: leases, workers, replay, consumers, inspect; see kclctl -h)\n", name)
	return exitUsage
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "kclctl: operate Shardline applications")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "usage: kclctl COMMAND [flags]   (kclctl COMMAND -h for its flags)")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
}

// oneLine flattens an error message to one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// common holds the flags every command takes.
type common struct {
	app, table, stream string
	region             string
	kinesisEndpoint    string
	dynamoEndpoint     string
	output             string
	timeout            time.Duration
	help               func() // prints the command's usage
}

// newFlagSet returns a flag set with the common flags. Its errors are
// reported by run, on one line.
func newFlagSet(e *env, name, synopsis string, c *common) *flag.FlagSet {
	fs := flag.NewFlagSet("kclctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // the flag package calls it on every error; help is printed by parse
	c.help = func() {
		fmt.Fprintf(e.stdout, "usage: kclctl %s %s\n\nflags:\n", name, synopsis)
		fs.SetOutput(e.stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	fs.StringVar(&c.app, "app", "", "application name")
	fs.StringVar(&c.table, "table", "", "lease table (default: the application name)")
	fs.StringVar(&c.stream, "stream", "", "stream name or ARN")
	fs.StringVar(&c.region, "region", "", "AWS region (default: from the AWS configuration; us-east-1 with endpoints if none)")
	fs.StringVar(&c.kinesisEndpoint, "kinesis-endpoint", "", "Kinesis endpoint URL (for a local emulator)")
	fs.StringVar(&c.dynamoEndpoint, "dynamodb-endpoint", "", "DynamoDB endpoint URL (for a local emulator)")
	fs.StringVar(&c.output, "o", "table", "output format: table or json")
	fs.DurationVar(&c.timeout, "timeout", time.Minute, "give up after this long")
	return fs
}

// parse parses args and checks the common flags.
func parse(fs *flag.FlagSet, c *common, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.help()
			return err
		}
		return usagef("%v (see %s -h)", err, fs.Name())
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q (see %s -h)", fs.Arg(0), fs.Name())
	}
	if c.output != "table" && c.output != "json" {
		return usagef("-o %q: want table or json", c.output)
	}
	if c.timeout <= 0 {
		return usagef("--timeout %v must be positive", c.timeout)
	}
	if c.table == "" {
		c.table = c.app
	}
	return nil
}

// needApp checks that the lease table is known.
func (c *common) needApp() error {
	if c.table == "" {
		return usagef("--app (or --table) is required")
	}
	return nil
}

// needStream checks that the stream is known.
func (c *common) needStream() error {
	if c.stream == "" {
		return usagef("--stream is required")
	}
	return nil
}

// confirm asks the operator to type "yes" on stdin.
func confirm(e *env, question string) (bool, error) {
	fmt.Fprintf(e.stderr, "%s Type 'yes' to continue: ", question)
	line, err := readLine(e.stdin)
	if !isTerminal(e.stdin) {
		fmt.Fprintln(e.stderr) // a terminal echoes the operator's newline
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read confirmation: %w", err)
	}
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "yes" || answer == "y", nil
}

// readLine reads up to a newline, one byte at a time so that nothing after
// it is consumed.
func readLine(r io.Reader) (string, error) {
	var sb strings.Builder
	buf := make([]byte, 1)
	for sb.Len() < 1024 {
		n, err := r.Read(buf)
		if n > 0 {
			if buf[0] == '\n' {
				return sb.String(), nil
			}
			sb.WriteByte(buf[0])
		}
		if err != nil {
			return sb.String(), err
		}
	}
	return sb.String(), nil
}

// isTerminal reports whether r is a terminal.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
