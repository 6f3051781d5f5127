package worker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// validConfig is a configuration New accepts; it never reaches AWS.
func validConfig() worker.Config {
	return worker.WithStore(worker.Config{
		StreamName: "orders", ApplicationName: "app", Kinesis: testenv.NewKinesisClient("http://127.0.0.1:1"),
		ProcessorFactory: func(string) (kcl.RecordProcessor, error) { return nil, nil },
	}, lease.NewMemoryStore())
}

// newErr returns New's error for validConfig changed by mutate.
func newErr(mutate func(*worker.Config)) error {
	c := validConfig()
	mutate(&c)
	_, err := worker.New(c)
	return err
}

func TestConfigRefusesAFutureStartTimestamp(t *testing.T) {
	err := newErr(func(c *worker.Config) { c.InitialPosition = kcl.StartAtTimestamp(time.Now().Add(time.Hour)) })
	if !errors.Is(err, kcl.ErrInvalidConfig) || !strings.Contains(err.Error(), "in the future") {
		t.Fatalf("StartAtTimestamp(now + 1h): got %v, want ErrInvalidConfig saying it is in the future", err)
	}
	// Within the clock-skew tolerance, and in the past: accepted.
	for _, at := range []time.Time{time.Now().Add(30 * time.Second), time.Now().Add(-time.Hour)} {
		if err := newErr(func(c *worker.Config) { c.InitialPosition = kcl.StartAtTimestamp(at) }); err != nil {
			t.Errorf("StartAtTimestamp(%v): %v", at, err)
		}
	}
}

func TestConfigRefusesMalformedStreamARNs(t *testing.T) {
	good := "arn:aws:kinesis:us-east-1:000000000000:stream/orders"
	if err := newErr(func(c *worker.Config) { c.StreamName = ""; c.StreamARN = good }); err != nil {
		t.Fatalf("%s refused: %v", good, err)
	}
	for _, arn := range []string{
		"arn:aws:kinesis:us-east-1:000000000000:orders",         // no stream/
		"arn:aws:kinesis:us-east-1:000000000000:stream/",        // no name
		"arn:aws:dynamodb:us-east-1:000000000000:stream/orders", // another service
		"arn:aws:kinesis:us-east-1:123:stream/orders",           // account
		"arn:aws:kinesis::000000000000:stream/orders",           // region
		"arn:aws:kinesis:us-east-1:000000000000:stream/a b",     // name
		"arn:orders",
	} {
		err := newErr(func(c *worker.Config) { c.StreamName = ""; c.StreamARN = arn })
		if !errors.Is(err, kcl.ErrInvalidConfig) || !strings.Contains(err.Error(), "not a Kinesis stream ARN") {
			t.Errorf("%s: got %v, want ErrInvalidConfig naming the ARN", arn, err)
		}
	}
}

func TestConfigStreamNameMustMatchStreamARN(t *testing.T) {
	arn := "arn:aws:kinesis:us-east-1:000000000000:stream/orders"
	if err := newErr(func(c *worker.Config) { c.StreamName = "orders"; c.StreamARN = arn }); err != nil {
		t.Errorf("the same stream by name and ARN refused: %v", err)
	}
	err := newErr(func(c *worker.Config) { c.StreamName = "payments"; c.StreamARN = arn })
	if !errors.Is(err, kcl.ErrInvalidConfig) || !strings.Contains(err.Error(), "different streams") {
		t.Errorf("StreamName and a different StreamARN: got %v, want ErrInvalidConfig", err)
	}
}

func TestConfigValidatesWorkerID(t *testing.T) {
	if err := newErr(func(c *worker.Config) { c.WorkerID = "pod-7f9c/äö" }); err != nil {
		t.Errorf("a printable WorkerID refused: %v", err)
	}
	for name, id := range map[string]string{
		"3000 bytes": strings.Repeat("w", 3000),
		"newline":    "w1\nlevel=ERROR msg=forged",
		"tab":        "w\t1",
		"blank":      "   ",
		"not UTF-8":  "w\xff1",
	} {
		err := newErr(func(c *worker.Config) { c.WorkerID = id })
		if !errors.Is(err, kcl.ErrInvalidConfig) || !strings.Contains(err.Error(), "WorkerID") {
			t.Errorf("%s: got %v, want ErrInvalidConfig about WorkerID", name, err)
		}
	}
}

func TestConfigErrorsSayEachProblemOnce(t *testing.T) {
	for name, tc := range map[string]struct {
		mutate func(*worker.Config)
		want   string // the one problem
	}{
		"timestamp missing": {func(c *worker.Config) { c.InitialPosition = kcl.StartAtTimestamp(time.Time{}) }, "needs a timestamp"},
		"short lease":       {func(c *worker.Config) { c.LeaseDuration = 100 * time.Millisecond }, "LeaseDuration"},
		"negative lease":    {func(c *worker.Config) { c.LeaseDuration = -time.Second }, "LeaseDuration"},
		"negative renewal":  {func(c *worker.Config) { c.RenewInterval = -time.Second }, "RenewInterval"},
		"no application":    {func(c *worker.Config) { c.ApplicationName = "" }, "ApplicationName"},
	} {
		t.Run(name, func(t *testing.T) {
			err := newErr(tc.mutate)
			if !errors.Is(err, kcl.ErrInvalidConfig) {
				t.Fatalf("got %v, want ErrInvalidConfig", err)
			}
			msg := err.Error()
			if n := strings.Count(msg, "invalid configuration"); n != 1 {
				t.Errorf("%q says 'invalid configuration' %d times", msg, n)
			}
			if n := strings.Count(msg, ";") + 1; n != 1 || !strings.Contains(msg, tc.want) {
				t.Errorf("%q: want exactly one problem, about %s", msg, tc.want)
			}
		})
	}
	// Two independent problems are both listed.
	err := newErr(func(c *worker.Config) { c.LeaseDuration = -time.Second; c.RenewInterval = -time.Second })
	if msg := err.Error(); !strings.Contains(msg, "LeaseDuration") || !strings.Contains(msg, "RenewInterval") {
		t.Errorf("%q: want both LeaseDuration and RenewInterval", msg)
	}
}

func TestConfigRefusesANilHook(t *testing.T) {
	err := newErr(func(c *worker.Config) {
		c.Hooks = []worker.Hook{worker.HookFunc(func(worker.Event) {}), nil}
	})
	if !errors.Is(err, kcl.ErrInvalidConfig) || !strings.Contains(err.Error(), "Hooks[1] is nil") {
		t.Errorf("a nil hook: got %v, want ErrInvalidConfig naming Hooks[1]", err)
	}
}

func TestConfigMultiStream(t *testing.T) {
	f := func(string) (kcl.RecordProcessor, error) { return nil, nil }
	streams := []worker.StreamConfig{{Stream: "orders"}, {Stream: "arn:aws:kinesis:us-east-1:111122223333:stream/payments"}}
	if err := newErr(func(c *worker.Config) { c.StreamName = ""; c.Streams = streams }); err != nil {
		t.Fatalf("two streams, one of another account: %v", err)
	}
	// Without a Config-wide factory each stream names one.
	if err := newErr(func(c *worker.Config) {
		c.StreamName, c.ProcessorFactory = "", nil
		c.Streams = []worker.StreamConfig{{Stream: "orders", ProcessorFactory: f}}
	}); err != nil {
		t.Fatalf("per-stream factory: %v", err)
	}
	for name, tc := range map[string]struct {
		mutate func(*worker.Config)
		want   string
	}{
		"mixed": {func(c *worker.Config) { c.Streams = streams }, "mutually exclusive"},
		"mixed func": {func(c *worker.Config) {
			c.StreamName = ""
			c.StreamARN = "arn:aws:kinesis:us-east-1:000000000000:stream/orders"
			c.StreamsFunc = func(context.Context) ([]worker.StreamConfig, error) { return nil, nil }
		}, "mutually exclusive"},
		"both lists": {func(c *worker.Config) {
			c.StreamName, c.Streams = "", streams
			c.StreamsFunc = func(context.Context) ([]worker.StreamConfig, error) { return nil, nil }
		}, "Streams and StreamsFunc"},
		"bad name": {func(c *worker.Config) { c.StreamName, c.Streams = "", []worker.StreamConfig{{Stream: "a b"}} }, "not a stream name"},
		"bad arn": {func(c *worker.Config) {
			c.StreamName, c.Streams = "", []worker.StreamConfig{{Stream: "arn:aws:kinesis:x"}}
		}, "not a Kinesis stream ARN"},
		"twice": {func(c *worker.Config) {
			c.StreamName, c.Streams = "", []worker.StreamConfig{{Stream: "a"}, {Stream: "a"}}
		}, "listed twice"},
		"no factory": {func(c *worker.Config) {
			c.StreamName, c.ProcessorFactory, c.Streams = "", nil, []worker.StreamConfig{{Stream: "a"}}
		}, "no ProcessorFactory"},
		"bad position": {func(c *worker.Config) {
			c.StreamName, c.Streams = "", []worker.StreamConfig{{Stream: "a", InitialPosition: new(kcl.StartAtTimestamp(time.Time{}))}}
		}, `"a"`},
	} {
		err := newErr(tc.mutate)
		if !errors.Is(err, kcl.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want ErrInvalidConfig saying %q", name, err, tc.want)
		}
	}
}
