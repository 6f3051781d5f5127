package producer

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/testenv"
)

// A record sent to an endpoint that refuses connections is retried until
// RetryTimeout, through the real SDK client (which wraps the refused
// connection in a response error with status code 0), and then fails with
// ErrRetryTimeout naming the endpoint.
func TestRefusedConnectionRetriedUntilRetryTimeout(t *testing.T) {
	addr := testenv.RefusedAddr(t)
	const retryTimeout = 2 * time.Second
	p, err := New(Config{
		StreamName:     "s",
		Client:         testenv.NewKinesisClient("http://" + addr),
		Linger:         -1,
		RetryTimeout:   retryTimeout,
		backoffInitial: 50 * time.Millisecond,
		backoffMax:     200 * time.Millisecond,
		Logger:         slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Close(context.Background()) }()
	begin := time.Now()
	res, err := p.Put(t.Context(), "pk", []byte("data"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	_, err = res.Wait(ctx)
	took := time.Since(begin)
	t.Logf("after %v: %v", took, err)
	if !errors.Is(err, ErrRetryTimeout) {
		t.Fatalf("error %v, want ErrRetryTimeout", err)
	}
	var pe *PutError
	if !errors.As(err, &pe) || pe.Attempts < 2 {
		t.Fatalf("error %v: want a *PutError with more than one attempt", err)
	}
	if took < retryTimeout-200*time.Millisecond {
		t.Errorf("gave up after %v, before RetryTimeout %v", took, retryTimeout)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the endpoint %s", err, addr)
	}
}
