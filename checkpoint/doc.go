// Package checkpoint documents how Shardline stores checkpoints and holds
// transactional checkpoints (Transact).
//
// A record processor checkpoints through the [kcl.Checkpointer] in its input.
// Every checkpoint obeys one rule: the last stored checkpoint <= the target <=
// the largest record delivered to the processor so far; anything else is
// refused with an error matching kcl.ErrInvalidCheckpoint. A checkpoint is a
// conditional write to the shard's lease, fenced by the lease's owner and
// counter, so a worker that lost the lease cannot store one: the error then
// matches kcl.ErrLeaseLost and the processor should stop working on the shard.
//
// A two-phase checkpoint (Checkpointer.Prepare, then PreparedCheckpoint.Commit)
// stores a pending position with application state first; a processor that
// restarts between the two steps finds both in its kcl.InitializeInput.
//
// Whether a checkpoint can still succeed, by callback:
//   - ProcessRecords, ShutdownRequested (a graceful stop or a planned
//     hand-over), ShardEnded: yes; ShardEnded must checkpoint (SHARD_END) for
//     the shard's children to start.
//   - LeaseLost: no, another worker may already hold the shard.
//
// After a crash, the records after the last stored checkpoint are delivered
// again (at least once): store checkpoints as often as your duplicates budget
// requires.
package checkpoint
