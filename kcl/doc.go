// Package kcl is the vocabulary that applications code against when they
// consume an Amazon Kinesis data stream with Shardline.
//
// An application implements [RecordProcessor] (one method) and, optionally,
// any of the lifecycle interfaces [Initializer], [LeaseLostHandler],
// [ShardEndedHandler] and [ShutdownRequestedHandler]. The worker discovers
// the optional ones by type assertion, the way net/http discovers
// http.Flusher. A [RecordProcessorFunc] adapts a plain function.
//
// Records arrive in order within a shard as [ProcessRecordsInput] batches.
// Each batch carries a [Checkpointer] that stores the position of the
// last record the application has finished with. After a restart or a lease
// move, processing resumes right after the stored checkpoint.
//
// The package depends on the standard library only.
package kcl
