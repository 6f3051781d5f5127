// Package faults injects, at chosen rates per operation, the failures real
// AWS and the network produce into the HTTP calls of an AWS SDK client:
// throttling (Kinesis ProvisionedThroughputExceeded and LimitExceeded,
// DynamoDB ProvisionedThroughputExceeded and ThrottlingException), 5xx
// responses, client timeouts (with the request lost, or applied by the
// service and only the response lost), connections reset while awaiting the
// response, expired shard iterators on GetRecords, and added latency; and it
// can make a service unavailable (connections refused, or calls hanging)
// until told otherwise.
//
// A [Client] is an aws.HTTPClient, set as the SDK client's HTTPClient
// option. It sees each HTTP request the SDK sends, picks the operation from
// the X-Amz-Target header, and answers with what the service or the network
// would: an error response with the real status, headers and JSON body, or
// the *net.OpError net/http returns for a refused or reset connection, or
// the error of a real http.Client timeout. The SDK then wraps the fault as it
// wraps the real thing, so the code under test meets exactly the errors it
// meets in production. Decisions are drawn from one pseudo-random sequence
// per operation seeded by [Config.Seed]: the n-th HTTP call of an operation
// meets the same fault in every run.
//
// It is for tests, the chaos test and the harness programs; it is never on
// the library's default path.
package faults

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is a kind of injected fault.
type Kind int

// The kinds of faults.
const (
	// None: the call went through untouched (perhaps delayed).
	None Kind = iota
	// Throttle: the service refused the call for exceeding a rate limit.
	Throttle
	// ServerError: the service answered 500 or 503.
	ServerError
	// Timeout: no response came in time. With the rate in
	// Config.TimeoutApplied the request reached the service and took effect
	// first; only its response was lost.
	Timeout
	// ExpiredIterator: GetRecords refused its shard iterator as expired.
	ExpiredIterator
	// Unavailable: the call met an outage (see Client.Outage).
	Unavailable
	// Reset: the connection was reset while awaiting the response. With
	// the rate in Config.TimeoutApplied the request reached the service and
	// took effect first.
	Reset
	// TxConflict: DynamoDB cancelled a TransactWriteItems call because
	// another transaction was ongoing on its first item (only through
	// Client.FailNext).
	TxConflict
)

// String names the kind as Parse accepts it.
func (k Kind) String() string {
	switch k {
	case None:
		return "none"
	case Throttle:
		return "throttle"
	case ServerError:
		return "5xx"
	case Timeout:
		return "timeout"
	case ExpiredIterator:
		return "expired"
	case Unavailable:
		return "unavailable"
	case Reset:
		return "reset"
	case TxConflict:
		return "tx-conflict"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Rates are the probabilities, per call, of each fault. Fields left zero in
// a per-operation entry of Config.Ops take the service's value.
type Rates struct {
	// Any is spread evenly over the kinds the operation can meet
	// (ExpiredIterator only on GetRecords) and added to the fields below.
	Any float64
	// Throttle, ServerError, Timeout and ExpiredIterator are the
	// probabilities of each kind.
	Throttle, ServerError, Timeout, ExpiredIterator float64
	// Reset is the probability of a reset connection; Any does not spread
	// over it.
	Reset float64
	// Latency bounds a delay added before a call goes through, drawn
	// uniformly from [0, Latency).
	Latency time.Duration
	// LatencyRate is the fraction of calls delayed; 0 means all of them
	// when Latency is set.
	LatencyRate float64
}

// merged returns r with the non-zero fields of o replacing its own.
func (r Rates) merged(o Rates) Rates {
	pick := func(a, b float64) float64 {
		if b != 0 {
			return b
		}
		return a
	}
	r.Any = pick(r.Any, o.Any)
	r.Throttle = pick(r.Throttle, o.Throttle)
	r.ServerError = pick(r.ServerError, o.ServerError)
	r.Timeout = pick(r.Timeout, o.Timeout)
	r.ExpiredIterator = pick(r.ExpiredIterator, o.ExpiredIterator)
	r.Reset = pick(r.Reset, o.Reset)
	r.LatencyRate = pick(r.LatencyRate, o.LatencyRate)
	if o.Latency != 0 {
		r.Latency = o.Latency
	}
	return r
}

// Config chooses the faults. The zero Config injects nothing.
type Config struct {
	// Seed seeds the decisions.
	Seed uint64
	// Kinesis and DynamoDB are the rates for every operation of the
	// service.
	Kinesis, DynamoDB Rates
	// Ops override the service's rates for single operations, by the
	// operation name of the X-Amz-Target header ("GetRecords",
	// "UpdateItem").
	Ops map[string]Rates
	// TimeoutDelay is how long a call that times out hangs before it fails
	// (bounded by its context). Default: 0, it fails at once.
	TimeoutDelay time.Duration
	// TimeoutApplied is the fraction of timeouts and resets whose request
	// reached the service and took effect before the response was lost: a
	// conditional write that the caller believes failed, but which moved the
	// lease.
	TimeoutApplied float64
	// HangLimit bounds how long a call that met a hanging outage hangs
	// before it fails with a timeout, like an HTTP client's timeout
	// (default 10s).
	HangLimit time.Duration
	// Observer, if set, is called after every HTTP call (from the calling
	// goroutine, concurrently).
	Observer func(Call)
}

// Validate reports rates outside [0,1] or summing above 1 for an operation.
func (c Config) Validate() error {
	check := func(name string, r Rates) error {
		for _, p := range []float64{r.Any, r.Throttle, r.ServerError, r.Timeout, r.ExpiredIterator, r.Reset, r.LatencyRate} {
			if p < 0 || p > 1 {
				return fmt.Errorf("faults: %s: rate %v outside [0,1]", name, p)
			}
		}
		if s := r.Any + r.Throttle + r.ServerError + r.Timeout + r.ExpiredIterator + r.Reset; s > 1 {
			return fmt.Errorf("faults: %s: fault rates add up to %v > 1", name, s)
		}
		if r.Latency < 0 {
			return fmt.Errorf("faults: %s: negative latency %v", name, r.Latency)
		}
		return nil
	}
	if err := check("kinesis", c.Kinesis); err != nil {
		return err
	}
	if err := check("dynamodb", c.DynamoDB); err != nil {
		return err
	}
	for op, r := range c.Ops {
		if err := check(op, c.Kinesis.merged(r)); err != nil {
			return err
		}
		if err := check(op, c.DynamoDB.merged(r)); err != nil {
			return err
		}
	}
	if c.TimeoutApplied < 0 || c.TimeoutApplied > 1 {
		return fmt.Errorf("faults: TimeoutApplied %v outside [0,1]", c.TimeoutApplied)
	}
	if c.TimeoutDelay < 0 || c.HangLimit < 0 {
		return fmt.Errorf("faults: negative TimeoutDelay or HangLimit")
	}
	return nil
}

// Call describes one HTTP call through a Client, for Config.Observer. An
// SDK operation retried by the SDK's retryer makes several.
type Call struct {
	// Service is "Kinesis" or "DynamoDB"; Op the operation name.
	Service, Op string
	// Body is the request's JSON body (e.g. an UpdateItem's key and
	// condition).
	Body []byte
	// Start and End are when the call entered and left the Client.
	Start, End time.Time
	// Fault is what was injected (None if nothing); Applied reports
	// whether the request reached the service (always for None, sometimes
	// for Timeout and Reset).
	Fault   Kind
	Applied bool
	// Status is the HTTP status the SDK got (0 if no response); Err the
	// transport error it got.
	Status int
	Err    error
}

// OK reports whether the call got a 2xx response.
func (c Call) OK() bool { return c.Err == nil && c.Status >= 200 && c.Status < 300 }

// OutageMode is how an unavailable service behaves.
type OutageMode int

const (
	// Refuse fails every call at once, as with connections refused.
	Refuse OutageMode = iota + 1
	// Hang makes every call wait until its context ends or Config.HangLimit
	// passes, and then fail, like a request sent into a network that drops
	// packets: ending the outage does not rescue calls already hanging.
	Hang
)

// Stats counts the calls of one operation.
type Stats struct {
	// Calls counts every call, faulty or not.
	Calls int64
	// Faults counts injected faults by kind.
	Faults map[Kind]int64
}

// injector draws and counts the faults of one service.
type injector struct {
	service string
	cfg     Config
	rates   Rates
	total   atomic.Int64

	mu     sync.Mutex
	rngs   map[string]*rand.Rand
	stats  map[string]*Stats
	outage OutageMode
	spared map[string]bool       // operations the outage lets through
	next   map[string][]decision // queued by Client.FailNext, by operation
}

func newInjector(service string, cfg Config, rates Rates) *injector {
	if cfg.HangLimit == 0 {
		cfg.HangLimit = 10 * time.Second
	}
	return &injector{service: service, cfg: cfg, rates: rates, rngs: map[string]*rand.Rand{}, stats: map[string]*Stats{}}
}

// decision is what happens to one call.
type decision struct {
	fault   Kind
	delay   time.Duration
	applied bool
	variant float64
}

// decide draws the fate of the next call of op. It draws the same number of
// values for every call, so one fault rate does not shift another's draws.
func (in *injector) decide(op string) (decision, OutageMode) {
	in.mu.Lock()
	defer in.mu.Unlock()
	st := in.stats[op]
	if st == nil {
		st = &Stats{Faults: map[Kind]int64{}}
		in.stats[op] = st
	}
	st.Calls++
	in.total.Add(1)
	rng := in.rngs[op]
	if rng == nil {
		h := fnv.New64a()
		h.Write([]byte(in.service + "/" + op))
		rng = rand.New(rand.NewPCG(in.cfg.Seed, h.Sum64()))
		in.rngs[op] = rng
	}
	uFault, uDelay, uLatency, uApplied, uVariant := rng.Float64(), rng.Float64(), rng.Float64(), rng.Float64(), rng.Float64()
	if in.outage != 0 && !in.spared[op] {
		st.Faults[Unavailable]++
		return decision{fault: Unavailable}, in.outage
	}
	if q := in.next[op]; len(q) > 0 {
		in.next[op] = q[1:]
		st.Faults[q[0].fault]++
		return q[0], 0
	}

	r := in.rates
	if o, ok := in.cfg.Ops[op]; ok {
		r = r.merged(o)
	}
	kinds := []Kind{Throttle, ServerError, Timeout}
	probs := []float64{r.Throttle, r.ServerError, r.Timeout}
	if in.service == serviceKinesis && op == "GetRecords" {
		kinds = append(kinds, ExpiredIterator)
		probs = append(probs, r.ExpiredIterator)
	}
	spread := r.Any / float64(len(kinds))
	kinds = append(kinds, Reset)
	probs = append(probs, r.Reset)
	d := decision{variant: uVariant}
	acc := 0.0
	for i, k := range kinds {
		acc += probs[i]
		if k != Reset {
			acc += spread
		}
		if uFault < acc {
			d.fault = k
			break
		}
	}
	if d.fault != None {
		st.Faults[d.fault]++
	}
	if r.Latency > 0 && (r.LatencyRate == 0 || uLatency < r.LatencyRate) {
		d.delay = time.Duration(uDelay * float64(r.Latency))
	}
	d.applied = (d.fault == Timeout || d.fault == Reset) && uApplied < in.cfg.TimeoutApplied
	return d, 0
}

// sleep waits for d; it reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// failNext queues n decisions of op.
func (in *injector) failNext(op string, d decision, n int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.next == nil {
		in.next = map[string][]decision{}
	}
	for range n {
		in.next[op] = append(in.next[op], d)
	}
}

// setOutage starts (mode != 0) or ends (mode == 0) an outage that lets the
// operations in spare through.
func (in *injector) setOutage(mode OutageMode, spare []string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.outage = mode
	in.spared = make(map[string]bool, len(spare))
	for _, op := range spare {
		in.spared[op] = true
	}
}

func (in *injector) snapshot() map[string]Stats {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make(map[string]Stats, len(in.stats))
	for op, s := range in.stats {
		c := Stats{Calls: s.Calls, Faults: make(map[Kind]int64, len(s.Faults))}
		for k, n := range s.Faults {
			c.Faults[k] = n
		}
		out[op] = c
	}
	return out
}

// Summary formats stats as one line per operation, sorted by name.
func Summary(stats map[string]Stats) string {
	ops := make([]string, 0, len(stats))
	for op := range stats {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	var b strings.Builder
	for _, op := range ops {
		s := stats[op]
		fmt.Fprintf(&b, "%s: %d calls", op, s.Calls)
		for k := Throttle; k <= Reset; k++ {
			if n := s.Faults[k]; n > 0 {
				fmt.Fprintf(&b, ", %d %s", n, k)
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}
