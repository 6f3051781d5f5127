// Package metrics exports a Shardline worker's activity as Prometheus
// metrics. The worker itself does not depend on Prometheus: it calls hooks
// (see worker.Config.Hooks), and a [Metrics] is one.
//
//	m, err := metrics.New() // its own registry; metrics.WithRegistry(reg) to share one
//	if err != nil { ... }
//	w, err := worker.New(worker.Config{..., Hooks: []worker.Hook{m}})
//	mux.Handle("/metrics", m.Handler()) // served by the application's own server
//
// The package never registers on the global registry and never starts a
// server. A Metrics observes one worker; several Metrics may share a
// registry.
//
// # Labels
//
// Every metric has the labels stream (the stream name, or its ARN when the
// worker was configured with StreamARN) and worker (the worker ID). Set
// worker.Config.WorkerID to a stable name (a pod name, say): the default ID
// has a random suffix, so every restart would start new series. Per-shard
// metrics add shard; a worker only has series for the shards it processes
// now (they are removed when its consumer of a shard stops; the records and
// bytes counters after one more scrape, see below), so their number is
// bounded by the stream's shard count: the open shards, and closed ones
// whose records are still being processed. The exception,
// shardline_shard_unowned_seconds, has series for the shards no live worker
// holds, while they wait for one. The other labels take the few values
// listed below.
//
// A multi-stream worker (worker.Config.Streams or StreamsFunc): per-shard
// metrics take stream from the shard's stream (its name) and shard from its
// shard ID; the per-worker metrics sum over all streams and have an empty
// stream label.
//
// # Metrics
//
// Each entry gives the name, the type and the labels beyond stream and
// worker.
//
// Processing (from every ProcessRecords call):
//
//   - shardline_records_processed_total (counter; shard): user records in
//     batches the processor accepted (ProcessRecords returned nil). A batch
//     delivered again after a failure counts once, when it succeeds.
//   - shardline_bytes_processed_total (counter; shard): data bytes of those
//     records.
//   - shardline_batches_processed_total (counter; -): batches the processor
//     accepted (empty ones too, with CallProcessorOnEmptyBatches).
//   - shardline_processing_duration_seconds (histogram; -): duration of every
//     ProcessRecords call, failed or not (buckets 1 ms to 60 s).
//   - shardline_processor_errors_total (counter; type): failed ProcessRecords
//     calls; type is "error" or "panic". The batch is delivered again.
//   - shardline_processor_retries_total (counter; -): deliveries of a batch
//     that failed before (attempt 2 and later).
//   - shardline_arrival_to_processed_seconds (histogram; -): time from the
//     arrival in Kinesis (ApproximateArrivalTimestamp) of each user record
//     to the end of the successful processing of its batch: the end-to-end
//     delay, one observation per record, so that its quantiles are those of
//     the records (a stall shows in the p99 as soon as the records that
//     waited are processed) (buckets 50 ms to 1 h). User records unpacked
//     from one KPL aggregate share its arrival time.
//
// Lag, as the service reports it (from every successful GetRecords call or
// enhanced fan-out event):
//
//   - shardline_behind_latest_seconds (gauge; shard): how far the shard's
//     last read was behind the tip of the shard: MillisBehindLatest / 1000.
//     Up to PrefetchBatches batches read may still wait for the processor;
//     shardline_arrival_to_processed_seconds measures what the application
//     sees. Emulators may always report 0 (kinesis-mock does).
//   - shardline_behind_latest_max_seconds (gauge; -): the largest of those
//     over the shards the worker processes; 0 with none.
//
// Lag, as derived from the records' arrival times (from every batch the
// processor accepted; it does not depend on the service reporting
// MillisBehindLatest):
//
//   - shardline_behind_arrival_seconds (gauge; shard): for each batch
//     processed, the time from the arrival in Kinesis of its oldest record
//     to the end of its processing (0 for an empty batch); the gauge shows
//     the largest over the shard's batches of the last 30 s, or its last
//     batch's if none was processed since, so that a scrape sees the lag of
//     a catch-up batch however briefly it lasts. A shard left unowned
//     shows the gap here once its new owner processes its first batch: the
//     records that waited are as old as the gap.
//   - shardline_behind_arrival_max_seconds (gauge; -): the largest of those
//     over the shards the worker processes; 0 with none.
//
// Reads from Kinesis (every GetRecords and GetShardIterator call; with
// enhanced fan-out, every SubscribeToShard call and event received):
//
//   - shardline_read_calls_total (counter; op): read calls, failed or not; op
//     is "GetRecords", "GetShardIterator", "SubscribeToShard" or
//     "SubscribeToShardEvent" (one event of a subscription).
//   - shardline_read_duration_seconds (histogram; op): their duration.
//   - shardline_read_records_total (counter; -): Kinesis records received,
//     before KPL de-aggregation and filtering.
//   - shardline_read_bytes_total (counter; -): their data bytes.
//   - shardline_read_errors_total (counter; kind): failed read calls other
//     than throttles and expired iterators; kind is "transient" (retried),
//     "in_use" (SubscribeToShard refused while another subscription of the
//     consumer to the shard ends, as after every fan-out hand-over; retried),
//     "trimmed" (position past the retention; reading resumes at the oldest
//     record), "not_found" (stream or shard gone) or "fatal".
//   - shardline_read_throttles_total (counter; -): read calls refused by
//     throttling (ProvisionedThroughputExceeded, KMS throttling, limits);
//     retried after a backoff.
//   - shardline_iterator_expirations_total (counter; -): reads that found
//     their shard iterator expired; the reader gets a new one.
//
// KPL de-aggregation and record decoding (from the worker's events for each
// read):
//
//   - shardline_kpl_aggregates_total (counter; -): KPL aggregated records
//     unpacked.
//   - shardline_kpl_user_records_total (counter; -): user records delivered
//     from them.
//   - shardline_kpl_malformed_aggregates_total (counter; -): records with the
//     KPL magic bytes that could not be unpacked (delivered raw, with
//     DecodeErr).
//   - shardline_kpl_dropped_aggregates_total (counter; -): aggregated records
//     dropped because a user record's hash key lies outside the shard.
//   - shardline_kpl_dropped_user_records_total (counter; -): the user records
//     inside them.
//   - shardline_record_decode_failures_total (counter; -): user records the
//     RecordDecoder failed on (delivered with DecodeErr).
//
// Leases:
//
//   - shardline_leases_held (gauge; -): leases the worker holds: +1 for each
//     acquisition, -1 for each loss, release and hand-over.
//   - shardline_leases_taken_total (counter; how): leases acquired that had
//     no live owner; how is "take" (new or expired lease) or "take-released"
//     (released by its owner while this worker waited for it).
//   - shardline_leases_stolen_total (counter; how): leases acquired from a
//     live owner to balance the fleet; how is "handoff" (the owner finished
//     its batch, checkpointed and handed it over) or "handoff-timeout" (the
//     owner did not in time; it was taken anyway).
//   - shardline_leases_lost_total (counter; cause): leases lost without
//     giving them up; cause is "expired" (not renewed in time), "conflict"
//     (another worker took or reset the lease) or "other" (e.g. the worker
//     stopped without releasing it).
//   - shardline_leases_released_total (counter; -): leases given up to no
//     one (shard end, failed start, a graceful stop with no other live
//     worker).
//   - shardline_leases_handed_over_total (counter; -): leases handed over to
//     another worker: one that asked for them, or, on a graceful stop, the
//     survivor the plan names.
//   - shardline_lease_handoff_requests_total (counter; -): hand-overs this
//     worker asked other workers for.
//   - shardline_lease_renew_failures_total (counter; -): renewals that failed
//     for a reason other than a lost lease; retried until the lease's
//     deadline, after which the lease counts as lost.
//
// Checkpoints:
//
//   - shardline_checkpoint_writes_total (counter; -): checkpoint writes to
//     the lease table, failed or not (prepared checkpoints too).
//   - shardline_checkpoint_failures_total (counter; cause): failed writes;
//     cause is "lease_lost" (the lease is no longer held: nothing was
//     written) or "other".
//   - shardline_checkpoint_duration_seconds (histogram; -): their duration.
//
// Shard consumers:
//
//   - shardline_shards_started_total (counter; -): shard consumers that
//     started reading.
//   - shardline_shards_stopped_total (counter; reason): shard consumers that
//     stopped; reason is "lease_lost", "shutdown" (graceful stop), "handoff",
//     "shard_end", "stopped" (hard stop) or "error".
//
// Stalls (from worker.EventShardStalled and EventShardRecovered; see
// worker.Config.StallTimeout and the README's "Stalled shards"):
//
//   - shardline_shard_stalled (gauge; shard, reason): 1 while a shard the
//     worker holds is stalled; reason is "bad-checkpoint" (the stored
//     checkpoint cannot be read from), "open-failing",
//     "checkpoint-failing", "processor-failing", "read-failing" (each after
//     three failures in a row) or "no-progress" (no batch processed and no
//     read at the tip for StallTimeout). There is no series for a shard
//     that is not stalled (alert on max(shardline_shard_stalled) > 0); the
//     series goes when the shard recovers or its consumer stops.
//
// Shards without a live owner (from worker.EventShardUnowned and
// EventShardOwned, which come from the fleet row and the leases each worker
// reads anyway; no read of its own):
//
//   - shardline_shard_unowned_seconds (gauge; shard): for each unfinished
//     shard that, as this worker sees it, no live worker holds: seconds
//     since its owner's heartbeat last moved (an owner that crashed,
//     stopped or was declared dead; a live owner's heartbeat that has not
//     been seen moving for three heartbeat periods), or since its lease was
//     last seen changing when it has no owner. A lower bound, never
//     negative; it rises while the shard waits for a new owner (after a
//     crash, for the lease duration) and its series goes once a worker
//     holds it (the value is computed when scraped, from the last event's
//     Duration, which the worker reports after each heartbeat). Every
//     worker reports the shards it sees so, its own held ones excepted:
//     take the max over workers. It measures what no owner can report: the
//     lag metrics above come from a shard's owner.
//
// Delivery policies (see worker.DeliveryPolicy):
//
//   - shardline_delivery_filtered_records_total (counter; -): user records
//     the Filter kept from the processor; they count as processed.
//   - shardline_delivery_dead_letters_total (counter; -): user records given
//     up on (MaxAttempts, MaxRecordAge) and accepted by the dead-letter
//     handler.
//   - shardline_delivery_bisects_total (counter; -): failing batches split
//     in halves (BisectOnError).
//   - shardline_delivery_partial_failures_total (counter; -): partial batch
//     failures (kcl.PartialFailureError) that moved past processed records.
//   - shardline_delivery_lanes_busy (gauge; -): batches running at once in
//     the lanes of the worker's shards (Parallelism).
//
// Counters and gauges without a shard or op label exist at zero from the
// worker's start, so rate() and alerts see them before the first event. A
// shard's records and bytes counters show 0 to the first scrape after its
// consumer starts and count from the next one on (what was processed
// meanwhile is held back until then), and show their final values to one
// more scrape after it stops: rate() and increase() count every batch,
// the first after a lease move included, whatever the scrape interval. The
// dashboards/shardline.json Grafana dashboard in the repository uses these
// metrics.
package metrics
