package faults

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
)

// Client is an aws.HTTPClient that injects the faults of one service into
// the HTTP calls an SDK client sends through it, and passes the others to
// the HTTP client it wraps. Set it as the HTTPClient option of a Kinesis or
// DynamoDB client:
//
//	fk, err := faults.NewKinesis(cfg, nil)
//	kc := kinesis.NewFromConfig(awsCfg, func(o *kinesis.Options) { o.HTTPClient = fk })
//
// Requests without an X-Amz-Target header (none of the JSON operations
// Shardline uses) pass through untouched.
type Client struct {
	in   *injector
	next aws.HTTPClient
}

var _ aws.HTTPClient = (*Client)(nil)

// NewKinesis returns a Client injecting the Kinesis faults of cfg into the
// calls it passes to next (nil: the SDK's default HTTP client).
func NewKinesis(cfg Config, next aws.HTTPClient) (*Client, error) {
	return newClient(serviceKinesis, cfg, cfg.Kinesis, next)
}

// NewDynamoDB returns a Client injecting the DynamoDB faults of cfg into the
// calls it passes to next (nil: the SDK's default HTTP client).
func NewDynamoDB(cfg Config, next aws.HTTPClient) (*Client, error) {
	return newClient(serviceDynamoDB, cfg, cfg.DynamoDB, next)
}

func newClient(service string, cfg Config, rates Rates, next aws.HTTPClient) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if next == nil {
		next = awshttp.NewBuildableClient()
	}
	return &Client{in: newInjector(service, cfg, rates), next: next}, nil
}

// Outage makes every call fail in the given way until Restore, except
// calls of the operations named in spare (for example "TransactWriteItems":
// a process whose other calls cannot get through).
func (c *Client) Outage(mode OutageMode, spare ...string) { c.in.setOutage(mode, spare) }

// FailNext makes the next n calls of op (an operation name such as
// "TransactWriteItems") fail with kind, whatever the rates say: Throttle,
// ServerError, Timeout, Reset, ExpiredIterator or TxConflict. For Timeout
// and Reset, applied says whether the request reaches the service and takes
// effect before its response is lost. Remember that the SDK's retryer
// retries some of these by itself: a test that wants the caller to see the
// fault either queues one per attempt or sets the client's RetryMaxAttempts
// to 1.
func (c *Client) FailNext(op string, kind Kind, applied bool, n int) {
	c.in.failNext(op, decision{fault: kind, applied: applied}, n)
}

// Restore ends an outage.
func (c *Client) Restore() { c.in.setOutage(0, nil) }

// Stats returns the HTTP calls and faults so far, by operation.
func (c *Client) Stats() map[string]Stats { return c.in.snapshot() }

// Calls returns the number of HTTP calls so far.
func (c *Client) Calls() int64 { return c.in.total.Load() }

// Do sends req, or fails it as the fault drawn for it says.
func (c *Client) Do(req *http.Request) (resp *http.Response, err error) {
	target := req.Header.Get("X-Amz-Target")
	_, op, ok := strings.Cut(target, ".")
	if !ok {
		return c.next.Do(req)
	}
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		body, err = io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}

	start := time.Now()
	d, outage := c.in.decide(op)
	if obs := c.in.cfg.Observer; obs != nil {
		defer func() {
			call := Call{Service: c.in.service, Op: op, Body: body, Start: start, End: time.Now(),
				Fault: d.fault, Applied: d.fault == None || d.applied, Err: err}
			if resp != nil {
				call.Status = resp.StatusCode
			}
			obs(call)
		}()
	}
	switch outage {
	case Refuse:
		return nil, connError(req, "dial", syscall.ECONNREFUSED)
	case Hang:
		return hang(req, c.in.cfg.HangLimit)
	}
	if d.delay > 0 && !sleep(req.Context(), d.delay) {
		return nil, urlError(req, req.Context().Err())
	}
	switch d.fault {
	case Throttle:
		return throttleResponse(req, c.in.service, op, d.variant), nil
	case ServerError:
		return serverErrorResponse(req, c.in.service, d.variant), nil
	case ExpiredIterator:
		return expiredIteratorResponse(req), nil
	case TxConflict:
		return txConflictResponse(req, body), nil
	case Timeout, Reset:
		if d.applied {
			c.forwardAndDrop(req)
		}
		if d.fault == Reset {
			return nil, connError(req, "read", syscall.ECONNRESET)
		}
		return hang(req, c.in.cfg.TimeoutDelay)
	}
	return c.next.Do(req)
}

// forwardAndDrop sends req to the service and throws the response away: the
// request takes effect, the caller never learns it.
func (c *Client) forwardAndDrop(req *http.Request) {
	fwd := req.Clone(req.Context())
	if req.GetBody != nil {
		fwd.Body, _ = req.GetBody()
	}
	resp, err := c.next.Do(fwd)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
}

// hang sends req into a connection that never answers, through an
// http.Client whose Timeout is limit, and returns what that client returns:
// the *url.Error of a client timeout after limit, or of the request's
// context if it ends first.
func hang(req *http.Request, limit time.Duration) (*http.Response, error) {
	hc := &http.Client{Transport: silence{}, Timeout: max(limit, time.Nanosecond)}
	r := req.Clone(req.Context())
	r.Body, r.GetBody, r.ContentLength = nil, nil, 0
	r.RequestURI = ""
	resp, err := hc.Do(r)
	if resp != nil { // cannot happen: silence never answers
		_ = resp.Body.Close()
	}
	return nil, err
}

// silence is a transport whose requests get no answer.
type silence struct{}

func (silence) RoundTrip(req *http.Request) (*http.Response, error) {
	<-req.Context().Done()
	return nil, req.Context().Err()
}

// urlError is net/http's error for a request whose context ended: a
// *url.Error around the context's error.
func urlError(req *http.Request, err error) error {
	return &url.Error{Op: urlOp(req.Method), URL: req.URL.String(), Err: err}
}
