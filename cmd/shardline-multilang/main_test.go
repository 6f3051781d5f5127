package main

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardline/shardline/kcl"
)

func writeProps(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "app.properties")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFlagsOverrideProperties(t *testing.T) {
	props := writeProps(t, "executableName = go run app.go\nstreamName = s1\napplicationName = app\n"+
		"initialPositionInStream = LATEST\nfailoverTimeMillis = 10000\n")
	o, err := parseFlags([]string{"-stream", "s2", "-initial-position", "TRIM_HORIZON", "-failover-time-millis", "3000", props}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StreamName != "s2" || cfg.InitialPosition != kcl.StartAtTrimHorizon() || cfg.FailoverTime != 3*time.Second {
		t.Errorf("config %+v", cfg)
	}
	if cfg.ApplicationName != "app" || cfg.Executable != "go run app.go" {
		t.Errorf("properties lost: %+v", cfg)
	}
}

func TestUnknownPropertiesAreReported(t *testing.T) {
	props := writeProps(t, "executableName = go version\nstreamName = s\napplicationName = a\napplicationNmae = b\n")
	o, err := parseFlags([]string{"-properties", props}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	_, err = loadConfig(o, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "applicationNmae") {
		t.Fatalf("loadConfig = %v, want an error naming the unknown key", err)
	}

	var logs bytes.Buffer
	o.ignoreUnknown = true
	if _, err := loadConfig(o, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "applicationNmae") {
		t.Errorf("the ignored unknown key was not logged: %s", logs.String())
	}
}

func TestRunRefusesABadConfiguration(t *testing.T) {
	props := writeProps(t, "streamName = s\n")
	var stderr bytes.Buffer
	if code := run([]string{props}, &stderr); code != 2 {
		t.Errorf("exit status %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), "executableName is required") {
		t.Errorf("stderr: %s", stderr.String())
	}
	if code := run([]string{"a.properties", "b.properties"}, io.Discard); code != 2 {
		t.Errorf("two files: exit status %d, want 2", code)
	}
	props = writeProps(t, "executableName = ./no-such-processor.py\nstreamName = s\napplicationName = a\n")
	stderr.Reset()
	if code := run([]string{props}, &stderr); code != 2 || !strings.Contains(stderr.String(), "no-such-processor.py") {
		t.Errorf("missing executable: exit status %d, stderr %s", code, stderr.String())
	}
}

func TestServeMetricsAndHealth(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var healthy atomic.Bool
	metricsHandler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "shardline_x 1\n") })
	srv := serve(ln, metricsHandler, &healthy, slog.New(slog.DiscardHandler))
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "shardline_x 1") {
		t.Errorf("/metrics: %d %q", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz before start: %d, want 503", code)
	}
	healthy.Store(true)
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz while running: %d, want 200", code)
	}
}
