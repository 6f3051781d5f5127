// Package benchkinesis is a fast in-process Kinesis server for benchmarks.
// It answers the calls a polling consumer makes (DescribeStreamSummary,
// ListShards, GetShardIterator, GetRecords) over HTTP, so that the real SDK
// client does the real work of signing, sending and decoding, while the
// server costs next to nothing: every GetRecords response is built once in
// advance per shard, and serving one only copies it and patches a page number
// into its sequence numbers and next iterator.
//
// Each shard is an endless sequence of pages of [Options.RecordsPerResponse]
// records with strictly increasing sequence numbers; GetRecords ignores its
// Limit and always returns one whole page. [Server.Hold] makes GetRecords
// calls wait until [Server.Release], so that a benchmark can start every
// reader first and time only the reading.
//
// It is not a Kinesis emulator: no writes, no resharding, no errors beyond a
// malformed request. Use kinesis-mock for behaviour, this for cost.
package benchkinesis

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
)

// Options configures a [Server]. Zero values select the defaults.
type Options struct {
	// StreamName names the one stream served (default "bench").
	StreamName string
	// Shards is the number of shards (default 1, at most 9999).
	Shards int
	// RecordSize is the data size of every record in bytes (default 1024).
	RecordSize int
	// RecordsPerResponse is the number of records in every GetRecords
	// response (default 1000). Zero records with Empty.
	RecordsPerResponse int
	// Empty makes every GetRecords response hold no records, as an idle
	// shard's do.
	Empty bool
}

const (
	seqDigits  = 56 // a Kinesis sequence number's length
	pageDigits = 12
	// arrival is the records' ApproximateArrivalTimestamp (epoch seconds).
	arrival = "1767225600.000"
)

// Server is the benchmark Kinesis server; it is an http.Handler.
type Server struct {
	opts Options
	arn  string

	// shards holds one response template per shard.
	shards []template

	mu      sync.Mutex
	held    bool
	release chan struct{} // closed by Release
	waiting int           // GetRecords calls waiting for Release
	changed chan struct{} // closed and replaced whenever waiting grows

	pool  sync.Pool
	calls [opCount]atomic.Int64
}

// template is one shard's GetRecords response with the page number left to
// patch in.
type template struct {
	body []byte
	// pageAt are the offsets of the page field of every sequence number;
	// nextAt is the offset of the page field of NextShardIterator.
	pageAt []int
	nextAt int
}

// Operations counted by [Server.Calls].
const (
	OpGetRecords = iota
	OpGetShardIterator
	OpListShards
	OpDescribeStreamSummary
	opCount
)

// New builds every shard's response template and returns the server.
func New(opts Options) *Server {
	if opts.StreamName == "" {
		opts.StreamName = "bench"
	}
	if opts.Shards <= 0 {
		opts.Shards = 1
	}
	if opts.Shards > 9999 {
		panic("benchkinesis: at most 9999 shards")
	}
	if opts.RecordSize <= 0 {
		opts.RecordSize = 1024
	}
	if opts.RecordsPerResponse <= 0 {
		opts.RecordsPerResponse = 1000
	}
	if opts.Empty {
		opts.RecordsPerResponse = 0
	}
	s := &Server{
		opts:    opts,
		arn:     "arn:aws:kinesis:us-east-1:000000000000:stream/" + opts.StreamName,
		release: make(chan struct{}),
		changed: make(chan struct{}),
	}
	close(s.release) // not held
	for i := range opts.Shards {
		s.shards = append(s.shards, s.buildTemplate(i))
	}
	return s
}

// StreamName returns the name of the stream served.
func (s *Server) StreamName() string { return s.opts.StreamName }

// RecordsPerResponse returns the number of records of every GetRecords
// response.
func (s *Server) RecordsPerResponse() int { return s.opts.RecordsPerResponse }

// ResponseBytes returns the size of one GetRecords response body of shard 0.
func (s *Server) ResponseBytes() int { return len(s.shards[0].body) }

// Calls returns how many calls of op (OpGetRecords, ...) were served.
func (s *Server) Calls(op int) int64 { return s.calls[op].Load() }

// ShardID returns the ID of shard i.
func ShardID(i int) string { return fmt.Sprintf("shardId-%012d", i) }

func iterator(shard, page int) string { return fmt.Sprintf("it-%04d-%0*d", shard, pageDigits, page) }

func (s *Server) buildTemplate(shard int) template {
	var b bytes.Buffer
	b.WriteString(`{"MillisBehindLatest":`)
	if s.opts.Empty {
		b.WriteString("0")
	} else {
		b.WriteString("60000")
	}
	b.WriteString(`,"NextShardIterator":"`)
	t := template{nextAt: b.Len() + len("it-0000-")}
	b.WriteString(iterator(shard, 0))
	b.WriteString(`","Records":[`)
	data := make([]byte, s.opts.RecordSize)
	enc := make([]byte, base64.StdEncoding.EncodedLen(len(data)))
	for i := range s.opts.RecordsPerResponse {
		if i > 0 {
			b.WriteByte(',')
		}
		for j := range data {
			data[j] = byte('a' + (i+j)%26)
		}
		base64.StdEncoding.Encode(enc, data)
		b.WriteString(`{"ApproximateArrivalTimestamp":` + arrival + `,"Data":"`)
		b.Write(enc)
		b.WriteString(`","PartitionKey":"pk-` + strconv.Itoa(i) + `","SequenceNumber":"`)
		// 49 + shard (4) + page (12) + index (6), padded to 56 digits: the
		// same length everywhere, so that text order is numeric order.
		b.WriteString("49" + fmt.Sprintf("%04d", shard))
		t.pageAt = append(t.pageAt, b.Len())
		seq := fmt.Sprintf("%0*d%06d", pageDigits, 0, i)
		b.WriteString(seq)
		for range seqDigits - 6 - len(seq) {
			b.WriteByte('0')
		}
		b.WriteString(`"}`)
	}
	b.WriteString("]}")
	t.body = b.Bytes()
	return t
}

// Hold makes GetRecords calls wait until Release.
func (s *Server) Hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.held {
		s.held = true
		s.release = make(chan struct{})
	}
}

// Release lets the GetRecords calls held since Hold proceed, and the later
// ones too.
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held {
		s.held = false
		s.waiting = 0
		close(s.release)
	}
}

// WaitHeld blocks until n GetRecords calls are waiting for Release, or ctx
// ends.
func (s *Server) WaitHeld(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		ok, ch := s.waiting >= n, s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

func (s *Server) wait(ctx context.Context) {
	s.mu.Lock()
	rel := s.release
	if s.held {
		s.waiting++
		close(s.changed)
		s.changed = make(chan struct{})
	}
	s.mu.Unlock()
	select {
	case <-rel:
	case <-ctx.Done():
	}
}

// ServeHTTP answers one Kinesis API call.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, "InvalidArgumentException", err.Error())
		return
	}
	switch target := r.Header.Get("X-Amz-Target"); target {
	case "Kinesis_20131202.GetRecords":
		s.calls[OpGetRecords].Add(1)
		s.getRecords(w, r, body)
	case "Kinesis_20131202.GetShardIterator":
		s.calls[OpGetShardIterator].Add(1)
		s.getShardIterator(w, body)
	case "Kinesis_20131202.ListShards":
		s.calls[OpListShards].Add(1)
		s.listShards(w)
	case "Kinesis_20131202.DescribeStreamSummary":
		s.calls[OpDescribeStreamSummary].Add(1)
		s.describe(w)
	default:
		writeError(w, "UnknownOperationException", "benchkinesis does not serve "+target)
	}
}

var iteratorField = []byte(`"ShardIterator":"`)

func (s *Server) getRecords(w http.ResponseWriter, r *http.Request, body []byte) {
	shard, page, ok := parseIterator(body)
	if !ok || shard >= len(s.shards) {
		writeError(w, "InvalidArgumentException", "bad shard iterator")
		return
	}
	s.wait(r.Context())
	t := &s.shards[shard]
	bp, _ := s.pool.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	buf := append((*bp)[:0], t.body...)
	putDigits(buf[t.nextAt:t.nextAt+pageDigits], page+1)
	if len(t.pageAt) > 0 {
		putDigits(buf[t.pageAt[0]:t.pageAt[0]+pageDigits], page)
		first := buf[t.pageAt[0] : t.pageAt[0]+pageDigits]
		for _, at := range t.pageAt[1:] {
			copy(buf[at:at+pageDigits], first)
		}
	}
	h := w.Header()
	h["Content-Type"] = []string{"application/x-amz-json-1.1"}
	h["Content-Length"] = []string{strconv.Itoa(len(buf))}
	_, _ = w.Write(buf)
	*bp = buf
	s.pool.Put(bp)
}

// parseIterator finds "ShardIterator":"it-SSSS-PPPPPPPPPPPP" in a request
// without decoding the whole of it.
func parseIterator(body []byte) (shard, page int, ok bool) {
	i := bytes.Index(body, iteratorField)
	if i < 0 {
		return 0, 0, false
	}
	v := body[i+len(iteratorField):]
	const n = len("it-0000-") + pageDigits
	if len(v) < n || !bytes.HasPrefix(v, []byte("it-")) || v[7] != '-' {
		return 0, 0, false
	}
	shard, ok1 := atoi(v[3:7])
	page, ok2 := atoi(v[8:n])
	return shard, page, ok1 && ok2
}

func atoi(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// putDigits writes n into dst in decimal, zero-padded to len(dst).
func putDigits(dst []byte, n int) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = byte('0' + n%10)
		n /= 10
	}
}

func (s *Server) getShardIterator(w http.ResponseWriter, body []byte) {
	var in struct{ ShardId string }
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, "InvalidArgumentException", err.Error())
		return
	}
	for i := range s.opts.Shards {
		if ShardID(i) == in.ShardId {
			writeJSON(w, map[string]string{"ShardIterator": iterator(i, 0)})
			return
		}
	}
	writeError(w, "ResourceNotFoundException", "no shard "+in.ShardId)
}

func (s *Server) listShards(w http.ResponseWriter) {
	max := new(big.Int).Lsh(big.NewInt(1), 128)
	n := big.NewInt(int64(s.opts.Shards))
	shards := make([]map[string]any, s.opts.Shards)
	for i := range shards {
		start := new(big.Int).Div(new(big.Int).Mul(max, big.NewInt(int64(i))), n)
		end := new(big.Int).Div(new(big.Int).Mul(max, big.NewInt(int64(i+1))), n)
		end.Sub(end, big.NewInt(1))
		shards[i] = map[string]any{
			"ShardId":             ShardID(i),
			"HashKeyRange":        map[string]string{"StartingHashKey": start.String(), "EndingHashKey": end.String()},
			"SequenceNumberRange": map[string]string{"StartingSequenceNumber": fmt.Sprintf("49%04d%0*d", i, seqDigits-6, 0)},
		}
	}
	writeJSON(w, map[string]any{"Shards": shards})
}

func (s *Server) describe(w http.ResponseWriter) {
	writeJSON(w, map[string]any{"StreamDescriptionSummary": map[string]any{
		"StreamName":              s.opts.StreamName,
		"StreamARN":               s.arn,
		"StreamStatus":            "ACTIVE",
		"StreamModeDetails":       map[string]string{"StreamMode": "PROVISIONED"},
		"RetentionPeriodHours":    24,
		"StreamCreationTimestamp": 1767225600,
		"EnhancedMonitoring":      []any{map[string]any{"ShardLevelMetrics": []string{}}},
		"EncryptionType":          "NONE",
		"OpenShardCount":          s.opts.Shards,
		"ConsumerCount":           0,
	}})
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, "InternalFailure", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, typ, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(http.StatusBadRequest)
	b, _ := json.Marshal(map[string]string{"__type": typ, "message": msg})
	_, _ = w.Write(b)
}
