package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// benchResult is one line of `go test -bench` output.
type benchResult struct {
	Name    string             // without the -GOMAXPROCS suffix
	Metrics map[string]float64 // unit -> value ("ns/op", "records/s", ...)
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// goBench runs go test with args in dir and returns the benchmark lines.
func goBench(ctx context.Context, dir string, args ...string) ([]benchResult, error) {
	cmd := exec.CommandContext(ctx, "go", append([]string{"test", "-run", "^$"}, args...)...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	logf("go test %s (in %s)", strings.Join(args, " "), dir)
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go test %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	var res []benchResult
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		r := benchResult{Name: m[1], Metrics: map[string]float64{}}
		f := strings.Fields(m[2])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err == nil {
				r.Metrics[f[i+1]] = v
			}
		}
		res = append(res, r)
	}
	return res, nil
}

// collect gathers metric unit of every result named name.
func collect(res []benchResult, name, unit string) Sample {
	var s Sample
	for _, r := range res {
		if r.Name == name {
			if v, ok := r.Metrics[unit]; ok {
				s = append(s, v)
			}
		}
	}
	return s
}

// overhead is item 1: the worker against a bare GetRecords loop, both on the
// in-process server.
func (b *bench) overhead(ctx context.Context) ([]Row, error) {
	res, err := goBench(ctx, b.root, "-bench", "^BenchmarkPolling$", "-benchtime", "150000x",
		"-count", strconv.Itoa(b.benchCount), "./worker")
	if err != nil {
		return nil, err
	}
	var rows []Row
	for _, size := range []string{"1KiB", "100B"} {
		for _, shards := range []string{"1", "16"} {
			base := "BenchmarkPolling/size=" + size + "/shards=" + shards + "/loop="
			label := fmt.Sprintf("polling, %s records, %s shard(s)", size, shards)
			rows = append(rows,
				Row{Section: "1 framework overhead (in-process Kinesis server)", Figure: label + ": records/s",
					Value: collect(res, base+"worker", "records/s"), Baseline: collect(res, base+"bare", "records/s"),
					BaselineName: "bare loop", Note: "goal ≥ 0.95"},
				Row{Section: "1 framework overhead (in-process Kinesis server)", Figure: label + ": allocs/record",
					Unit: UnitRatio, Value: collect(res, base+"worker", "allocs/record"),
					Baseline: collect(res, base+"bare", "allocs/record"), BaselineName: "bare loop",
					Note: "SDK decoding included in both"},
			)
		}
	}
	return rows, nil
}

// deaggregation compares kpl.Unmarshal with the awslabs deaggregator.
func (b *bench) deaggregation(ctx context.Context) ([]Row, error) {
	res, err := goBench(ctx, b.benchDir, "-bench", "^BenchmarkDeaggregate$", "-benchtime", "0.5s",
		"-count", strconv.Itoa(b.benchCount), "./deagg")
	if err != nil {
		return nil, err
	}
	var rows []Row
	for _, shape := range []string{"100x100B", "40x1KiB"} {
		base := "BenchmarkDeaggregate/agg=" + shape + "/lib="
		label := "KPL de-aggregation, aggregates of " + strings.Replace(shape, "x", " × ", 1)
		rows = append(rows,
			Row{Section: "1 framework overhead (in-process Kinesis server)", Figure: label + ": MB/s", Unit: UnitMB,
				Value: collect(res, base+"shardline", "MB/s"), Baseline: collect(res, base+"awslabs", "MB/s"),
				BaselineName: "awslabs deaggregator", Note: "kpl.Unmarshal; baseline is what vmware-go-kcl-v2 uses"},
			Row{Section: "1 framework overhead (in-process Kinesis server)", Figure: label + ": allocs/user record", Unit: UnitRatio,
				Value: collect(res, base+"shardline", "allocs/user-record"), Baseline: collect(res, base+"awslabs", "allocs/user-record"),
				BaselineName: "awslabs deaggregator"},
		)
	}
	return rows, nil
}
