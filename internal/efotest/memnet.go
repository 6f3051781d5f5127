package efotest

import (
	"context"
	"net"
	"sync"
)

// memListener is an in-memory net.Listener whose connections are net.Pipe
// pairs. Blocking on one is blocking on channels created where the
// connection was made, so a server and client that both run inside a
// testing/synctest bubble can be waited on durably: fake time advances while
// they wait, and goroutines left behind are reported.
type memListener struct {
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

// Accept waits for the next connection.
func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops Accept and further dials.
func (l *memListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

// Addr returns a placeholder address.
func (l *memListener) Addr() net.Addr { return memAddr{} }

// DialContext connects to the listener; it matches http.Transport's
// DialContext field.
func (l *memListener) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.closed:
		return nil, &net.OpError{Op: "dial", Net: "mem", Err: net.ErrClosed}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "fake-kinesis:80" }
