// Package fanout is Shardline's enhanced fan-out: [Options] switches a
// worker (worker.Config.FanOut) from GetRecords polling to SubscribeToShard
// subscriptions through a consumer registered on the stream, and
// [RegisterConsumer], [ListConsumers] and [DeregisterConsumer] manage those
// consumers (kclctl consumers uses them). The Kinesis client must implement
// [FanOutAPI], as a *kinesis.Client does.
package fanout

import "time"

// Options selects enhanced fan-out reading for a worker (worker.Config.FanOut)
// and tunes it. Each held shard is then read through a SubscribeToShard
// subscription of a consumer registered on the stream, with the shard's
// 2 MiB/s to itself and records pushed as they arrive, instead of GetRecords
// polling, which shares the shard's throughput with every other polling
// application. Processors see the same batches, in the same order, with the
// same checkpoint and shard-end semantics, either way.
//
// The Kinesis client must implement [FanOutAPI] (a *kinesis.Client does), and
// the workers need the IAM permissions for the consumer calls and
// SubscribeToShard.
type Options struct {
	// ConsumerName names the consumer. The first worker to start registers
	// it on the stream, the others (and later runs) reuse it; no worker ever
	// deregisters it ([DeregisterConsumer] does that). A stream has at most 20
	// consumers. Default: the application name.
	ConsumerName string
	// EventTimeout is the longest wait for the next event of a subscription.
	// Kinesis sends one every few seconds even for an idle shard, so silence
	// means a dead (half-open) connection: the subscription is replaced,
	// resuming where it stopped. Time the processor takes does not count.
	// Default 35s; at least 1s.
	EventTimeout time.Duration
}
