package producer

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/shardline/shardline/kcl"
)

var _ kcl.DeadLetterHandler = (*Producer)(nil)

// deadLetterJSON is the record HandleDeadLetter writes.
type deadLetterJSON struct {
	ShardID           string    `json:"shard_id"`
	SequenceNumber    string    `json:"sequence_number"`
	SubSequenceNumber int64     `json:"sub_sequence_number"`
	PartitionKey      string    `json:"partition_key"`
	Data              []byte    `json:"data"`
	Arrival           time.Time `json:"arrival"`
	Attempts          int       `json:"attempts"`
	Reason            string    `json:"reason"`
	Error             string    `json:"error,omitempty"`
	At                time.Time `json:"at"`
}

// HandleDeadLetter makes a Producer a kcl.DeadLetterHandler (for
// worker.DeliveryPolicy.DeadLetters): it writes the dead letter to the
// producer's stream as one JSON record under the record's own partition
// key, and returns once Kinesis stored it. The JSON object has the fields
// shard_id, sequence_number, sub_sequence_number, partition_key, data
// (base64), arrival, attempts, reason, error and at.
func (p *Producer) HandleDeadLetter(ctx context.Context, d kcl.DeadLetter) error {
	j := deadLetterJSON{ShardID: d.ShardID, SequenceNumber: d.Record.SequenceNumber,
		SubSequenceNumber: d.Record.SubSequenceNumber, PartitionKey: d.Record.PartitionKey, Data: d.Record.Data,
		Arrival: d.Record.ApproximateArrivalTimestamp, Attempts: d.Attempts, Reason: d.Reason, At: time.Now()}
	if d.Err != nil {
		j.Error = d.Err.Error()
	}
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("producer: dead letter: %w", err)
	}
	pk := d.Record.PartitionKey
	if pk == "" {
		pk = d.ShardID
	}
	res, err := p.Put(ctx, pk, data)
	if err != nil {
		return err
	}
	_, err = res.Wait(ctx)
	return err
}
