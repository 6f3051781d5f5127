package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// consumerRow is one enhanced fan-out consumer.
type consumerRow struct {
	Name    string     `json:"name"`
	Status  string     `json:"status"`
	Created *time.Time `json:"created,omitempty"`
	ARN     string     `json:"arn"`
}

func runConsumers(ctx context.Context, e *env, args []string) error {
	var c common
	fs := newFlagSet(e, "consumers", "[list | deregister --consumer NAME [--yes]] --stream STREAM [flags]", &c)
	name := fs.String("consumer", "", "consumer name (deregister)")
	consumerARN := fs.String("consumer-arn", "", "consumer ARN, instead of --consumer (deregister)")
	yes := fs.Bool("yes", false, "do not ask for confirmation (deregister)")
	// The action may come before or after the flags.
	action := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		action, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err == nil && action == "" && fs.NArg() > 0 {
		at := len(args) - fs.NArg()
		action = args[at]
		args = append(args[:at:at], args[at+1:]...)
		fs.VisitAll(func(f *flag.Flag) { _ = f.Value.Set(f.DefValue) }) // parsed again below
	}
	if err := parse(fs, &c, args); err != nil {
		return err
	}
	switch action {
	case "", "list":
		if *name != "" || *consumerARN != "" || *yes {
			return usagef("--consumer, --consumer-arn and --yes go with deregister")
		}
	case "deregister":
		switch {
		case *name == "" && *consumerARN == "":
			return usagef("deregister needs --consumer or --consumer-arn")
		case *name != "" && *consumerARN != "":
			return usagef("--consumer and --consumer-arn exclude each other")
		}
	default:
		return usagef("unknown action %q: want list or deregister", action)
	}
	if err := c.needStream(); err != nil && *consumerARN == "" {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	kc, err := c.kinesisClient(ctx)
	if err != nil {
		return err
	}
	if action == "deregister" {
		return deregisterConsumer(ctx, e, &c, kc, *name, *consumerARN, *yes)
	}
	return listConsumers(ctx, e, &c, kc)
}

func listConsumers(ctx context.Context, e *env, c *common, kc kinesisAPI) error {
	arn, err := c.streamARN(ctx, kc)
	if err != nil {
		return err
	}
	rows := []consumerRow{}
	in := &kinesis.ListStreamConsumersInput{StreamARN: aws.String(arn)}
	for {
		out, err := kc.ListStreamConsumers(ctx, in)
		if err != nil {
			return c.streamError("list stream consumers", err)
		}
		for _, sc := range out.Consumers {
			rows = append(rows, consumerRow{
				Name:    aws.ToString(sc.ConsumerName),
				Status:  string(sc.ConsumerStatus),
				Created: timePtr(aws.ToTime(sc.ConsumerCreationTimestamp)),
				ARN:     aws.ToString(sc.ConsumerARN),
			})
		}
		if aws.ToString(out.NextToken) == "" {
			break
		}
		in = &kinesis.ListStreamConsumersInput{StreamARN: aws.String(arn), NextToken: out.NextToken}
	}
	if c.output == "json" {
		return writeJSON(e.stdout, rows)
	}
	t := newTable(e.stdout, "CONSUMER", "STATUS", "CREATED", "ARN")
	for _, r := range rows {
		created := ""
		if r.Created != nil {
			created = r.Created.Format(time.RFC3339)
		}
		t.row(r.Name, r.Status, created, r.ARN)
	}
	return t.flush()
}

func deregisterConsumer(ctx context.Context, e *env, c *common, kc kinesisAPI, name, consumerARN string, yes bool) error {
	in := &kinesis.DeregisterStreamConsumerInput{}
	what := consumerARN
	if consumerARN != "" {
		in.ConsumerARN = aws.String(consumerARN)
	} else {
		arn, err := c.streamARN(ctx, kc)
		if err != nil {
			return err
		}
		in.StreamARN, in.ConsumerName = aws.String(arn), aws.String(name)
		what = fmt.Sprintf("%s of stream %s", name, c.stream)
	}
	if !yes {
		ok, err := confirmCtx(ctx, e, fmt.Sprintf(
			"Deregister consumer %s? Applications subscribed through it stop receiving records.", what))
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("aborted: nothing changed")
		}
	}
	if _, err := kc.DeregisterStreamConsumer(ctx, in); err != nil {
		var nf *ktypes.ResourceNotFoundException
		if errors.As(err, &nf) {
			return fmt.Errorf("consumer %s not found: %s", what, aws.ToString(nf.Message))
		}
		return fmt.Errorf("deregister consumer %s: %w", what, err)
	}
	if c.output == "json" {
		return writeJSON(e.stdout, map[string]string{"deregistered": what})
	}
	fmt.Fprintf(e.stdout, "deregistered consumer %s\n", what)
	return nil
}
