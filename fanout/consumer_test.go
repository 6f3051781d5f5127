package fanout

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/efotest"
	"github.com/shardline/shardline/kcl"
)

func TestRegisterConsumerOnceFromManyWorkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := efotest.NewServer(efotest.ServerOptions{})
		defer srv.Close()
		kc := srv.Client()
		const workers = 8
		got := make([]Consumer, workers)
		errs := make([]error, workers)
		var wg sync.WaitGroup
		for i := range workers {
			wg.Go(func() { got[i], errs[i] = RegisterConsumer(t.Context(), kc, srv.StreamARN(), "app") })
		}
		wg.Wait()
		for i := range workers {
			if errs[i] != nil {
				t.Fatalf("worker %d: %v", i, errs[i])
			}
			if got[i].ARN != got[0].ARN || got[i].Status != types.ConsumerStatusActive || got[i].Name != "app" {
				t.Fatalf("worker %d got %+v, worker 0 %+v", i, got[i], got[0])
			}
		}
		list, err := ListConsumers(t.Context(), kc, srv.StreamARN())
		if err != nil || len(list) != 1 || list[0].ARN != got[0].ARN {
			t.Fatalf("ListConsumers: %+v, %v; want the one consumer", list, err)
		}
	})
}

func TestRegisterConsumerReusesExisting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := efotest.NewServer(efotest.ServerOptions{})
		defer srv.Close()
		arn := srv.RegisterConsumer("app")
		c, err := RegisterConsumer(t.Context(), srv.Client(), srv.StreamARN(), "app")
		if err != nil || c.ARN != arn {
			t.Fatalf("RegisterConsumer: %+v, %v; want the existing %s", c, err, arn)
		}
	})
}

func TestRegisterConsumerLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := efotest.NewServer(efotest.ServerOptions{MaxConsumers: 2})
		defer srv.Close()
		srv.RegisterConsumer("first")
		srv.RegisterConsumer("second")
		_, err := RegisterConsumer(t.Context(), srv.Client(), srv.StreamARN(), "third")
		if !errors.Is(err, ErrConsumerLimit) {
			t.Fatalf("RegisterConsumer over the limit: %v, want ErrConsumerLimit", err)
		}
		if msg := err.Error(); !strings.Contains(msg, "first, second") || !strings.Contains(msg, "third") {
			t.Fatalf("error %q does not name the consumer and the registered ones", msg)
		}
	})
}

func TestRegisterConsumerWaitsForDeletionToFinish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := efotest.NewServer(efotest.ServerOptions{MaxConsumers: 1})
		defer srv.Close()
		kc := srv.Client()
		srv.RegisterConsumer("old")
		// Being deleted, it still counts against the limit: the first
		// registration is refused, and retried once it is gone.
		if _, err := kc.DeregisterStreamConsumer(t.Context(), deregisterInput(srv.StreamARN(), "old")); err != nil {
			t.Fatal(err)
		}
		c, err := RegisterConsumer(t.Context(), kc, srv.StreamARN(), "new")
		if err != nil || c.Status != types.ConsumerStatusActive {
			t.Fatalf("RegisterConsumer: %+v, %v", c, err)
		}
	})
}

func TestDeregisterConsumer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := efotest.NewServer(efotest.ServerOptions{})
		defer srv.Close()
		kc := srv.Client()
		old := srv.RegisterConsumer("app")
		if err := DeregisterConsumer(t.Context(), kc, srv.StreamARN(), "app"); err != nil {
			t.Fatalf("DeregisterConsumer: %v", err)
		}
		if list, err := ListConsumers(t.Context(), kc, srv.StreamARN()); err != nil || len(list) != 0 {
			t.Fatalf("after deregistering: %+v, %v", list, err)
		}
		if err := DeregisterConsumer(t.Context(), kc, srv.StreamARN(), "app"); err != nil {
			t.Fatalf("deregistering a missing consumer: %v, want nil", err)
		}
		c, err := RegisterConsumer(t.Context(), kc, srv.StreamARN(), "app")
		if err != nil || c.ARN == old {
			t.Fatalf("registering again: %+v, %v; want a new ARN", c, err)
		}
	})
}

func TestConsumerCallsValidateAndReportMissingStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := efotest.NewServer(efotest.ServerOptions{})
		defer srv.Close()
		kc := srv.Client()
		if _, err := RegisterConsumer(t.Context(), kc, srv.StreamARN(), "bad name"); !errors.Is(err, kcl.ErrInvalidConfig) {
			t.Errorf("bad name: %v, want ErrInvalidConfig", err)
		}
		if _, err := RegisterConsumer(t.Context(), kc, "s", "app"); !errors.Is(err, kcl.ErrInvalidConfig) {
			t.Errorf("stream name for an ARN: %v, want ErrInvalidConfig", err)
		}
		other := strings.TrimSuffix(srv.StreamARN(), "/s") + "/other"
		if _, err := RegisterConsumer(t.Context(), kc, other, "app"); !errors.Is(err, kcl.ErrStreamNotFound) {
			t.Errorf("missing stream: %v, want ErrStreamNotFound", err)
		}
		if _, err := ListConsumers(t.Context(), kc, other); !errors.Is(err, kcl.ErrStreamNotFound) {
			t.Errorf("listing a missing stream: %v, want ErrStreamNotFound", err)
		}
	})
}

func deregisterInput(streamARN, name string) *kinesis.DeregisterStreamConsumerInput {
	return &kinesis.DeregisterStreamConsumerInput{StreamARN: aws.String(streamARN), ConsumerName: aws.String(name)}
}
