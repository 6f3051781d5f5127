// Package testenv connects tests to the local emulators (kinesis-mock and
// DynamoDB Local) that `make test` starts on loopback.
//
// Endpoints default to http://127.0.0.1:4568 (Kinesis) and
// http://127.0.0.1:8000 (DynamoDB); SHARDLINE_KINESIS_ENDPOINT and
// SHARDLINE_DYNAMODB_ENDPOINT point them elsewhere. Integration tests are
// skipped under `go test -short`. When the emulators are unreachable they
// are skipped too, unless SHARDLINE_REQUIRE_EMULATORS=1 (set by `make test`),
// which turns that into a failure so CI can never pass by skipping.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/awsx"
)

// KinesisEndpoint returns the Kinesis emulator's URL.
func KinesisEndpoint() string {
	if v := os.Getenv("SHARDLINE_KINESIS_ENDPOINT"); v != "" {
		return v
	}
	return "http://127.0.0.1:4568"
}

// DynamoDBEndpoint returns the DynamoDB emulator's URL.
func DynamoDBEndpoint() string {
	if v := os.Getenv("SHARDLINE_DYNAMODB_ENDPOINT"); v != "" {
		return v
	}
	return "http://127.0.0.1:8000"
}

// AWSConfig returns a configuration for the emulators: region us-east-1 and
// static dummy credentials.
func AWSConfig() aws.Config {
	return aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("shardline", "shardline", ""),
	}
}

// NewKinesisClient returns a Kinesis client for the emulator at endpoint.
func NewKinesisClient(endpoint string) *kinesis.Client {
	return kinesis.NewFromConfig(AWSConfig(), func(o *kinesis.Options) {
		o.BaseEndpoint = aws.String(endpoint)
	})
}

// NewDynamoDBClient returns a DynamoDB client for the emulator at endpoint,
// with opts applied (for example an internal/faults HTTP client). Response
// checksum validation is off: DynamoDB Local's error responses make the SDK
// log spurious checksum warnings otherwise.
func NewDynamoDBClient(endpoint string, opts ...func(*dynamodb.Options)) *dynamodb.Client {
	return dynamodb.NewFromConfig(AWSConfig(), append([]func(*dynamodb.Options){func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.DisableValidateResponseChecksum = true
	}}, opts...)...)
}

var (
	probeOnce sync.Once
	probeErr  error
)

func probe() error {
	probeOnce.Do(func() {
		for _, ep := range []string{KinesisEndpoint(), DynamoDBEndpoint()} {
			u, err := url.Parse(ep)
			if err != nil {
				probeErr = fmt.Errorf("bad endpoint %q: %w", ep, err)
				return
			}
			c, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
			if err != nil {
				probeErr = fmt.Errorf("emulator at %s unreachable (run `make emulators`): %w", ep, err)
				return
			}
			c.Close()
		}
		resp, err := http.Get(strings.TrimRight(KinesisEndpoint(), "/") + "/healthcheck")
		if err != nil {
			probeErr = fmt.Errorf("kinesis-mock healthcheck: %w", err)
			return
		}
		resp.Body.Close()
	})
	return probeErr
}

// Require skips t under -short, and skips or fails it (see the package doc)
// when the emulators are unreachable.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs the emulators (skipped with -short)")
	}
	if err := probe(); err != nil {
		if os.Getenv("SHARDLINE_REQUIRE_EMULATORS") == "1" {
			t.Fatalf("emulators required: %v", err)
		}
		t.Skipf("emulators unavailable: %v", err)
	}
}

// Kinesis returns a Kinesis client after Require.
func Kinesis(t testing.TB) *kinesis.Client {
	t.Helper()
	Require(t)
	return NewKinesisClient(KinesisEndpoint())
}

// DynamoDB returns a DynamoDB client after Require.
func DynamoDB(t testing.TB) *dynamodb.Client {
	t.Helper()
	Require(t)
	return NewDynamoDBClient(DynamoDBEndpoint())
}

// UniqueName returns a name that no other test run uses, prefixed by prefix.
func UniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// RefusedAddr returns a loopback address ("127.0.0.1:port") that nothing
// listens on: a connection to it is refused, as to a stopped endpoint.
func RefusedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// CreateStream creates a stream with the given number of shards, waits until
// it is ACTIVE and deletes it when the test ends. It returns the name.
func CreateStream(t testing.TB, kc *kinesis.Client, shards int) string {
	t.Helper()
	name := UniqueName("stream")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := CreateStreamNamed(ctx, kc, name, shards); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = kc.DeleteStream(ctx, &kinesis.DeleteStreamInput{
			StreamName: aws.String(name), EnforceConsumerDeletion: aws.Bool(true),
		})
	})
	return name
}

// CreateStreamNamed creates a provisioned stream and waits until it is ACTIVE.
func CreateStreamNamed(ctx context.Context, kc *kinesis.Client, name string, shards int) error {
	_, err := kc.CreateStream(ctx, &kinesis.CreateStreamInput{
		StreamName: aws.String(name),
		ShardCount: aws.Int32(int32(shards)),
	})
	if err != nil {
		return err
	}
	return WaitStreamActive(ctx, kc, name)
}

// WaitStreamActive polls until the stream is ACTIVE or ctx ends.
func WaitStreamActive(ctx context.Context, kc *kinesis.Client, name string) error {
	s := awsx.Stream{Name: name}
	for {
		d, err := s.Describe(ctx, kc)
		if err == nil && d.StreamStatus == ktypes.StreamStatusActive {
			return nil
		}
		if awsx.Sleep(ctx, 20*time.Millisecond) != nil {
			return fmt.Errorf("stream %s not active: %w (last error %v)", name, ctx.Err(), err)
		}
	}
}
