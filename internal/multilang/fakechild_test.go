package multilang

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"
)

// The test binary doubles as a record processor: with MULTILANG_FAKE_CHILD
// set it speaks the child side of the protocol, misbehaving as the mode
// says, and appends every line it receives to MULTILANG_FAKE_LOG.
func TestMain(m *testing.M) {
	if mode := os.Getenv("MULTILANG_FAKE_CHILD"); mode != "" {
		os.Exit(fakeChild(mode, os.Getenv("MULTILANG_FAKE_LOG"), os.Getenv("MULTILANG_FAKE_MARKER")))
	}
	os.Exit(m.Run())
}

// Modes of the fake child.
const (
	modeOK          = "ok"           // behaves; checkpoints every batch and at shard end and shutdown
	modeDie         = "die"          // exits with status 3 on processRecords, after a stderr line
	modeDieOnce     = "die-once"     // like die the first time (a marker file remembers), then ok
	modeHang        = "hang"         // never answers processRecords
	modeGarbage     = "garbage"      // writes a line that is not a message on processRecords
	modeWrongStatus = "wrong-status" // answers processRecords with a status for initialize
	modeBadInit     = "bad-init"     // exits with status 1 on initialize
	modeExitZero    = "exit-zero"    // exits with status 0 on processRecords, without answering
)

func fakeChild(mode, logPath, marker string) int {
	var logf *os.File
	if logPath != "" {
		var err error
		if logf, err = os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 9
		}
		defer logf.Close()
	}
	if mode == modeDieOnce {
		if _, err := os.Stat(marker); err == nil {
			mode = modeOK
		} else {
			_ = os.WriteFile(marker, nil, 0o644)
			mode = modeDie
		}
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := bufio.NewWriter(os.Stdout)
	send := func(v map[string]any) {
		b, _ := json.Marshal(v)
		// Framed by newlines, as the libraries do.
		fmt.Fprintf(out, "\n%s\n", b)
		_ = out.Flush()
	}
	// checkpoint asks for a checkpoint and waits for the reply.
	checkpoint := func(seq any) {
		send(map[string]any{"action": "checkpoint", "sequenceNumber": seq})
		for in.Scan() {
			line := in.Bytes()
			if logf != nil {
				_, _ = logf.Write(append(append([]byte(nil), line...), '\n'))
			}
			if len(line) > 0 {
				return
			}
		}
	}
	for in.Scan() {
		line := in.Bytes()
		if len(line) == 0 {
			continue
		}
		if logf != nil {
			_, _ = logf.Write(append(append([]byte(nil), line...), '\n'))
		}
		var msg struct {
			Action  string `json:"action"`
			Records []struct {
				SequenceNumber string `json:"sequenceNumber"`
			} `json:"records"`
		}
		if err := json.Unmarshal(line, &msg); err != nil {
			fmt.Fprintln(os.Stderr, "bad input:", err)
			return 8
		}
		switch msg.Action {
		case "initialize":
			if mode == modeBadInit {
				fmt.Fprintln(os.Stderr, "cannot initialize: missing configuration")
				return 1
			}
		case "processRecords":
			switch mode {
			case modeDie:
				fmt.Fprintln(os.Stderr, "boom: processor crashed")
				return 3
			case modeExitZero:
				return 0
			case modeHang:
				time.Sleep(time.Hour)
			case modeGarbage:
				fmt.Fprintln(out, "hello from a stray print statement")
				_ = out.Flush()
				time.Sleep(time.Hour)
			case modeWrongStatus:
				send(map[string]any{"action": "status", "responseFor": "initialize"})
				continue
			}
			if n := len(msg.Records); n > 0 {
				checkpoint(msg.Records[n-1].SequenceNumber)
			}
		case "shardEnded", "shutdownRequested", "leaseLost":
			checkpoint(nil)
		}
		send(map[string]any{"action": "status", "responseFor": msg.Action})
	}
	return 0
}
