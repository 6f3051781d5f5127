package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	return parseBench(&out), nil
}

// parseBench reads the benchmark lines of go test output.
func parseBench(out *bytes.Buffer) []benchResult {
	var res []benchResult
	sc := bufio.NewScanner(out)
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
	return res
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

// overhead is item 1: the worker against bare GetRecords and SubscribeToShard
// loops on in-process servers (BenchmarkPolling and BenchmarkFanOut in
// ./worker). The test binary is built once and run once per sub-benchmark,
// alternating which of each pair goes first, so that the changing load of a
// shared machine hits both alike.
func (b *bench) overhead(ctx context.Context) ([]Row, error) {
	bin := filepath.Join(b.tmp, "worker.test")
	cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, "./worker")
	cmd.Dir = b.root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go test -c ./worker: %w\n%s", err, out)
	}
	// Records per run: enough for a few seconds each, so that the batches
	// in flight at the end (fetched, not yet delivered) weigh under 1%.
	records := map[string]string{"1KiB": "300000x", "100B": "600000x"}
	logf("overhead: %d rounds of 16 benchmarks", b.benchCount)
	var res []benchResult
	for i := range b.benchCount {
		for _, kind := range []string{"Polling", "FanOut"} {
			for _, size := range []string{"1KiB", "100B"} {
				for _, shards := range []string{"1", "16"} {
					pair := []string{"bare", "worker"}
					if i%2 == 1 {
						pair[0], pair[1] = pair[1], pair[0]
					}
					for _, loop := range pair {
						name := "Benchmark" + kind + "/size=" + size + "/shards=" + shards + "/loop=" + loop
						r, err := runTestBinary(ctx, filepath.Join(b.root, "worker"), bin, "-test.run", "^$",
							"-test.bench", "^"+regexp.QuoteMeta(name)+"$", "-test.benchtime", records[size])
						if err != nil {
							return nil, err
						}
						res = append(res, r...)
					}
				}
			}
		}
	}
	var rows []Row
	section := "1 framework overhead (in-process Kinesis servers)"
	for _, kind := range []string{"Polling", "FanOut"} {
		for _, size := range []string{"1KiB", "100B"} {
			for _, shards := range []string{"1", "16"} {
				base := "Benchmark" + kind + "/size=" + size + "/shards=" + shards + "/loop="
				label := fmt.Sprintf("%s, %s records, %s shard(s)", map[string]string{"Polling": "polling", "FanOut": "fan-out"}[kind], size, shards)
				baseline := map[string]string{"Polling": "bare GetRecords loop", "FanOut": "bare SubscribeToShard loop"}[kind]
				metric := func(figure, unit string, u Unit, note string) Row {
					return Row{Section: section, Figure: label + ": " + figure, Unit: u,
						Value: collect(res, base+"worker", unit), Baseline: collect(res, base+"bare", unit),
						BaselineName: baseline, Note: note}
				}
				rows = append(rows,
					metric("records/s", "records/s", UnitCount, "goal ≥ 0.95"),
					metric("CPU ns/record", "cpu-ns/record", UnitCount, "process CPU, server included"),
					metric("allocs/record", "allocs/record", UnitRatio, "SDK decoding (and server) included in both"),
				)
			}
		}
	}
	return rows, nil
}

// runTestBinary runs a compiled test binary in dir and parses its benchmark lines.
func runTestBinary(ctx context.Context, dir, bin string, args ...string) ([]benchResult, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, out.String())
	}
	return parseBench(&out), nil
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
			Row{Section: "1 framework overhead (in-process Kinesis servers)", Figure: label + ": MB/s", Unit: UnitMB,
				Value: collect(res, base+"shardline", "MB/s"), Baseline: collect(res, base+"awslabs", "MB/s"),
				BaselineName: "awslabs deaggregator", Note: "kpl.Unmarshal; baseline is what vmware-go-kcl-v2 uses"},
			Row{Section: "1 framework overhead (in-process Kinesis servers)", Figure: label + ": allocs/user record", Unit: UnitRatio,
				Value: collect(res, base+"shardline", "allocs/user-record"), Baseline: collect(res, base+"awslabs", "allocs/user-record"),
				BaselineName: "awslabs deaggregator"},
		)
	}
	return rows, nil
}
