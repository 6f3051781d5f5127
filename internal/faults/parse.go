package faults

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Parse reads a Config from a comma-separated list of key=value settings,
// as given to a command-line flag:
//
//	seed=N              decision seed
//	kinesis=P           fault rate of every Kinesis call, spread over the kinds
//	dynamodb=P          fault rate of every DynamoDB call, spread over the kinds
//	OP=P                fault rate of one operation (GetRecords, UpdateItem, ...)
//	T.KIND=P            rate of one kind for T (kinesis, dynamodb or OP);
//	                    KIND is throttle, 5xx, timeout, expired or reset
//	                    (reset is not part of the spread of kinesis=P ...)
//	latency=D           added delay, uniform in [0,D), on every call of both
//	T.latency=D         the same for T only
//	latency-rate=P      fraction of calls delayed (default: all)
//	timeout-delay=D     how long a timed-out call hangs before failing
//	applied=P           fraction of timeouts and resets that took effect at the service
//	hang=D              bound on calls hanging during an outage
//
// For example "seed=1,kinesis=0.05,dynamodb=0.02,latency=20ms". An empty
// string is the zero Config.
func Parse(spec string) (Config, error) {
	var c Config
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		key, val, ok := strings.Cut(item, "=")
		if !ok {
			return c, fmt.Errorf("faults: %q: want key=value", item)
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if err := c.set(key, val); err != nil {
			return c, fmt.Errorf("faults: %s: %w", item, err)
		}
	}
	return c, c.Validate()
}

func (c *Config) set(key, val string) error {
	prob := func() (float64, error) {
		p, err := strconv.ParseFloat(val, 64)
		if err != nil || p < 0 || p > 1 {
			return 0, fmt.Errorf("%q is not a probability", val)
		}
		return p, nil
	}
	dur := func() (time.Duration, error) {
		d, err := time.ParseDuration(val)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("%q is not a duration", val)
		}
		return d, nil
	}
	var err error
	switch key {
	case "seed":
		c.Seed, err = strconv.ParseUint(val, 10, 64)
		return err
	case "latency":
		d, err := dur()
		c.Kinesis.Latency, c.DynamoDB.Latency = d, d
		return err
	case "latency-rate":
		p, err := prob()
		c.Kinesis.LatencyRate, c.DynamoDB.LatencyRate = p, p
		return err
	case "timeout-delay":
		c.TimeoutDelay, err = dur()
		return err
	case "applied":
		c.TimeoutApplied, err = prob()
		return err
	case "hang":
		c.HangLimit, err = dur()
		return err
	}

	target, kind, _ := strings.Cut(key, ".")
	var r *Rates
	switch target {
	case "kinesis":
		r = &c.Kinesis
	case "dynamodb":
		r = &c.DynamoDB
	default:
		if target == "" || target[0] < 'A' || target[0] > 'Z' {
			return fmt.Errorf("unknown setting %q", key)
		}
		if c.Ops == nil {
			c.Ops = map[string]Rates{}
		}
		o := c.Ops[target]
		defer func() { c.Ops[target] = o }()
		r = &o
	}
	if kind == "latency" {
		r.Latency, err = dur()
		return err
	}
	p, err := prob()
	if err != nil {
		return err
	}
	switch kind {
	case "":
		r.Any = p
	case "throttle":
		r.Throttle = p
	case "5xx":
		r.ServerError = p
	case "timeout":
		r.Timeout = p
	case "expired":
		r.ExpiredIterator = p
	case "reset":
		r.Reset = p
	default:
		return fmt.Errorf("unknown fault kind %q (want throttle, 5xx, timeout, expired, reset or latency)", kind)
	}
	return nil
}
