#!/usr/bin/env node
// A record processor written with the npm aws-kcl library (its JavaScript
// side only), run by shardline-multilang in the integration test and the
// benchmark. It checkpoints every batch through the library's checkpointer.
//
// With SHARDLINE_EVENTS set it appends one JSON line per record and per
// lifecycle event to that file, in the format internal/fleet reads
// (SHARDLINE_WORKER_ID names the worker). Without it, it only decodes the
// records (the benchmark).
'use strict';

const fs = require('fs');
const kcl = require('aws-kcl');

const eventsPath = process.env.SHARDLINE_EVENTS || '';
const workerID = process.env.SHARDLINE_WORKER_ID || '';
const fd = eventsPath ? fs.openSync(eventsPath, 'a') : null;
// SHARDLINE_WORK_MS: simulated work per batch, between its records and its
// checkpoint.
const workMs = parseInt(process.env.SHARDLINE_WORK_MS || '0', 10);

function emit(ev) {
  if (fd === null) {
    return;
  }
  ev.ts = new Date().toISOString();
  ev.worker = workerID;
  // One write per line, O_APPEND: lines of concurrent children never mix.
  fs.writeSync(fd, JSON.stringify(ev) + '\n');
}

function position(seq, sub) {
  if (seq === null || seq === undefined) {
    return '';
  }
  return sub ? seq + '/' + sub : seq;
}

function processor() {
  let shardId = '';
  let batch = 0;
  return {
    initialize: function (input, completeCallback) {
      shardId = input.shardId;
      emit({type: 'initialize', shard: shardId, checkpoint: position(input.sequenceNumber, input.subSequenceNumber)});
      completeCallback();
    },

    processRecords: function (input, completeCallback) {
      // SHARDLINE_CRASH_ONCE: a file; the first processor to see it missing
      // creates it and crashes (an uncaught exception, exit status 1).
      const crashOnce = process.env.SHARDLINE_CRASH_ONCE;
      if (crashOnce && !fs.existsSync(crashOnce)) {
        fs.writeFileSync(crashOnce, '');
        throw new Error('simulated crash in processRecords');
      }
      batch++;
      const records = input.records || [];
      let last = null;
      let bytes = 0;
      for (const r of records) {
        const data = Buffer.from(r.data, 'base64').toString();
        bytes += data.length;
        emit({type: 'record', shard: shardId, seq: position(r.sequenceNumber, r.subSequenceNumber),
          pk: r.partitionKey, data: data, batch: batch});
        last = r.sequenceNumber;
      }
      if (last === null) {
        completeCallback();
        return;
      }
      const checkpoint = function () {
        input.checkpointer.checkpoint(last, function (err) {
          if (err) {
            emit({type: 'checkpoint_failed', shard: shardId, position: last, data: String(err)});
          } else {
            emit({type: 'checkpoint', shard: shardId, position: last});
          }
          completeCallback();
        });
      };
      if (workMs > 0) {
        setTimeout(checkpoint, workMs);
      } else {
        checkpoint();
      }
    },

    leaseLost: function (input, completeCallback) {
      emit({type: 'lease_lost', shard: shardId});
      completeCallback();
    },

    shardEnded: function (input, completeCallback) {
      input.checkpointer.checkpoint(function (err) {
        if (!err) {
          emit({type: 'shard_ended', shard: shardId});
          emit({type: 'checkpoint', shard: shardId, position: 'SHARD_END'});
        }
        completeCallback();
      });
    },

    shutdownRequested: function (input, completeCallback) {
      emit({type: 'shutdown_requested', shard: shardId});
      input.checkpointer.checkpoint(function (err) {
        completeCallback();
      });
    },
  };
}

kcl(processor()).run();
