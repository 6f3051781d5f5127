package reader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// minEmptyReadInterval keeps empty reads of one shard at most 5 per second
// (the GetRecords limit per shard), whatever IdleTimeBetweenReads says.
const minEmptyReadInterval = 200 * time.Millisecond

// pollFetcher reads a shard with GetShardIterator and GetRecords. A new
// iterator starts AT_SEQUENCE_NUMBER of the last record fetched (the core's
// filter drops the repeat), which also reveals records trimmed meanwhile.
type pollFetcher struct {
	r      *shardReader
	client KinesisAPI
	// iterator is the shard iterator for the next GetRecords; "" when a new
	// one must be got.
	iterator string
	// pending is a retryable error of the first GetShardIterator, in Open:
	// the fetch goroutine retries it after a backoff.
	pending error
	// expiredInARow counts iterator expiries without a successful read.
	expiredInARow int
}

// open gets the first shard iterator. Errors that retrying cannot fix fail
// Open; others are retried by fetch.
func (p *pollFetcher) open(ctx context.Context) error {
	err := p.getIterator(ctx)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("shardline: shard %s: get shard iterator: %w", p.r.shardID, ctx.Err())
	case !classify(err).Retryable():
		return p.r.fatal("get shard iterator", err)
	}
	p.pending = err
	return nil
}

// callContext returns the context of one Kinesis call: ctx bounded by
// CallTimeout. A call that runs out of it fails with an error that classify
// takes for transient (context.DeadlineExceeded), while ctx itself is still
// live, so the caller retries.
func (p *pollFetcher) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if p.r.opts.CallTimeout < 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, p.r.opts.CallTimeout)
}

// fetch loops GetRecords until the shard ends (io.EOF), an error that
// retrying cannot fix, or ctx ends.
func (p *pollFetcher) fetch(ctx context.Context) error {
	r := p.r
	if p.pending != nil {
		if err := r.retry(ctx, "get shard iterator", p.pending); err != nil {
			return err
		}
	}
	for {
		if p.iterator == "" {
			if err := p.getIterator(ctx); err != nil {
				if err := r.retry(ctx, "get shard iterator", err); err != nil {
					return err
				}
				continue
			}
		}
		callStart := time.Now()
		cctx, cancel := p.callContext(ctx)
		out, err := p.client.GetRecords(cctx, &kinesis.GetRecordsInput{
			ShardIterator: aws.String(p.iterator),
			Limit:         aws.Int32(int32(r.opts.MaxRecords)),
			StreamARN:     optional(r.opts.StreamARN),
		})
		cancel()
		if out != nil {
			r.observe(ctx, "GetRecords", time.Since(callStart), out.Records, aws.ToInt64(out.MillisBehindLatest), err)
		} else {
			r.observe(ctx, "GetRecords", time.Since(callStart), nil, 0, err)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if classify(err) == kindExpired {
				p.iterator = ""
				p.expiredInARow++
				r.log.InfoContext(ctx, "reader: shard iterator expired, getting a new one",
					slog.String("from", r.position(types.ShardIteratorTypeAtSequenceNumber).String()))
				if p.expiredInARow > 1 { // a fresh iterator expired: do not spin
					if err := sleep(ctx, r.nextDelay()); err != nil {
						return err
					}
				}
				continue
			}
			if err := r.retry(ctx, "get records", err); err != nil {
				return err
			}
			continue
		}
		r.bo.Reset()
		p.expiredInARow = 0
		f := fetched{
			records:      out.Records,
			millisBehind: aws.ToInt64(out.MillisBehindLatest),
			idleEvery:    max(r.opts.IdleTimeBetweenReads, minEmptyReadInterval),
		}
		if n := len(out.Records); n > 0 {
			f.resume = aws.ToString(out.Records[n-1].SequenceNumber)
		}
		if next := aws.ToString(out.NextShardIterator); next == "" {
			f.ended, f.children = true, out.ChildShards
		} else {
			p.iterator = next
		}
		ended, err := r.deliver(ctx, f)
		if err != nil {
			return err
		}
		if ended {
			return io.EOF
		}
		if len(out.Records) == 0 {
			pause := max(r.opts.IdleTimeBetweenReads, minEmptyReadInterval-time.Since(callStart))
			if err := sleep(ctx, pause); err != nil {
				return err
			}
		}
	}
}

// getIterator gets a shard iterator where reading must resume. If an
// AT_SEQUENCE_NUMBER position was trimmed, it falls back to TRIM_HORIZON
// and the core notes the gap.
func (p *pollFetcher) getIterator(ctx context.Context) error {
	r := p.r
	for {
		pos := r.begin(types.ShardIteratorTypeAtSequenceNumber)
		in := &kinesis.GetShardIteratorInput{
			ShardId:           aws.String(r.shardID),
			ShardIteratorType: pos.typ,
			StreamARN:         optional(r.opts.StreamARN),
		}
		if in.StreamARN == nil {
			in.StreamName = aws.String(r.opts.StreamName)
		}
		if pos.seq != "" {
			in.StartingSequenceNumber = aws.String(pos.seq)
		}
		if !pos.at.IsZero() {
			in.Timestamp = aws.Time(pos.at)
		}
		cctx, cancel := p.callContext(ctx)
		out, err := p.client.GetShardIterator(cctx, in)
		cancel()
		if err == nil && aws.ToString(out.ShardIterator) == "" {
			err = errors.New("GetShardIterator returned no iterator")
		}
		if err != nil {
			if pos.typ == types.ShardIteratorTypeAtSequenceNumber && ctx.Err() == nil && classify(err) == kindTrimmed {
				r.trimmed(ctx, pos, err)
				continue
			}
			return err
		}
		p.iterator = aws.ToString(out.ShardIterator)
		return nil
	}
}

// optional returns nil for "", else a pointer to s.
func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
