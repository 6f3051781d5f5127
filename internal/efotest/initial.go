// Package efotest holds test-only helpers for enhanced fan-out
// (SubscribeToShard): an HTTP client wrapper that lets aws-sdk-go-v2 read
// kinesis-mock's subscriptions, and an in-process fake SubscribeToShard
// server speaking the real event-stream encoding, with fault injection.
//
// Nothing here may be used on a production path: real Kinesis sends the
// initial-response event itself, and the fake serves only tests.
package efotest

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/internal/testenv"
)

// subscribeTarget is the X-Amz-Target header of a SubscribeToShard request.
const subscribeTarget = "Kinesis_20131202.SubscribeToShard"

// initialResponseFrame is the event-stream message that aws-sdk-go-v2 expects
// first on a SubscribeToShard response: an empty initial-response event.
var initialResponseFrame = func() []byte {
	var msg eventstream.Message
	msg.Headers.Set(":message-type", eventstream.StringValue("event"))
	msg.Headers.Set(":event-type", eventstream.StringValue("initial-response"))
	msg.Headers.Set(":content-type", eventstream.StringValue("application/json"))
	msg.Payload = []byte("{}")
	var buf bytes.Buffer
	if err := eventstream.NewEncoder().Encode(&buf, msg); err != nil {
		panic("efotest: encoding the initial-response frame: " + err.Error()) // static input: cannot fail
	}
	return buf.Bytes()
}()

// InitialResponseClient wraps an HTTP client for kinesis-mock, which omits
// the initial-response event that aws-sdk-go-v2 requires at the start of a
// SubscribeToShard response ("deserialize initial response: expected
// initial-response"). It puts that event before the body of every successful
// SubscribeToShard response and passes everything else through unchanged.
//
// Test-only: real Kinesis sends the event, and a second one would be read as
// an unknown event.
type InitialResponseClient struct {
	// Next does the requests. Default: http.DefaultClient.
	Next aws.HTTPClient
}

var _ aws.HTTPClient = (*InitialResponseClient)(nil)

// Do sends req through Next, prefixing the initial-response event to a
// successful SubscribeToShard response.
func (c *InitialResponseClient) Do(req *http.Request) (*http.Response, error) {
	next := c.Next
	if next == nil {
		next = http.DefaultClient
	}
	resp, err := next.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.EqualFold(req.Header.Get("X-Amz-Target"), subscribeTarget) {
		return resp, err
	}
	resp.Body = prefixedBody{Reader: io.MultiReader(bytes.NewReader(initialResponseFrame), resp.Body), Closer: resp.Body}
	resp.ContentLength = -1
	return resp, nil
}

// prefixedBody reads the injected frame, then the original body; Close
// closes the original body.
type prefixedBody struct {
	io.Reader
	io.Closer
}

// NewEmulatorKinesisClient returns a Kinesis client for kinesis-mock at
// endpoint whose HTTP client is wrapped by an [InitialResponseClient].
func NewEmulatorKinesisClient(endpoint string) *kinesis.Client {
	return kinesis.NewFromConfig(testenv.AWSConfig(), func(o *kinesis.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.HTTPClient = &InitialResponseClient{Next: o.HTTPClient}
	})
}

// EmulatorKinesis returns a fan-out capable Kinesis client for the emulator
// after testenv.Require (which skips or fails t when it is unreachable).
func EmulatorKinesis(t testing.TB) *kinesis.Client {
	t.Helper()
	testenv.Require(t)
	return NewEmulatorKinesisClient(testenv.KinesisEndpoint())
}
