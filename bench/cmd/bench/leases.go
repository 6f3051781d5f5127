package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shardline/shardline/internal/benchkinesis"
	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/internal/testenv"
)

// leaseReport is one line of cmd/leaseworker's output.
type leaseReport struct {
	T     int64            `json:"t"`
	Held  int              `json:"held"`
	Calls map[string]int64 `json:"calls"`
}

// procStat is a process's CPU time and resident memory from /proc.
type procStat struct {
	cpu time.Duration
	rss int64 // bytes
}

var clockTicks = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}()

func readProc(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	var s procStat
	s.cpu = time.Duration((ut + st) / clockTicks * float64(time.Second))
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			s.rss = kb << 10
		}
	}
	return s, nil
}

// leaseCost is item 2, first part: one worker holding 1,000 leases on
// DynamoDB Local, reading 1,000 idle shards of the in-process server.
func (b *bench) leaseCost(ctx context.Context) ([]Row, error) {
	const leases = 1000
	const windows, window = 3, 10 * time.Second
	// The worker's defaults.
	const leaseDuration = 10 * time.Second
	renew := leaseDuration / 3
	take := renew / 2

	srv := benchkinesis.New(benchkinesis.Options{Shards: leases, Empty: true})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	bin := filepath.Join(b.tmp, "leaseworker")
	if err := b.build(ctx, b.benchDir, bin, "./cmd/leaseworker"); err != nil {
		return nil, err
	}
	app := testenv.UniqueName("bench-leases")
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = fleet.DeleteTable(cctx, testenv.NewDynamoDBClient(testenv.DynamoDBEndpoint()), app)
	}()
	args := []string{"-stream", srv.StreamName(), "-app", app,
		"-kinesis-endpoint", hs.URL, "-dynamodb-endpoint", testenv.DynamoDBEndpoint()}
	if b.leaseProfile != "" {
		args = append(args, "-cpuprofile", b.leaseProfile)
	}
	cmd := exec.Command(bin, args...)
	logFile, err := os.Create(filepath.Join(b.tmp, "leaseworker.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	began := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	reports := make(chan leaseReport, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var r leaseReport
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				reports <- r
			}
		}
		close(reports)
		exited <- cmd.Wait()
	}()
	next := func(deadline time.Duration) (leaseReport, error) {
		select {
		case r, ok := <-reports:
			if !ok {
				return r, errors.New("leaseworker exited (see its log in the bench directory)")
			}
			return r, nil
		case <-time.After(deadline):
			return leaseReport{}, errors.New("leaseworker stopped reporting")
		case <-ctx.Done():
			return leaseReport{}, ctx.Err()
		}
	}

	// Wait until it holds every lease.
	var r leaseReport
	for r.Held < leases {
		if r, err = next(10 * time.Second); err != nil {
			return nil, err
		}
		if time.Since(began) > 5*time.Minute {
			return nil, fmt.Errorf("leaseworker holds %d of %d leases after 5 minutes", r.Held, leases)
		}
	}
	acquired := time.Since(began)
	logf("leases: %d held after %v; settling for one lease duration", leases, acquired.Round(time.Millisecond))
	for settle := time.Now(); time.Since(settle) < leaseDuration; {
		if r, err = next(10 * time.Second); err != nil {
			return nil, err
		}
	}

	var calls, renews, scans, cpu, rss Sample
	prev, prevStat := r, procStat{}
	if prevStat, err = readProc(cmd.Process.Pid); err != nil {
		return nil, err
	}
	prevAt := time.Unix(0, r.T)
	for range windows {
		for time.Unix(0, r.T).Sub(prevAt) < window {
			if r, err = next(10 * time.Second); err != nil {
				return nil, err
			}
		}
		st, err := readProc(cmd.Process.Pid)
		if err != nil {
			return nil, err
		}
		at := time.Unix(0, r.T)
		secs := at.Sub(prevAt).Seconds()
		var all int64
		for op, n := range r.Calls {
			all += n - prev.Calls[op]
		}
		calls = append(calls, float64(all)/secs)
		renews = append(renews, float64(r.Calls["UpdateItem"]-prev.Calls["UpdateItem"])/secs)
		scans = append(scans, float64(r.Calls["Scan"]-prev.Calls["Scan"])/secs)
		cpu = append(cpu, 100*(st.cpu-prevStat.cpu).Seconds()/secs)
		rss = append(rss, float64(st.rss)/(1<<20))
		if r.Held != leases {
			logf("leases: warning: holding %d of %d leases during the measurement", r.Held, leases)
		}
		prev, prevStat, prevAt = r, st, at
	}
	// Expected (liveness per worker): one heartbeat write of the fleet row
	// per heartbeat period, min(renew, take), and no per-lease renewals; the
	// whole table read once per 20 s by a fleet of one, and by the shard
	// sync once a minute.
	expRenew := 1 / min(renew, take).Seconds()
	expScan := 1/20.0 + 1/60.0
	section := "2 lease cost and scale"
	note := fmt.Sprintf("defaults: lease %v, renew %v, take %v", leaseDuration, renew.Round(time.Millisecond), take.Round(time.Millisecond))
	return []Row{
		{Section: section, Figure: "1 worker, 1,000 leases on DynamoDB Local: time to hold all (creates + takes)", Unit: UnitSeconds,
			Value: Sample{acquired.Seconds()}, Note: "1 run; emulator-bound (DynamoDB Local)"},
		{Section: section, Figure: "1,000 leases: DynamoDB calls/s, steady state", Value: calls,
			Baseline: Sample{expRenew + expScan}, BaselineName: "expected", Note: note + "; 10 s windows"},
		{Section: section, Figure: "1,000 leases: UpdateItem (heartbeat) calls/s", Value: renews,
			Baseline: Sample{expRenew}, BaselineName: "1÷heartbeat period"},
		{Section: section, Figure: "1,000 leases: Scan calls/s", Unit: UnitRatio, Value: scans,
			Baseline: Sample{expScan}, BaselineName: "1÷20s + sync"},
		{Section: section, Figure: "1,000 leases: worker CPU, % of one core", Unit: UnitPercent, Value: cpu,
			Note: "whole process, incl. polling 1,000 idle shards (GetRecords every 1 s each)"},
		{Section: section, Figure: "1,000 leases: worker RSS, MiB", Unit: UnitMB, Value: rss},
	}, nil
}

// scalePhase is one phase of bench/leasescale's result.
type scalePhase struct {
	Name       string  `json:"name"`
	Converged  int64   `json:"converged_ns"`
	Rounds     float64 `json:"rounds"`
	Moves      int64   `json:"moves"`
	Acquired   int64   `json:"acquired"`
	MovesAfter int64   `json:"moves_after"`
}

// leaseScale is item 2, second part: 10,000 leases and 100 workers in
// virtual time (bench/leasescale).
func (b *bench) leaseScale(ctx context.Context) ([]Row, error) {
	out := filepath.Join(b.tmp, "leasescale.json")
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^TestLeaseScale$", "-count=1", "-timeout", "20m", "./leasescale")
	cmd.Dir = b.benchDir
	cmd.Env = append(os.Environ(), "BENCH_RESULT="+out)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	logf("go test -run TestLeaseScale ./leasescale (10,000 leases × 100 workers in virtual time; a few minutes of CPU)")
	if err := cmd.Run(); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	var res struct {
		Phases []scalePhase `json:"phases"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		return nil, err
	}
	section := "2 lease cost and scale"
	var rows []Row
	for _, p := range res.Phases {
		label := "10,000 leases × 100 workers, " + p.Name
		rows = append(rows,
			Row{Section: section, Figure: label + ": virtual time to balance", Unit: UnitSeconds,
				Value: Sample{time.Duration(p.Converged).Seconds()}, Note: "synctest, in-memory store, lease 10s"},
			Row{Section: section, Figure: label + ": taking rounds per worker", Unit: UnitRatio, Value: Sample{p.Rounds}},
			Row{Section: section, Figure: label + ": leases acquired / moved between workers", Value: Sample{float64(p.Acquired)},
				Note: fmt.Sprintf("%d moved; %d moves in the 20 s after balance", p.Moves, p.MovesAfter)},
		)
	}
	return rows, nil
}
