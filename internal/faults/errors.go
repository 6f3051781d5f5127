package faults

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// The errors below are shaped like the ones aws-sdk-go-v2 returns, layer by
// layer: *smithy.OperationError, then *awshttp.ResponseError (an HTTP
// response with a status code and a request ID) around the modelled
// exception, or *smithyhttp.RequestSendError around a transport error when
// no response came back. Code that classifies errors with errors.As and
// errors.Is sees them exactly as it would see the SDK's.

// Service IDs as the SDK names them in operation errors.
const (
	serviceKinesis  = "Kinesis"
	serviceDynamoDB = "DynamoDB"
)

// operationError wraps err as the SDK wraps every error of an operation.
func operationError(service, op string, err error) error {
	return &smithy.OperationError{ServiceID: service, OperationName: op, Err: err}
}

// responseError wraps an API error in an HTTP response with status.
func responseError(service, op string, status int, apiErr error) error {
	resp := &http.Response{StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)), Header: http.Header{}}
	return operationError(service, op, &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: resp}, Err: apiErr},
		RequestID:     "faults-injected",
	})
}

// throttleError returns the throttling error real AWS returns for op.
// variant (in [0,1)) picks between equally plausible ones.
func throttleError(service, op string, variant float64) error {
	if service == serviceKinesis {
		switch op {
		case "GetRecords", "GetShardIterator", "PutRecord", "PutRecords":
			return responseError(service, op, http.StatusBadRequest, &ktypes.ProvisionedThroughputExceededException{
				Message: aws.String("Rate exceeded for shard in stream under account 000000000000. (injected)"),
			})
		default: // control plane: ListShards, DescribeStreamSummary, ...
			return responseError(service, op, http.StatusBadRequest, &ktypes.LimitExceededException{
				Message: aws.String("Rate exceeded for stream under account 000000000000. (injected)"),
			})
		}
	}
	switch op {
	case "CreateTable", "DescribeTable", "DeleteTable", "UpdateTable":
		return responseError(service, op, http.StatusBadRequest, &dtypes.ThrottlingException{
			Message: aws.String("Rate of requests exceeds the allowed throughput. (injected)"),
		})
	}
	if variant < 0.5 {
		return responseError(service, op, http.StatusBadRequest, &dtypes.ProvisionedThroughputExceededException{
			Message: aws.String("The level of configured provisioned throughput for the table was exceeded. (injected)"),
		})
	}
	return responseError(service, op, http.StatusBadRequest, &dtypes.ThrottlingException{
		Message: aws.String("Throughput exceeds the current throughput limit for your account. (injected)"),
	})
}

// serverError returns a 500 or a 503 as real AWS returns them for op.
func serverError(service, op string, variant float64) error {
	if variant < 0.5 {
		// 503 has no modelled type in either SDK: a generic API error.
		return responseError(service, op, http.StatusServiceUnavailable, &smithy.GenericAPIError{
			Code: "ServiceUnavailable", Message: "Service Unavailable (injected)", Fault: smithy.FaultServer,
		})
	}
	if service == serviceDynamoDB {
		return responseError(service, op, http.StatusInternalServerError, &dtypes.InternalServerError{
			Message: aws.String("Internal server error (injected)"),
		})
	}
	return responseError(service, op, http.StatusInternalServerError, &smithy.GenericAPIError{
		Code: "InternalFailure", Message: "Internal service failure (injected)", Fault: smithy.FaultServer,
	})
}

// expiredIteratorError is GetRecords' answer to an iterator older than five
// minutes.
func expiredIteratorError(op string) error {
	return responseError(serviceKinesis, op, http.StatusBadRequest, &ktypes.ExpiredIteratorException{
		Message: aws.String("Iterator expired. (injected)"),
	})
}

// clientTimeout is the error net/http returns when its client timeout
// fires: a net.Error whose Timeout is true and that matches
// context.DeadlineExceeded although the caller's context has not ended.
type clientTimeout struct{}

func (clientTimeout) Error() string {
	return "context deadline exceeded (Client.Timeout exceeded while awaiting headers) (injected)"
}
func (clientTimeout) Timeout() bool        { return true }
func (clientTimeout) Temporary() bool      { return true }
func (clientTimeout) Is(target error) bool { return target == context.DeadlineExceeded }

// timeoutError is a request that got no response in time.
func timeoutError(service, op string) error {
	return operationError(service, op, &smithyhttp.RequestSendError{
		Err: &url.Error{Op: "Post", URL: endpointURL(service), Err: clientTimeout{}},
	})
}

// refusedError is a request to a service that does not accept connections.
func refusedError(service, op string) error {
	return operationError(service, op, &smithyhttp.RequestSendError{
		Err: &url.Error{Op: "Post", URL: endpointURL(service), Err: &net.OpError{
			Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED),
		}},
	})
}

// canceledError is what the SDK returns when the caller's context ends
// during a call.
func canceledError(service, op string, ctx context.Context) error {
	return operationError(service, op, &aws.RequestCanceledError{Err: ctx.Err()})
}

func endpointURL(service string) string {
	if service == serviceKinesis {
		return "https://kinesis.us-east-1.amazonaws.com/"
	}
	return "https://dynamodb.us-east-1.amazonaws.com/"
}
