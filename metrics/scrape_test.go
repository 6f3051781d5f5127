package metrics_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/metrics"
)

// scrape reads a /metrics page: the type of every family and the sum of
// every family's sample values (per name, as exposed).
func scrape(ctx context.Context, url string) (types map[string]string, sums map[string]float64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	types, sums = map[string]string{}, map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if name, typ, ok := strings.Cut(rest, " "); ok {
				types[name] = typ
			}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return nil, nil, fmt.Errorf("sample line %q: %w", line, err)
		}
		sums[name] += v
	}
	return types, sums, sc.Err()
}

// metricsURL finds the URL the consumer logged when it began serving metrics.
func metricsURL(logPath string) (string, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var line struct{ Msg, URL string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving metrics" {
			return line.URL, nil
		}
	}
	return "", errors.New("no \"serving metrics\" line in the log yet")
}

// TestConsumerServesMetrics runs the example consumer with -metrics-addr and
// scrapes it over HTTP, as Prometheus would.
func TestConsumerServesMetrics(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 2)
	const n = 100
	putRecords(t, kc, stream, n)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin, err := fleet.Build(ctx, t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fl, err := fleet.New(fleet.Config{
		Binary: bin, Dir: dir, Stream: stream, App: testenv.UniqueName("scrape"),
		KinesisEndpoint: testenv.KinesisEndpoint(), DynamoDBEndpoint: testenv.DynamoDBEndpoint(),
		LeaseDuration: 3 * time.Second, IdleTime: 100 * time.Millisecond,
		ExtraArgs: []string{"-metrics-addr", "127.0.0.1:0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	p, err := fl.Start("scraped")
	if err != nil {
		t.Fatal(err)
	}

	var url string
	err = fleet.Poll(ctx, 100*time.Millisecond, "the metrics URL in the log", func(context.Context) (bool, error) {
		url, err = metricsURL(fl.LogPath("scraped"))
		return err == nil, err
	})
	if err != nil {
		t.Fatal(err)
	}
	var types map[string]string
	var sums map[string]float64
	err = fleet.Poll(ctx, 200*time.Millisecond, "every record processed and both leases held", func(ctx context.Context) (bool, error) {
		types, sums, err = scrape(ctx, url)
		if err != nil {
			return false, err
		}
		if sums["shardline_records_processed_total"] != n || sums["shardline_leases_held"] != 2 {
			return false, fmt.Errorf("records processed %v (want %d), leases held %v (want 2)",
				sums["shardline_records_processed_total"], n, sums["shardline_leases_held"])
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if sums["shardline_read_calls_total"] < 2 {
		t.Errorf("read calls %v, want at least one per shard", sums["shardline_read_calls_total"])
	}

	t.Run("dashboard", func(t *testing.T) {
		fams := map[string]metrics.Series{}
		for name, typ := range types {
			fams[name] = metrics.Series{Name: name, Type: typ}
		}
		checkDashboard(t, fams)
	})

	if _, err := p.Terminate(ctx); err != nil {
		t.Error(err)
	}
	if _, _, err := scrape(ctx, url); err == nil {
		t.Error("the metrics server still answers after the consumer exited")
	}
}
