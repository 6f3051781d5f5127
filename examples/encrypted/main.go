// Command encrypted shows client-side encryption with Shardline: the
// producer encrypts each record with AES-256-GCM before it leaves the
// process, KPL aggregation packs the ciphertexts, and the consumer's
// RecordDecoder decrypts each user record before the processor sees it.
// Kinesis (and anyone who can read the stream) only ever holds ciphertext.
//
// The 32-byte key comes from the environment, base64-encoded:
//
//	export SHARDLINE_DATA_KEY=$(head -c 32 /dev/urandom | base64)
//
// Against the local emulators (`scripts/emulators.sh start`), it creates the
// stream, writes -records records, reads them back and exits:
//
//	go run ./examples/encrypted -stream secrets -app secrets-reader \
//	    -kinesis-endpoint http://127.0.0.1:4568 -dynamodb-endpoint http://127.0.0.1:8000
//
// Without the endpoint flags it uses AWS with the default credential chain
// and expects the stream to exist. A record that does not decrypt (wrong
// key, tampered data) is delivered with DecodeErr set, never dropped: the
// processor reports it and checkpoints past it.
package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/producer"
	"github.com/shardline/shardline/worker"
)

// keyEnv names the environment variable holding the base64 AES-256 key.
const keyEnv = "SHARDLINE_DATA_KEY"

// codec encrypts and decrypts record data with AES-GCM. Each record gets a
// fresh random nonce, stored in front of the ciphertext, and its partition
// key is authenticated with it, so a record moved under another key does not
// decrypt. It is safe for concurrent use.
type codec struct{ aead cipher.AEAD }

func newCodec(key []byte) (*codec, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("key is %d bytes, want 32 (AES-256)", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &codec{aead: aead}, nil
}

// EncodeRecord is the producer's Encoder.
func (c *codec) EncodeRecord(_ context.Context, partitionKey string, data []byte) ([]byte, error) {
	out := make([]byte, c.aead.NonceSize(), c.aead.NonceSize()+len(data)+c.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, err
	}
	return c.aead.Seal(out, out, data, []byte(partitionKey)), nil
}

// DecodeRecord is the worker's RecordDecoder.
func (c *codec) DecodeRecord(_ context.Context, partitionKey string, data []byte) ([]byte, error) {
	n := c.aead.NonceSize()
	if len(data) < n+c.aead.Overhead() {
		return nil, errors.New("ciphertext too short")
	}
	return c.aead.Open(nil, data[:n], data[n:], []byte(partitionKey))
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "encrypted:", err)
		os.Exit(1)
	}
}

func run() error {
	stream := flag.String("stream", "", "Kinesis stream name (required)")
	app := flag.String("app", "", "application name, also the lease table (required)")
	kinesisEndpoint := flag.String("kinesis-endpoint", "", "Kinesis endpoint URL (default: AWS)")
	dynamoEndpoint := flag.String("dynamodb-endpoint", "", "DynamoDB endpoint URL (default: AWS)")
	records := flag.Int("records", 100, "records to write and read back")
	flag.Parse()
	if *stream == "" || *app == "" {
		return errors.New("-stream and -app are required")
	}
	key, err := base64.StdEncoding.DecodeString(os.Getenv(keyEnv))
	if err != nil {
		return fmt.Errorf("%s: %w", keyEnv, err)
	}
	c, err := newCodec(key)
	if err != nil {
		return fmt.Errorf("%s: %w", keyEnv, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	kc, dc, err := clients(ctx, *kinesisEndpoint, *dynamoEndpoint)
	if err != nil {
		return err
	}
	if *kinesisEndpoint != "" {
		if err := createStream(ctx, kc, *stream); err != nil {
			return err
		}
	}

	// Produce: every record encrypted, aggregated, batched.
	p, err := producer.New(producer.Config{StreamName: *stream, Client: kc, Aggregate: true, Encoder: c.EncodeRecord, Logger: log})
	if err != nil {
		return err
	}
	for i := range *records {
		if _, err := p.Put(ctx, fmt.Sprintf("patient-%d", i%10), fmt.Appendf(nil, "diagnosis #%d", i)); err != nil {
			return err
		}
	}
	if err := p.Close(ctx); err != nil {
		return err
	}
	st := p.Stats()
	fmt.Printf("wrote %d encrypted records, aggregated (%d failed)\n", st.Written, st.Failed)

	// Consume: decrypted before the processor sees them.
	var mu sync.Mutex
	seen, undecodable := 0, 0
	done := make(chan struct{})
	var once sync.Once
	w, err := worker.New(worker.Config{
		StreamName: *stream, ApplicationName: *app, Kinesis: kc, DynamoDB: dc,
		InitialPosition: kcl.StartAtTrimHorizon(), RecordDecoder: c.DecodeRecord, Logger: log,
		IdleTimeBetweenReads: 200 * time.Millisecond,
		ProcessorFactory: func(shardID string) (kcl.RecordProcessor, error) {
			return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
				mu.Lock()
				for _, r := range in.Records {
					if r.DecodeErr != nil {
						undecodable++
						fmt.Printf("  %s: cannot decrypt (%v)\n", r.Position(), r.DecodeErr)
						continue
					}
					if seen++; seen <= 3 {
						fmt.Printf("  %s %s: %q\n", r.Position(), r.PartitionKey, r.Data)
					}
				}
				if seen+undecodable >= *records {
					once.Do(func() { close(done) })
				}
				mu.Unlock()
				return in.Checkpointer.Checkpoint(ctx)
			}), nil
		},
	})
	if err != nil {
		return err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(ctx) }()
	select {
	case <-done:
	case <-ctx.Done():
	case err := <-runErr:
		return err
	case <-time.After(2 * time.Minute):
		fmt.Println("timed out waiting for the records")
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-runErr; err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	fmt.Printf("read %d records decrypted, %d that did not decrypt\n", seen, undecodable)
	return nil
}

func clients(ctx context.Context, kinesisEndpoint, dynamoEndpoint string) (*kinesis.Client, *dynamodb.Client, error) {
	var cfg aws.Config
	if kinesisEndpoint != "" || dynamoEndpoint != "" {
		// The emulators accept any credentials; DynamoDB Local keeps tables
		// per access key, so use the project's tools' key.
		cfg = aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("shardline", "shardline", "")}
	} else {
		var err error
		if cfg, err = config.LoadDefaultConfig(ctx); err != nil {
			return nil, nil, err
		}
	}
	kc := kinesis.NewFromConfig(cfg, func(o *kinesis.Options) {
		if kinesisEndpoint != "" {
			o.BaseEndpoint = aws.String(kinesisEndpoint)
		}
	})
	dc := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		if dynamoEndpoint != "" {
			o.BaseEndpoint = aws.String(dynamoEndpoint)
			o.DisableValidateResponseChecksum = true
		}
	})
	return kc, dc, nil
}

// createStream creates a one-shard stream on the emulator unless it exists,
// and waits until it is active.
func createStream(ctx context.Context, kc *kinesis.Client, name string) error {
	_, err := kc.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(1)})
	var inUse *ktypes.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return fmt.Errorf("create stream %s: %w", name, err)
	}
	w := kinesis.NewStreamExistsWaiter(kc, func(o *kinesis.StreamExistsWaiterOptions) {
		o.MinDelay, o.MaxDelay = 50*time.Millisecond, time.Second
	})
	if err := w.Wait(ctx, &kinesis.DescribeStreamInput{StreamName: aws.String(name)}, time.Minute); err != nil {
		return fmt.Errorf("stream %s not active: %w", name, err)
	}
	return nil
}
