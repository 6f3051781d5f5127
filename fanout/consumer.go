package fanout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/cenkalti/backoff/v4"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/kcl"
)

// FanOutAPI is the part of the Kinesis client that enhanced fan-out uses:
// the consumer calls (which the functions of this package make),
// SubscribeToShard, and DescribeStreamSummary to find the stream's ARN. A
// *kinesis.Client satisfies it. It is separate from worker.KinesisAPI so
// that clients (and fakes) used only for polling need not implement it.
type FanOutAPI interface {
	RegisterStreamConsumer(ctx context.Context, in *kinesis.RegisterStreamConsumerInput, opts ...func(*kinesis.Options)) (*kinesis.RegisterStreamConsumerOutput, error)
	DescribeStreamConsumer(ctx context.Context, in *kinesis.DescribeStreamConsumerInput, opts ...func(*kinesis.Options)) (*kinesis.DescribeStreamConsumerOutput, error)
	ListStreamConsumers(ctx context.Context, in *kinesis.ListStreamConsumersInput, opts ...func(*kinesis.Options)) (*kinesis.ListStreamConsumersOutput, error)
	DeregisterStreamConsumer(ctx context.Context, in *kinesis.DeregisterStreamConsumerInput, opts ...func(*kinesis.Options)) (*kinesis.DeregisterStreamConsumerOutput, error)
	DescribeStreamSummary(ctx context.Context, in *kinesis.DescribeStreamSummaryInput, opts ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error)
	SubscribeToShard(ctx context.Context, in *kinesis.SubscribeToShardInput, opts ...func(*kinesis.Options)) (*kinesis.SubscribeToShardOutput, error)
}

var _ FanOutAPI = (*kinesis.Client)(nil)

// ErrConsumerLimit reports that a consumer could not be registered because
// the stream already has as many registered consumers as it may have (20 on
// Kinesis). Deregister one ([DeregisterConsumer]) or share one between
// applications.
var ErrConsumerLimit = errors.New("fanout: the stream's limit of registered consumers is reached")

// Consumer describes an enhanced fan-out consumer registered on a stream.
type Consumer struct {
	// Name is the consumer's name, unique on its stream.
	Name string
	// ARN identifies the consumer; it changes when a consumer of the same
	// name is registered again.
	ARN string
	// Status is CREATING, ACTIVE or DELETING.
	Status types.ConsumerStatus
	// CreatedAt is when the consumer was registered.
	CreatedAt time.Time
}

// Timing of the consumer calls: status polls and retries back off from
// consumerPollInitial to consumerPollMax; a LimitExceededException from
// RegisterStreamConsumer is taken as the consumer limit after
// consumerLimitTries in a row.
const (
	consumerPollInitial = 50 * time.Millisecond
	consumerPollMax     = 2 * time.Second
	consumerLimitTries  = 3
)

// validateConsumerName refuses a consumer name Kinesis would refuse, with an
// error matching kcl.ErrInvalidConfig.
func validateConsumerName(name string) error {
	if !awsx.ValidConsumerName(name) {
		return fmt.Errorf("%w: consumer name %q must be 1-128 of a-z A-Z 0-9 _ . -", kcl.ErrInvalidConfig, name)
	}
	return nil
}

// RegisterConsumer makes sure that a consumer named name is registered on
// the stream and ACTIVE, and returns it. An existing consumer is reused; a
// missing one is registered, then awaited while it is CREATING (a consumer
// being deleted is awaited until it is gone, then registered again).
//
// Any number of workers may call it at once for the same name: one
// registration wins, the others see ResourceInUseException and wait for the
// same consumer. Throttling and transient errors are retried with backoff
// until ctx ends, which is the only bound: pass a context with a deadline.
//
// If the stream already has as many consumers as it may have, the error
// matches ErrConsumerLimit and names the registered consumers. If the stream
// does not exist, it matches kcl.ErrStreamNotFound.
func RegisterConsumer(ctx context.Context, client FanOutAPI, streamARN, name string) (Consumer, error) {
	if err := validateConsumerName(name); err != nil {
		return Consumer{}, err
	}
	if !strings.HasPrefix(streamARN, "arn:") {
		return Consumer{}, fmt.Errorf("%w: stream ARN %q is not an ARN", kcl.ErrInvalidConfig, streamARN)
	}
	fail := func(op string, err error) (Consumer, error) {
		return Consumer{}, fmt.Errorf("fanout: consumer %s on %s: %s: %w", name, streamARN, op, err)
	}
	bo := newConsumerBackoff()
	limitHits := 0
	for {
		c, err := describeConsumer(ctx, client, streamARN, name)
		switch {
		case err == nil && c.Status == types.ConsumerStatusActive:
			return c, nil
		case err == nil:
			// CREATING: wait for it; DELETING: wait until it is gone.
		case errors.Is(err, errConsumerNotFound):
			c, err := register(ctx, client, streamARN, name)
			var limit *types.LimitExceededException
			switch {
			case err == nil && c.Status == types.ConsumerStatusActive:
				return c, nil
			case err == nil, awsx.Classify(err) == awsx.InUse:
				// Registered (by us or by another worker at the same time):
				// wait until it is ACTIVE.
				limitHits = 0
			case errors.As(err, &limit):
				busy, all, lerr := consumersInFlux(ctx, client, streamARN)
				if lerr == nil && !busy {
					limitHits++
				}
				if limitHits >= consumerLimitTries {
					return fail("register", fmt.Errorf("%w (%d registered: %s): %w", ErrConsumerLimit, len(all), strings.Join(all, ", "), err))
				}
			case ctx.Err() != nil:
				return fail("register", ctx.Err())
			case awsx.Classify(err) == awsx.NotFound:
				return fail("register", fmt.Errorf("%w: %w", kcl.ErrStreamNotFound, err))
			case !awsx.Classify(err).Retryable():
				return fail("register", err)
			}
		case ctx.Err() != nil:
			return fail("describe", ctx.Err())
		case !awsx.Classify(err).Retryable():
			return fail("describe", err)
		}
		if err := awsx.Sleep(ctx, bo.NextBackOff()); err != nil {
			return fail("wait until ACTIVE", err)
		}
	}
}

// errConsumerNotFound is describeConsumer's error for a consumer that does
// not exist (or a stream that does not exist: Kinesis does not say which).
var errConsumerNotFound = errors.New("fanout: consumer not found")

// describeConsumer returns the consumer named name on the stream. If there is
// none (or no such stream), the error matches errConsumerNotFound.
func describeConsumer(ctx context.Context, client FanOutAPI, streamARN, name string) (Consumer, error) {
	out, err := client.DescribeStreamConsumer(ctx, &kinesis.DescribeStreamConsumerInput{
		StreamARN: aws.String(streamARN), ConsumerName: aws.String(name),
	})
	if err != nil {
		if awsx.Classify(err) == awsx.NotFound {
			return Consumer{}, fmt.Errorf("%w: %w", errConsumerNotFound, err)
		}
		return Consumer{}, err
	}
	d := out.ConsumerDescription
	if d == nil {
		return Consumer{}, errors.New("fanout: DescribeStreamConsumer returned no description")
	}
	return Consumer{Name: aws.ToString(d.ConsumerName), ARN: aws.ToString(d.ConsumerARN),
		Status: d.ConsumerStatus, CreatedAt: aws.ToTime(d.ConsumerCreationTimestamp)}, nil
}

// register calls RegisterStreamConsumer once.
func register(ctx context.Context, client FanOutAPI, streamARN, name string) (Consumer, error) {
	out, err := client.RegisterStreamConsumer(ctx, &kinesis.RegisterStreamConsumerInput{
		StreamARN: aws.String(streamARN), ConsumerName: aws.String(name),
	})
	if err != nil {
		return Consumer{}, err
	}
	if out.Consumer == nil {
		return Consumer{}, errors.New("fanout: RegisterStreamConsumer returned no consumer")
	}
	return fromSDK(*out.Consumer), nil
}

func fromSDK(c types.Consumer) Consumer {
	return Consumer{Name: aws.ToString(c.ConsumerName), ARN: aws.ToString(c.ConsumerARN),
		Status: c.ConsumerStatus, CreatedAt: aws.ToTime(c.ConsumerCreationTimestamp)}
}

// consumersInFlux lists the stream's consumers and reports whether one is
// being created or deleted (a LimitExceededException is then about
// concurrent changes, not the number of consumers), with their names.
func consumersInFlux(ctx context.Context, client FanOutAPI, streamARN string) (bool, []string, error) {
	list, err := ListConsumers(ctx, client, streamARN)
	if err != nil {
		return false, nil, err
	}
	busy := false
	names := make([]string, len(list))
	for i, c := range list {
		names[i] = c.Name
		busy = busy || c.Status != types.ConsumerStatusActive
	}
	return busy, names, nil
}

// ListConsumers returns every consumer registered on the stream, sorted by
// name, following pagination.
func ListConsumers(ctx context.Context, client FanOutAPI, streamARN string) ([]Consumer, error) {
	var all []Consumer
	in := &kinesis.ListStreamConsumersInput{StreamARN: aws.String(streamARN)}
	for {
		out, err := client.ListStreamConsumers(ctx, in)
		if err != nil {
			if awsx.Classify(err) == awsx.NotFound {
				err = fmt.Errorf("%w: %w", kcl.ErrStreamNotFound, err)
			}
			return nil, fmt.Errorf("fanout: list consumers of %s: %w", streamARN, err)
		}
		for _, c := range out.Consumers {
			all = append(all, fromSDK(c))
		}
		if aws.ToString(out.NextToken) == "" {
			break
		}
		in = &kinesis.ListStreamConsumersInput{StreamARN: aws.String(streamARN), NextToken: out.NextToken}
	}
	slices.SortFunc(all, func(a, b Consumer) int { return strings.Compare(a.Name, b.Name) })
	return all, nil
}

// DeregisterConsumer deregisters the consumer named name from the stream and
// waits until it is gone (so that a consumer of the same name can be
// registered again at once). Subscriptions through it end. A consumer that
// does not exist is not an error. Throttling and transient errors are
// retried until ctx ends.
func DeregisterConsumer(ctx context.Context, client FanOutAPI, streamARN, name string) error {
	if err := validateConsumerName(name); err != nil {
		return err
	}
	bo := newConsumerBackoff()
	deregistered := false
	for {
		c, err := describeConsumer(ctx, client, streamARN, name)
		switch {
		case errors.Is(err, errConsumerNotFound):
			return nil
		case err == nil && c.Status == types.ConsumerStatusDeleting:
		case err == nil && !deregistered:
			_, err = client.DeregisterStreamConsumer(ctx, &kinesis.DeregisterStreamConsumerInput{
				StreamARN: aws.String(streamARN), ConsumerName: aws.String(name),
			})
			switch kind := awsx.Classify(err); {
			case err == nil:
				deregistered = true
			case kind == awsx.NotFound:
				return nil
			case ctx.Err() != nil || !kind.Retryable(): // InUse (still CREATING) is retried
				return fmt.Errorf("fanout: deregister consumer %s from %s: %w", name, streamARN, err)
			}
		case err != nil && (ctx.Err() != nil || !awsx.Classify(err).Retryable()):
			return fmt.Errorf("fanout: deregister consumer %s from %s: describe: %w", name, streamARN, err)
		}
		if err := awsx.Sleep(ctx, bo.NextBackOff()); err != nil {
			return fmt.Errorf("fanout: deregister consumer %s from %s: wait until gone: %w", name, streamARN, err)
		}
	}
}

// newConsumerBackoff returns the backoff of the consumer calls' polls and
// retries.
func newConsumerBackoff() *backoff.ExponentialBackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(consumerPollInitial),
		backoff.WithMaxInterval(consumerPollMax),
		backoff.WithMaxElapsedTime(0),
	)
}
