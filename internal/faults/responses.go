package faults

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// The faults below are what the services and the network give an HTTP
// client: error responses with the body, headers and status code AWS sends
// (the SDK turns them into its modelled exceptions or a generic API error,
// inside an *awshttp.ResponseError), and the *url.Error around a
// *net.OpError that net/http returns when a connection is refused or reset
// (the SDK wraps it in a *smithyhttp.RequestSendError). Timeouts come from a
// real http.Client timeout (see Client.hang).

// Service IDs as the SDK names them, and the prefixes of their X-Amz-Target
// headers.
const (
	serviceKinesis  = "Kinesis"
	serviceDynamoDB = "DynamoDB"
)

// errorResponse is the JSON error response AWS sends for req: status, the
// exception's name in the x-amzn-ErrorType header and the body's __type,
// and, from DynamoDB, the body's CRC32 that the SDK checks.
func errorResponse(req *http.Request, service string, status int, typ, msg string) *http.Response {
	qualified := typ
	if service == serviceDynamoDB {
		switch typ {
		case "ThrottlingException":
			qualified = "com.amazon.coral.availability#" + typ
		case "ServiceUnavailable":
			qualified = "com.amazon.coral.availability#" + typ
		default:
			qualified = "com.amazonaws.dynamodb.v20120810#" + typ
		}
	}
	body := fmt.Appendf(nil, `{"__type":%q,"message":%q}`, qualified, msg+" (injected)")
	return jsonErrorResponse(req, service, status, typ, body)
}

// jsonErrorResponse wraps an error body of service as AWS sends it.
func jsonErrorResponse(req *http.Request, service string, status int, typ string, body []byte) *http.Response {
	contentType := "application/x-amz-json-1.1"
	if service == serviceDynamoDB {
		contentType = "application/x-amz-json-1.0"
	}
	h := http.Header{}
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Amzn-Errortype", typ+":")
	h.Set("X-Amzn-Requestid", "faults-injected")
	if service == serviceDynamoDB {
		h.Set("X-Amz-Crc32", strconv.FormatUint(uint64(crc32.ChecksumIEEE(body)), 10))
	}
	return &http.Response{
		Status: fmt.Sprintf("%d %s", status, http.StatusText(status)), StatusCode: status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		Request: req,
	}
}

// throttleResponse is the throttling response real AWS sends for op.
// variant (in [0,1)) picks between equally plausible ones.
func throttleResponse(req *http.Request, service, op string, variant float64) *http.Response {
	if service == serviceKinesis {
		switch op {
		case "GetRecords", "GetShardIterator", "PutRecord", "PutRecords":
			return errorResponse(req, service, http.StatusBadRequest, "ProvisionedThroughputExceededException",
				"Rate exceeded for shard in stream under account 000000000000.")
		}
		// Control plane: ListShards, DescribeStreamSummary, ...
		return errorResponse(req, service, http.StatusBadRequest, "LimitExceededException",
			"Rate exceeded for stream under account 000000000000.")
	}
	switch op {
	case "CreateTable", "DescribeTable", "DeleteTable", "UpdateTable":
		return errorResponse(req, service, http.StatusBadRequest, "ThrottlingException",
			"Rate of requests exceeds the allowed throughput.")
	}
	if variant < 0.5 {
		return errorResponse(req, service, http.StatusBadRequest, "ProvisionedThroughputExceededException",
			"The level of configured provisioned throughput for the table was exceeded.")
	}
	return errorResponse(req, service, http.StatusBadRequest, "ThrottlingException",
		"Throughput exceeds the current throughput limit for your account.")
}

// serverErrorResponse is a 500 or a 503 as real AWS sends them.
func serverErrorResponse(req *http.Request, service string, variant float64) *http.Response {
	if variant < 0.5 {
		return errorResponse(req, service, http.StatusServiceUnavailable, "ServiceUnavailable", "Service Unavailable")
	}
	if service == serviceDynamoDB {
		return errorResponse(req, service, http.StatusInternalServerError, "InternalServerError", "Internal server error")
	}
	return errorResponse(req, service, http.StatusInternalServerError, "InternalFailure", "Internal service failure")
}

// expiredIteratorResponse is GetRecords' answer to an iterator older than
// five minutes.
func expiredIteratorResponse(req *http.Request) *http.Response {
	return errorResponse(req, serviceKinesis, http.StatusBadRequest, "ExpiredIteratorException", "Iterator expired.")
}

// txConflictResponse is DynamoDB's cancellation of the TransactWriteItems
// request body: its first item conflicts with an ongoing transaction, the
// others have no reason of their own.
func txConflictResponse(req *http.Request, body []byte) *http.Response {
	var in struct{ TransactItems []json.RawMessage }
	_ = json.Unmarshal(body, &in)
	type reason struct {
		Code    string
		Message string `json:",omitempty"`
	}
	reasons := make([]reason, max(len(in.TransactItems), 1))
	codes := make([]string, len(reasons))
	for i := range reasons {
		reasons[i], codes[i] = reason{Code: "None"}, "None"
	}
	reasons[0], codes[0] = reason{Code: "TransactionConflict", Message: "Transaction is ongoing for the item"}, "TransactionConflict"
	msg := "Transaction cancelled, please refer cancellation reasons for specific reasons [" + strings.Join(codes, ", ") + "] (injected)"
	out, _ := json.Marshal(struct {
		Type                string `json:"__type"`
		Message             string
		CancellationReasons []reason
	}{"com.amazonaws.dynamodb.v20120810#TransactionCanceledException", msg, reasons})
	return jsonErrorResponse(req, serviceDynamoDB, http.StatusBadRequest, "TransactionCanceledException", out)
}

// connError is what net/http returns for req when the connection failed:
// op "dial" with ECONNREFUSED for a refused connection, "read" with
// ECONNRESET for one reset while awaiting the response.
func connError(req *http.Request, op string, errno syscall.Errno) error {
	var addr net.Addr
	if ap, err := netip.ParseAddrPort(req.URL.Host); err == nil {
		addr = net.TCPAddrFromAddrPort(ap)
	} else {
		addr = hostAddr(req.URL.Host)
	}
	sys := "connect"
	if op == "read" {
		sys = "read"
	}
	return &url.Error{Op: urlOp(req.Method), URL: req.URL.String(), Err: &net.OpError{
		Op: op, Net: "tcp", Addr: addr, Err: os.NewSyscallError(sys, errno),
	}}
}

// hostAddr names an endpoint given by host name (the dialer's error names
// the address it dialled; the host name is the nearest we have).
type hostAddr string

func (hostAddr) Network() string  { return "tcp" }
func (a hostAddr) String() string { return string(a) }

// urlOp is net/http's name of a request method in its errors ("Post").
func urlOp(method string) string {
	if method == "" {
		return "Get"
	}
	return method[:1] + string(bytes.ToLower([]byte(method[1:])))
}
