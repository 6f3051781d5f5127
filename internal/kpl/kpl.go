// Package kpl reads and writes the aggregated record format of the Kinesis
// Producer Library (KPL): an aggregated Kinesis record is the four magic
// bytes F3 89 9A C2, a protobuf AggregatedRecord message (a table of
// partition keys, a table of explicit hash keys and the user records, each
// pointing into the tables), and the MD5 digest of that message. The
// message is encoded and decoded by google.golang.org/protobuf from the
// KPL's schema (kplpb).
//
// The reader unpacks aggregates with it and the producer builds them with
// [Aggregator]; the public kpl package wraps it for programs that read or
// write Kinesis by other means.
package kpl

import (
	"bytes"
	"crypto/md5"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/shardline/shardline/internal/kpl/kplpb"
)

// magic starts every aggregated record.
const magic = "\xF3\x89\x9A\xC2"

// digestSize is the size of the MD5 trailer.
const digestSize = md5.Size

// Overhead is the size of an aggregated record beyond its protobuf message:
// the magic bytes and the MD5 trailer.
const Overhead = len(magic) + digestSize

// Errors of [Unmarshal]. Every error it returns matches exactly one of them.
var (
	// ErrNotAggregated: the data does not start with the magic bytes or is
	// too short to hold a digest. It is a plain record.
	ErrNotAggregated = errors.New("kpl: not an aggregated record")
	// ErrChecksum: the data starts with the magic bytes but the MD5 trailer
	// does not match the message.
	ErrChecksum = errors.New("kpl: aggregated record digest mismatch")
	// ErrMalformed: the digest matches but the message cannot be read: bad
	// protobuf, a missing required field, a table index out of range, or no
	// records at all.
	ErrMalformed = errors.New("kpl: malformed aggregated record")
)

// Record is one user record inside an aggregate.
type Record struct {
	// PartitionKey is the user record's partition key.
	PartitionKey string
	// ExplicitHashKey is the user record's explicit hash key (a decimal
	// number), or "" when it has none.
	ExplicitHashKey string
	// Data is the user record's payload.
	Data []byte
}

// IsAggregated reports whether data looks like an aggregated record: it
// starts with the magic bytes and is long enough to hold the digest. It does
// not check the digest; [Unmarshal] does.
func IsAggregated(data []byte) bool {
	return len(data) >= Overhead && string(data[:len(magic)]) == magic
}

// Unmarshal returns the user records of an aggregated record, in order (a
// record's index is its sub-sequence number). The returned records do not
// share memory with data. The error matches [ErrNotAggregated],
// [ErrChecksum] or [ErrMalformed].
func Unmarshal(data []byte) ([]Record, error) {
	if !IsAggregated(data) {
		return nil, ErrNotAggregated
	}
	body := data[len(magic) : len(data)-digestSize]
	sum := md5.Sum(body)
	if !bytes.Equal(sum[:], data[len(data)-digestSize:]) {
		return nil, ErrChecksum
	}
	var msg kplpb.AggregatedRecord
	if err := proto.Unmarshal(body, &msg); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(msg.Records) == 0 {
		return nil, fmt.Errorf("%w: no user records", ErrMalformed)
	}
	pks, ehks := msg.GetPartitionKeyTable(), msg.GetExplicitHashKeyTable()
	out := make([]Record, len(msg.Records))
	for i, r := range msg.Records {
		pki := r.GetPartitionKeyIndex()
		if pki >= uint64(len(pks)) {
			return nil, fmt.Errorf("%w: record %d: partition key index %d outside a table of %d", ErrMalformed, i, pki, len(pks))
		}
		out[i] = Record{PartitionKey: pks[pki], Data: r.GetData()}
		if r.ExplicitHashKeyIndex != nil {
			ehki := *r.ExplicitHashKeyIndex
			if ehki >= uint64(len(ehks)) {
				return nil, fmt.Errorf("%w: record %d: explicit hash key index %d outside a table of %d", ErrMalformed, i, ehki, len(ehks))
			}
			out[i].ExplicitHashKey = ehks[ehki]
		}
		if out[i].Data == nil {
			out[i].Data = []byte{}
		}
	}
	return out, nil
}

// Marshal returns the aggregated record holding records, in order. It fails
// only when records is empty.
func Marshal(records []Record) ([]byte, error) {
	var a Aggregator
	for _, r := range records {
		a.Add(r)
	}
	return a.Marshal()
}

// Aggregator builds an aggregated record one user record at a time and
// knows its exact encoded size at every step, so that a producer can stop
// before a limit. The zero value is empty and ready to use. An Aggregator
// is not safe for concurrent use.
type Aggregator struct {
	records  []Record
	pkIndex  map[string]uint64
	pkTable  []string
	ehkIndex map[string]uint64
	ehkTable []string
	bodySize int
}

// Len returns the number of user records added.
func (a *Aggregator) Len() int { return len(a.records) }

// Size returns the encoded size of the aggregated record so far, magic bytes
// and digest included.
func (a *Aggregator) Size() int { return Overhead + a.bodySize }

// SizeWith returns what Size would be after adding r.
func (a *Aggregator) SizeWith(r Record) int {
	grow, _, _ := a.growth(r)
	return a.Size() + grow
}

// growth returns how much the message grows when r is added, and whether
// its keys are new to the tables.
func (a *Aggregator) growth(r Record) (n int, newPK, newEHK bool) {
	pki, ok := a.pkIndex[r.PartitionKey]
	if !ok {
		pki = uint64(len(a.pkTable))
		newPK = true
		n += 1 + protowire.SizeBytes(len(r.PartitionKey))
	}
	rec := 1 + protowire.SizeVarint(pki) + 1 + protowire.SizeBytes(len(r.Data))
	if r.ExplicitHashKey != "" {
		ehki, ok := a.ehkIndex[r.ExplicitHashKey]
		if !ok {
			ehki = uint64(len(a.ehkTable))
			newEHK = true
			n += 1 + protowire.SizeBytes(len(r.ExplicitHashKey))
		}
		rec += 1 + protowire.SizeVarint(ehki)
	}
	n += 1 + protowire.SizeBytes(rec)
	return n, newPK, newEHK
}

// Add appends r. The aggregator keeps r.Data until Reset: do not modify it.
func (a *Aggregator) Add(r Record) {
	grow, newPK, newEHK := a.growth(r)
	if newPK {
		if a.pkIndex == nil {
			a.pkIndex = make(map[string]uint64)
		}
		a.pkIndex[r.PartitionKey] = uint64(len(a.pkTable))
		a.pkTable = append(a.pkTable, r.PartitionKey)
	}
	if newEHK {
		if a.ehkIndex == nil {
			a.ehkIndex = make(map[string]uint64)
		}
		a.ehkIndex[r.ExplicitHashKey] = uint64(len(a.ehkTable))
		a.ehkTable = append(a.ehkTable, r.ExplicitHashKey)
	}
	a.records = append(a.records, r)
	a.bodySize += grow
}

// Records returns the user records added so far. The slice is the
// aggregator's own until Reset.
func (a *Aggregator) Records() []Record { return a.records }

// Marshal encodes the aggregated record. It fails when no record was added.
// The aggregator is unchanged.
func (a *Aggregator) Marshal() ([]byte, error) {
	if len(a.records) == 0 {
		return nil, errors.New("kpl: no user records to aggregate")
	}
	msg := &kplpb.AggregatedRecord{
		PartitionKeyTable:    a.pkTable,
		ExplicitHashKeyTable: a.ehkTable,
		Records:              make([]*kplpb.Record, len(a.records)),
	}
	recs := make([]kplpb.Record, len(a.records))
	for i, r := range a.records {
		pki := a.pkIndex[r.PartitionKey]
		recs[i].PartitionKeyIndex = &pki
		if r.ExplicitHashKey != "" {
			ehki := a.ehkIndex[r.ExplicitHashKey]
			recs[i].ExplicitHashKeyIndex = &ehki
		}
		data := r.Data
		if data == nil {
			data = []byte{} // required field: present even when empty
		}
		recs[i].Data = data
		msg.Records[i] = &recs[i]
	}
	out := make([]byte, len(magic), a.Size())
	copy(out, magic)
	out, err := proto.MarshalOptions{}.MarshalAppend(out, msg)
	if err != nil {
		return nil, fmt.Errorf("kpl: encode aggregated record: %w", err)
	}
	sum := md5.Sum(out[len(magic):])
	return append(out, sum[:]...), nil
}

// Reset empties the aggregator for reuse.
func (a *Aggregator) Reset() {
	*a = Aggregator{}
}
