// Command bench runs Shardline's benchmarks and prints one table: each
// figure, its baseline measured in the same run where there is one, and the
// ratio of the two medians. `make bench` runs it from the repository.
//
// Sections (-sections, comma-separated; default all):
//
//	overhead       worker vs bare GetRecords and SubscribeToShard loops on in-process servers (./worker benchmarks)
//	deagg          kpl.Unmarshal vs the awslabs deaggregator (bench/deagg)
//	leases         one worker holding 1,000 leases on DynamoDB Local
//	scale          10,000 leases × 100 workers in virtual time (bench/leasescale)
//	fleet          worker processes on the emulators, side by side with vmware-go-kcl-v2
//	react          reaction times at both libraries' defaults: cold start, graceful stop, join (minutes: the peer's sync loop)
//	peer-defaults  not by default: one cold start with both libraries at their defaults (minutes)
//
// The leases, fleet and react sections need the emulators (scripts/emulators.sh
// start). Each figure is the median of several runs with min and max.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/internal/testenv"
)

// bench holds what every section needs.
type bench struct {
	root, benchDir, tmp string
	runs, benchCount    int
	reactPeer           bool
	leaseProfile        string
	kc                  *kinesis.Client
	dc                  *dynamodb.Client
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func main() {
	if err := runBench(); err != nil {
		logf("%v", err)
		os.Exit(1)
	}
}

func runBench() error {
	runs := flag.Int("runs", 3, "runs of each fleet scenario")
	count := flag.Int("count", 4, "go test -count for the Go benchmarks")
	sections := flag.String("sections", "overhead,deagg,leases,scale,fleet,react", "sections to run")
	reactPeer := flag.Bool("react-peer", true, "react section: run the peer too (it takes about 5 minutes a run)")
	keep := flag.Bool("keep", false, "keep the temporary directory (binaries, worker logs) and print its path")
	md := flag.String("md", "", "also write the machine and the table as Markdown to this file")
	leaseProfile := flag.String("leaseworker-cpuprofile", "", "leases section: write the worker's CPU profile to this file")
	flag.Parse()

	root, err := repoRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "shardline-bench-")
	if err != nil {
		return err
	}
	if *keep {
		logf("keeping the binaries and the worker logs in %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	b := &bench{
		root: root, benchDir: filepath.Join(root, "bench"), tmp: tmp, runs: *runs, benchCount: *count, reactPeer: *reactPeer,
		leaseProfile: *leaseProfile,
		kc:           testenv.NewKinesisClient(testenv.KinesisEndpoint()),
		dc:           testenv.NewDynamoDBClient(testenv.DynamoDBEndpoint()),
	}
	want := map[string]bool{}
	for _, s := range strings.Split(*sections, ",") {
		want[strings.TrimSpace(s)] = true
	}
	if want["leases"] || want["fleet"] || want["react"] || want["peer-defaults"] {
		if err := emulatorsUp(); err != nil {
			return fmt.Errorf("%w (run scripts/emulators.sh start)", err)
		}
	}

	machine := machineInfo()
	logf("%s", machine)
	started := time.Now()
	ctx := context.Background()
	var rows []Row
	for _, s := range []struct {
		name string
		fn   func(context.Context) ([]Row, error)
	}{
		{"overhead", b.overhead},
		{"deagg", b.deaggregation},
		{"leases", b.leaseCost},
		{"scale", b.leaseScale},
		{"fleet", b.fleetRows},
		{"react", b.reactRows},
		{"peer-defaults", b.peerDefaults},
	} {
		if !want[s.name] {
			continue
		}
		t := time.Now()
		logf("section %s", s.name)
		rs, err := s.fn(ctx)
		if err != nil {
			return fmt.Errorf("section %s: %w", s.name, err)
		}
		logf("section %s done in %v", s.name, time.Since(t).Round(time.Second))
		rows = append(rows, rs...)
	}
	elapsed := time.Since(started).Round(time.Second)

	fmt.Printf("Shardline benchmarks, %s, %v\n%s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), elapsed, machine)
	printTable(os.Stdout, rows)
	fmt.Println("\nRatio = value median ÷ baseline median. Times: lower is better; rates: higher is better.")
	if *md != "" {
		f, err := os.Create(*md)
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintf(f, "Run of %s, %v in all. %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), elapsed, machine)
		markdownTable(f, rows)
	}
	return nil
}

// repoRoot finds the directory of Shardline's go.mod above the working
// directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module github.com/shardline/shardline\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the Shardline repository")
		}
		dir = parent
	}
}

// build compiles pkg (relative to dir) into bin.
func (b *bench) build(ctx context.Context, dir, bin, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return nil
}

func emulatorsUp() error {
	for _, ep := range []string{testenv.KinesisEndpoint(), testenv.DynamoDBEndpoint()} {
		u, err := url.Parse(ep)
		if err != nil {
			return err
		}
		c, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
		if err != nil {
			return fmt.Errorf("emulator at %s unreachable: %w", ep, err)
		}
		c.Close()
	}
	resp, err := http.Get(strings.TrimRight(testenv.KinesisEndpoint(), "/") + "/healthcheck")
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// machineInfo describes the machine: cores, CPU model, memory, Go, load.
func machineInfo() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kb int64
				fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
				mem = fmt.Sprintf(", %.1f GiB memory", float64(kb)/(1<<20))
			}
		}
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			load = fmt.Sprintf(", load average %s %s %s at start", f[0], f[1], f[2])
		}
	}
	return fmt.Sprintf("Machine: %d cores (nproc), %s%s, %s %s/%s%s.",
		runtime.NumCPU(), model, mem, runtime.Version(), runtime.GOOS, runtime.GOARCH, load)
}
