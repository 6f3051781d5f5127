package worker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// runUntil runs a worker with c until done is closed (or fails the test
// after 30 s, naming what it waited for), then stops it gracefully.
func runUntil(t *testing.T, c worker.Config, done <-chan struct{}, what string) {
	t.Helper()
	w, err := worker.New(c)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// A processor error and a panic value that carry a record's data are logged
// by type, with the message cut to 200 bytes: the payload is not in the logs.
func TestProcessorErrorsDoNotLogPayloads(t *testing.T) {
	const logCap = 200 // the cap the README states
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 1)
	put(t, kc, stream, 1, "x")

	raw := make([]byte, 2048)
	_, _ = rand.Read(raw)
	payload := hex.EncodeToString(raw) // 4096 bytes, no repeats to speak of
	var calls atomic.Int32
	done := make(chan struct{})
	f := func(string) (kcl.RecordProcessor, error) {
		return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
			switch calls.Add(1) {
			case 1:
				return errors.New("cannot bill record " + payload)
			case 2:
				panic(payload)
			case 3:
				close(done)
			}
			return in.Checkpointer.Checkpoint(ctx)
		}), nil
	}
	// One TextHandler writes to logs, one record at a time; it is read
	// after Run has returned.
	var logs bytes.Buffer
	c := baseConfig(t, stream, testenv.UniqueName("app"), f)
	c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	runUntil(t, c, done, "the batch's third delivery")
	out := logs.String()
	for _, want := range []string{"err.type=*errors.errorString", "err.type=panic(string)", "bytes cut]"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
	for i := 0; i+logCap+1 <= len(payload); i++ {
		if strings.Contains(out, payload[i:i+logCap+1]) {
			t.Fatalf("logs hold %d+ bytes of the record's data (from offset %d)", logCap+1, i)
		}
	}
}
