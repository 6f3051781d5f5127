package efotest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/internal/testenv"
)

// Defaults of [ServerOptions].
const (
	// DefaultEventInterval is how often an idle subscription gets an empty
	// event.
	DefaultEventInterval = time.Second
	// DefaultLifetime is how long a subscription lasts, as on Kinesis.
	DefaultLifetime = 5 * time.Minute
	// DefaultEventRecords is the most records in one event.
	DefaultEventRecords = 10000
	// DefaultMaxConsumers is the most consumers a stream may have, as on
	// Kinesis.
	DefaultMaxConsumers = 20
)

// ServerOptions configures a [Server]. Zero values select the defaults.
type ServerOptions struct {
	// StreamName names the one stream served (default "s").
	StreamName string
	// EventInterval is the time between events when a subscription has
	// nothing new to send (default 1s). New records are sent at once.
	EventInterval time.Duration
	// Lifetime ends each subscription normally after this long (default
	// 5 minutes, as on Kinesis).
	Lifetime time.Duration
	// EventRecords bounds the records of one event (default 10000).
	EventRecords int
	// TrimError makes AT_ or AFTER_SEQUENCE_NUMBER positions before the trim
	// horizon fail with InvalidArgumentException; otherwise reading starts at
	// the oldest retained record.
	TrimError bool
	// MaxConsumers is the stream's consumer limit (default 20).
	MaxConsumers int
}

// Fault is what the server does to one SubscribeToShard call, as decided by
// the hook set with [Server.OnSubscribe]. The zero Fault serves the call
// normally.
type Fault struct {
	// Reject fails the call before any event with this error type (such as
	// "ResourceInUseException", "LimitExceededException",
	// "InternalFailure"): HTTP 500 for InternalFailure, 400 otherwise.
	Reject string
	// After is the number of events sent before Exception, Stall or End
	// applies.
	After int
	// Exception sends an exception message of this type (such as
	// "ResourceInUseException") after After events and ends the response.
	Exception string
	// Stall stops sending after After events but keeps the connection open
	// until the client goes away: a half-open stream.
	Stall bool
	// End ends the subscription normally after After events, as the
	// five-minute limit does.
	End bool
}

// SubscribeCall records one SubscribeToShard request.
type SubscribeCall struct {
	// N numbers the calls from 1.
	N int
	// At is when the call arrived.
	At time.Time
	// ShardID, ConsumerARN and the starting position are the request's.
	ShardID, ConsumerARN string
	// Type is the StartingPosition type, such as "AT_SEQUENCE_NUMBER".
	Type string
	// SequenceNumber is the StartingPosition's, if any.
	SequenceNumber string
	// Timestamp is the StartingPosition's, if any.
	Timestamp time.Time
}

// Server is an in-process fake of the Kinesis API for one stream, enough for
// enhanced fan-out: DescribeStreamSummary, ListShards, the consumer calls and
// SubscribeToShard, whose responses use the real event-stream encoding
// (starting with the initial-response event, as Kinesis does). It serves
// over in-memory connections, so it works inside testing/synctest bubbles;
// [Server.Client] returns a real SDK client connected to it. Faults are
// injected per SubscribeToShard call through [Server.OnSubscribe].
//
// Safe for concurrent use.
type Server struct {
	opts      ServerOptions
	streamARN string
	ln        *memListener
	srv       *http.Server
	served    chan struct{} // closed when Serve returns
	handlers  sync.WaitGroup

	mu        sync.Mutex
	shards    map[string]*fakeShard
	order     []string // shard IDs in creation order
	nextSeq   int64
	consumers map[string]*fakeConsumer // by name
	consumerN int
	hook      func(SubscribeCall) Fault
	calls     []SubscribeCall
	active    int // subscriptions being served
	events    int // events sent, all subscriptions
	transport *http.Transport
}

type fakeShard struct {
	id       string
	parents  []string
	base     string // a sequence number before every record of the shard
	records  []fakeRecord
	trimmed  int
	closed   bool
	children []string
	changed  chan struct{} // closed and replaced when records are added or the shard closes
}

type fakeRecord struct {
	seq     string
	data    []byte
	key     string
	arrival time.Time
}

type fakeConsumer struct {
	name, arn string
	status    string
	created   time.Time
}

// NewServer starts a fake Kinesis server. Close it when done.
func NewServer(opts ServerOptions) *Server {
	if opts.StreamName == "" {
		opts.StreamName = "s"
	}
	if opts.EventInterval == 0 {
		opts.EventInterval = DefaultEventInterval
	}
	if opts.Lifetime == 0 {
		opts.Lifetime = DefaultLifetime
	}
	if opts.EventRecords == 0 {
		opts.EventRecords = DefaultEventRecords
	}
	if opts.MaxConsumers == 0 {
		opts.MaxConsumers = DefaultMaxConsumers
	}
	s := &Server{
		opts:      opts,
		streamARN: "arn:aws:kinesis:us-east-1:123456789012:stream/" + opts.StreamName,
		ln:        newMemListener(),
		served:    make(chan struct{}),
		shards:    map[string]*fakeShard{},
		consumers: map[string]*fakeConsumer{},
	}
	s.srv = &http.Server{Handler: s}
	go func() {
		defer close(s.served)
		_ = s.srv.Serve(s.ln)
	}()
	return s
}

// StreamName returns the stream's name.
func (s *Server) StreamName() string { return s.opts.StreamName }

// StreamARN returns the stream's ARN.
func (s *Server) StreamARN() string { return s.streamARN }

// HTTPClient returns an HTTP client connected to the server. Every call
// returns the same client.
func (s *Server) HTTPClient() *http.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.transport == nil {
		s.transport = &http.Transport{DialContext: s.ln.DialContext}
	}
	return &http.Client{Transport: bufferedBodies{s.transport}}
}

// bufferedBodies is the fake's client transport. It reads each request
// body into memory before sending it. The SDK closes a request's body as soon
// as the response headers arrive, and the HTTP/1 transport reads a body once
// more after sending it (to check its length); over the synchronous
// in-memory connections a fast fake can answer in between, the transport
// then fails with io.EOF and drops the connection, and the streaming
// response with it. A body in memory is read once, before sending.
type bufferedBodies struct{ next http.RoundTripper }

// RoundTrip sends req with its body read into memory.
func (b bufferedBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		data, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(data))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
		req.ContentLength = int64(len(data))
	}
	return b.next.RoundTrip(req)
}

// Client returns an SDK Kinesis client connected to the server, with the
// SDK's own retries off (so that tests see every error the code under test
// handles). optFns adjust the client further.
func (s *Server) Client(optFns ...func(*kinesis.Options)) *kinesis.Client {
	hc := s.HTTPClient()
	return kinesis.NewFromConfig(testenv.AWSConfig(), append([]func(*kinesis.Options){func(o *kinesis.Options) {
		o.BaseEndpoint = aws.String("http://fake-kinesis")
		o.HTTPClient = hc
		o.RetryMaxAttempts = 1
	}}, optFns...)...)
}

// Close stops the server, closes every connection and waits for every
// handler to return.
func (s *Server) Close() {
	_ = s.srv.Close()
	<-s.served
	s.handlers.Wait()
	s.mu.Lock()
	tr := s.transport
	s.mu.Unlock()
	if tr != nil {
		tr.CloseIdleConnections()
	}
}

// OnSubscribe sets the hook deciding the fault of each SubscribeToShard call
// (nil: none).
func (s *Server) OnSubscribe(hook func(SubscribeCall) Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = hook
}

// Calls returns the SubscribeToShard calls so far.
func (s *Server) Calls() []SubscribeCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SubscribeCall(nil), s.calls...)
}

// Active returns the number of subscriptions being served.
func (s *Server) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active
}

// EventsSent returns the number of events written to subscribers.
func (s *Server) EventsSent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.events
}

// seqString formats the n-th sequence number: fixed width, so that string
// order is numeric order.
func seqString(n int64) string { return fmt.Sprintf("4968%052d", n) }

// AddShard adds an open shard whose parents are the given shards.
func (s *Server) AddShard(id string, parents ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.shards[id]; ok {
		return
	}
	s.nextSeq++
	s.shards[id] = &fakeShard{id: id, parents: parents, base: seqString(s.nextSeq), changed: make(chan struct{})}
	s.order = append(s.order, id)
}

// Put appends n records to a shard, with data "<shard>/<i>" (i counting the
// shard's records from 0) and returns their sequence numbers.
func (s *Server) Put(shardID string, n int) []string {
	data := make([][]byte, n)
	s.mu.Lock()
	base := len(s.shards[shardID].records)
	s.mu.Unlock()
	for i := range data {
		data[i] = fmt.Appendf(nil, "%s/%d", shardID, base+i)
	}
	return s.PutData(shardID, data...)
}

// PutData appends records with the given payloads to a shard and returns
// their sequence numbers.
func (s *Server) PutData(shardID string, data ...[]byte) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.shards[shardID]
	seqs := make([]string, len(data))
	for i, d := range data {
		s.nextSeq++
		seqs[i] = seqString(s.nextSeq)
		sh.records = append(sh.records, fakeRecord{seq: seqs[i], data: d, key: fmt.Sprintf("pk%d", len(sh.records)%7), arrival: time.Now()})
	}
	sh.notify()
	return seqs
}

// CloseShard closes a shard: once a subscription has sent its last record,
// the next event carries the child shards and no continuation.
func (s *Server) CloseShard(id string, children ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.shards[id]
	sh.closed = true
	sh.children = children
	sh.notify()
}

// Trim makes the first n records of a shard fall out of retention.
func (s *Server) Trim(shardID string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shards[shardID].trimmed = n
}

// RegisterConsumer registers an ACTIVE consumer directly and returns its ARN.
func (s *Server) RegisterConsumer(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.newConsumer(name)
	c.status = "ACTIVE"
	return c.arn
}

func (s *Server) newConsumer(name string) *fakeConsumer {
	s.consumerN++
	c := &fakeConsumer{name: name, arn: fmt.Sprintf("%s/consumer/%s:%d", s.streamARN, name, 1700000000+s.consumerN),
		status: "CREATING", created: time.Now()}
	s.consumers[name] = c
	return c
}

func (sh *fakeShard) notify() {
	close(sh.changed)
	sh.changed = make(chan struct{})
}

// ServeHTTP implements the awsJson1.1 protocol for the supported calls.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handlers.Add(1)
	defer s.handlers.Done()
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "Kinesis_20131202.")
	body, err := io.ReadAll(r.Body)
	if !ok || err != nil {
		writeError(w, "SerializationException", "bad request")
		return
	}
	var out any
	switch op {
	case "SubscribeToShard":
		s.subscribe(w, r, body)
		return
	case "DescribeStreamSummary":
		out, err = s.describeStreamSummary(body)
	case "ListShards":
		out, err = s.listShards(body)
	case "RegisterStreamConsumer":
		out, err = s.registerConsumer(body)
	case "DescribeStreamConsumer":
		out, err = s.describeConsumer(body)
	case "ListStreamConsumers":
		out, err = s.listConsumers(body)
	case "DeregisterStreamConsumer":
		out, err = s.deregisterConsumer(body)
	default:
		err = apiError{"UnknownOperationException", op + " is not supported by the fake"}
	}
	if err != nil {
		var ae apiError
		if !errors.As(err, &ae) {
			ae = apiError{"InternalFailure", err.Error()}
		}
		writeError(w, ae.typ, ae.msg)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(out)
}

// apiError is an error response of the Kinesis API.
type apiError struct{ typ, msg string }

func (e apiError) Error() string { return e.typ + ": " + e.msg }

func writeError(w http.ResponseWriter, typ, msg string) {
	status := http.StatusBadRequest
	if typ == "InternalFailure" || typ == "ServiceUnavailable" {
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-ErrorType", typ)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": msg})
}

func epoch(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

type streamRef struct {
	StreamName, StreamARN string
}

func (s *Server) checkStream(ref streamRef) error {
	if (ref.StreamName != "" && ref.StreamName != s.opts.StreamName) || (ref.StreamARN != "" && ref.StreamARN != s.streamARN) {
		return apiError{"ResourceNotFoundException", "Stream not found"}
	}
	return nil
}

func (s *Server) describeStreamSummary(body []byte) (any, error) {
	var in streamRef
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, err
	}
	if err := s.checkStream(in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	open := 0
	for _, sh := range s.shards {
		if !sh.closed {
			open++
		}
	}
	return map[string]any{"StreamDescriptionSummary": map[string]any{
		"StreamName": s.opts.StreamName, "StreamARN": s.streamARN, "StreamStatus": "ACTIVE",
		"RetentionPeriodHours": 24, "StreamCreationTimestamp": 1.7e9, "EnhancedMonitoring": []any{},
		"OpenShardCount": open, "ConsumerCount": len(s.consumers),
	}}, nil
}

func (s *Server) listShards(body []byte) (any, error) {
	var in streamRef
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, err
	}
	if err := s.checkStream(in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var shards []map[string]any
	for _, id := range s.order {
		sh := s.shards[id]
		rng := map[string]any{"StartingSequenceNumber": sh.base}
		if sh.closed {
			rng["EndingSequenceNumber"] = seqString(s.nextSeq + 1)
		}
		m := map[string]any{
			"ShardId":             id,
			"HashKeyRange":        map[string]string{"StartingHashKey": "0", "EndingHashKey": "340282366920938463463374607431768211455"},
			"SequenceNumberRange": rng,
		}
		if len(sh.parents) > 0 {
			m["ParentShardId"] = sh.parents[0]
		}
		if len(sh.parents) > 1 {
			m["AdjacentParentShardId"] = sh.parents[1]
		}
		shards = append(shards, m)
	}
	return map[string]any{"Shards": shards}, nil
}

type consumerRequest struct {
	StreamARN, ConsumerName, ConsumerARN string
}

func (c *fakeConsumer) description(streamARN string) map[string]any {
	return map[string]any{"ConsumerName": c.name, "ConsumerARN": c.arn, "ConsumerStatus": c.status,
		"ConsumerCreationTimestamp": epoch(c.created), "StreamARN": streamARN}
}

// findConsumer looks a consumer up by name or ARN. Called with s.mu held.
func (s *Server) findConsumer(in consumerRequest) (*fakeConsumer, error) {
	if in.ConsumerARN != "" {
		for _, c := range s.consumers {
			if c.arn == in.ConsumerARN {
				return c, nil
			}
		}
		return nil, apiError{"ResourceNotFoundException", "Consumer " + in.ConsumerARN + " not found"}
	}
	if err := s.checkStream(streamRef{StreamARN: in.StreamARN}); err != nil {
		return nil, err
	}
	if c := s.consumers[in.ConsumerName]; c != nil {
		return c, nil
	}
	return nil, apiError{"ResourceNotFoundException", "ConsumerName " + in.ConsumerName + " not found"}
}

func (s *Server) registerConsumer(body []byte) (any, error) {
	var in consumerRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, err
	}
	if err := s.checkStream(streamRef{StreamARN: in.StreamARN}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.consumers[in.ConsumerName]; ok {
		return nil, apiError{"ResourceInUseException", "Consumer " + in.ConsumerName + " exists"}
	}
	if len(s.consumers) >= s.opts.MaxConsumers {
		return nil, apiError{"LimitExceededException", fmt.Sprintf("Only %d consumers can be registered to a stream at once", s.opts.MaxConsumers)}
	}
	c := s.newConsumer(in.ConsumerName)
	d := c.description(s.streamARN)
	delete(d, "StreamARN")
	return map[string]any{"Consumer": d}, nil
}

// describeConsumer reports a consumer; a CREATING one becomes ACTIVE and a
// DELETING one disappears once it has been described (or listed) in that
// state.
func (s *Server) describeConsumer(body []byte) (any, error) {
	var in consumerRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.findConsumer(in)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"ConsumerDescription": c.description(s.streamARN)}
	switch c.status {
	case "CREATING":
		c.status = "ACTIVE"
	case "DELETING":
		delete(s.consumers, c.name)
	}
	return out, nil
}

func (s *Server) listConsumers(body []byte) (any, error) {
	var in consumerRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, err
	}
	if err := s.checkStream(streamRef{StreamARN: in.StreamARN}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var list []map[string]any
	for _, c := range s.consumers {
		d := c.description(s.streamARN)
		delete(d, "StreamARN")
		list = append(list, d)
		if c.status == "DELETING" {
			delete(s.consumers, c.name) // gone once seen DELETING
		}
	}
	return map[string]any{"Consumers": list}, nil
}

func (s *Server) deregisterConsumer(body []byte) (any, error) {
	var in consumerRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.findConsumer(in)
	if err != nil {
		return nil, err
	}
	c.status = "DELETING"
	return map[string]any{}, nil
}

type subscribeRequest struct {
	ConsumerARN      string
	ShardId          string
	StartingPosition struct {
		Type           string
		SequenceNumber string
		Timestamp      float64
	}
}

// subscribe serves one SubscribeToShard call.
func (s *Server) subscribe(w http.ResponseWriter, r *http.Request, body []byte) {
	var in subscribeRequest
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, "SerializationException", err.Error())
		return
	}
	s.mu.Lock()
	call := SubscribeCall{N: len(s.calls) + 1, At: time.Now(), ShardID: in.ShardId, ConsumerARN: in.ConsumerARN,
		Type: in.StartingPosition.Type, SequenceNumber: in.StartingPosition.SequenceNumber}
	if ts := in.StartingPosition.Timestamp; ts != 0 {
		call.Timestamp = time.Unix(0, int64(ts*1e9))
	}
	s.calls = append(s.calls, call)
	hook := s.hook
	s.mu.Unlock()
	var f Fault
	if hook != nil {
		f = hook(call)
	}
	if f.Reject != "" {
		writeError(w, f.Reject, "injected fault")
		return
	}
	s.mu.Lock()
	pos, err := s.startIndex(call)
	if err == nil {
		s.active++
	}
	s.mu.Unlock()
	if err != nil {
		var ae apiError
		errors.As(err, &ae)
		writeError(w, ae.typ, ae.msg)
		return
	}
	defer func() {
		s.mu.Lock()
		s.active--
		s.mu.Unlock()
	}()

	w.Header().Set("Content-Type", "application/vnd.amazon.eventstream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := eventstream.NewEncoder()
	send := func(msg eventstream.Message) bool {
		if err := enc.Encode(w, msg); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send(eventMessage("initial-response", []byte("{}"))) {
		return
	}
	lifetime := time.NewTimer(s.opts.Lifetime)
	defer lifetime.Stop()
	for sent := 0; ; sent++ {
		if sent == f.After {
			switch {
			case f.Exception != "":
				send(exceptionMessage(f.Exception, "injected fault"))
				return
			case f.Stall:
				<-r.Context().Done()
				return
			case f.End:
				return
			}
		}
		payload, next, ended, wait := s.nextEvent(call.ShardID, pos)
		if !send(eventMessage("SubscribeToShardEvent", payload)) {
			return
		}
		pos = next
		s.mu.Lock()
		s.events++
		s.mu.Unlock()
		if ended {
			return
		}
		if wait == nil {
			continue // more records are ready
		}
		idle := time.NewTimer(s.opts.EventInterval)
		select {
		case <-r.Context().Done():
			idle.Stop()
			return
		case <-lifetime.C:
			idle.Stop()
			return // the subscription's time is up: end it normally
		case <-wait:
		case <-idle.C:
		}
		idle.Stop()
	}
}

// startIndex finds where a subscription starts. Called with s.mu held.
func (s *Server) startIndex(call SubscribeCall) (int, error) {
	var c *fakeConsumer
	for _, x := range s.consumers {
		if x.arn == call.ConsumerARN {
			c = x
		}
	}
	if c == nil || c.status == "DELETING" {
		return 0, apiError{"ResourceNotFoundException", "Consumer " + call.ConsumerARN + " not found"}
	}
	sh := s.shards[call.ShardID]
	if sh == nil {
		return 0, apiError{"ResourceNotFoundException", "Shard " + call.ShardID + " not found"}
	}
	switch call.Type {
	case "TRIM_HORIZON":
		return sh.trimmed, nil
	case "LATEST":
		return len(sh.records), nil
	case "AT_TIMESTAMP":
		for i := sh.trimmed; i < len(sh.records); i++ {
			if !sh.records[i].arrival.Before(call.Timestamp) {
				return i, nil
			}
		}
		return len(sh.records), nil
	case "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER":
		want, ok := new(big.Int).SetString(call.SequenceNumber, 10)
		if !ok {
			return 0, apiError{"InvalidArgumentException", "Invalid StartingSequenceNumber " + call.SequenceNumber}
		}
		pos := len(sh.records)
		for i, rec := range sh.records {
			have, _ := new(big.Int).SetString(rec.seq, 10)
			if c := have.Cmp(want); c > 0 || c == 0 && call.Type == "AT_SEQUENCE_NUMBER" {
				pos = i
				break
			}
		}
		if pos < sh.trimmed {
			if s.opts.TrimError {
				return 0, apiError{"InvalidArgumentException", "StartingSequenceNumber " + call.SequenceNumber +
					" used in SubscribeToShard on shard " + sh.id + " is trimmed: older than the stream's retention period"}
			}
			pos = sh.trimmed
		}
		return pos, nil
	}
	return 0, apiError{"InvalidArgumentException", "bad StartingPosition type " + call.Type}
}

type jsonRecord struct {
	SequenceNumber              string
	ApproximateArrivalTimestamp float64
	Data                        []byte
	PartitionKey                string
}

type jsonChildShard struct {
	ShardId      string
	ParentShards []string
	HashKeyRange map[string]string
}

type jsonEvent struct {
	Records                    []jsonRecord
	ContinuationSequenceNumber *string `json:",omitempty"`
	MillisBehindLatest         int64
	ChildShards                []jsonChildShard `json:",omitempty"`
}

// nextEvent builds the event for a subscription at pos. It returns the
// payload, the next position, whether the shard ended with this event, and
// (when the subscription is caught up) a channel closed when there is news.
func (s *Server) nextEvent(shardID string, pos int) (payload []byte, next int, ended bool, wait <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.shards[shardID]
	pos = max(pos, sh.trimmed)
	end := min(len(sh.records), pos+s.opts.EventRecords)
	ev := jsonEvent{Records: []jsonRecord{}}
	for _, rec := range sh.records[pos:end] {
		ev.Records = append(ev.Records, jsonRecord{SequenceNumber: rec.seq, ApproximateArrivalTimestamp: epoch(rec.arrival),
			Data: rec.data, PartitionKey: rec.key})
	}
	if end < len(sh.records) {
		ev.MillisBehindLatest = max(0, time.Since(sh.records[end].arrival).Milliseconds())
	}
	if sh.closed && end == len(sh.records) {
		for _, c := range sh.children {
			ev.ChildShards = append(ev.ChildShards, jsonChildShard{ShardId: c, ParentShards: []string{sh.id},
				HashKeyRange: map[string]string{"StartingHashKey": "0", "EndingHashKey": "340282366920938463463374607431768211455"}})
		}
		ended = true
	} else {
		cont := sh.base
		if end > 0 {
			cont = sh.records[end-1].seq
		}
		ev.ContinuationSequenceNumber = &cont
	}
	payload, _ = json.Marshal(ev)
	if end == len(sh.records) {
		wait = sh.changed
	}
	return payload, end, ended, wait
}

func eventMessage(eventType string, payload []byte) eventstream.Message {
	var msg eventstream.Message
	msg.Headers.Set(":message-type", eventstream.StringValue("event"))
	msg.Headers.Set(":event-type", eventstream.StringValue(eventType))
	msg.Headers.Set(":content-type", eventstream.StringValue("application/json"))
	msg.Payload = payload
	return msg
}

func exceptionMessage(exceptionType, message string) eventstream.Message {
	var msg eventstream.Message
	msg.Headers.Set(":message-type", eventstream.StringValue("exception"))
	msg.Headers.Set(":exception-type", eventstream.StringValue(exceptionType))
	msg.Headers.Set(":content-type", eventstream.StringValue("application/json"))
	msg.Payload, _ = json.Marshal(map[string]string{"message": message})
	return msg
}
