// Package testutil holds what tests that run real servers and OS processes
// share: free loopback ports, bounded polling, a locked output buffer and a
// started process that is stopped at the end of the test.
package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FreePort returns a 127.0.0.1 TCP port that was free at the time of the
// call.
func FreePort(t testing.TB) int {
	t.Helper()
	return FreePorts(t, 1)[0]
}

// FreePorts returns n distinct 127.0.0.1 TCP ports that were free at the
// time of the call (all are held until every one is picked).
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testutil: free port: %v", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// StablePorts returns n distinct 127.0.0.1 TCP ports, free at the time of
// the call, chosen below the kernel's ephemeral range (32768 and up by
// default). Use them for a server that a test stops and starts again on the
// same port: a port from the ephemeral range (FreePorts) can be taken in
// between by any outgoing connection or ":0" listener on the machine, such
// as another test run beside this one.
func StablePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	seen := map[int]bool{}
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("testutil: no %d free ports below the ephemeral range", n)
		}
		p := 20000 + rand.IntN(12000)
		if seen[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		defer l.Close()
		seen[p] = true
		ports = append(ports, p)
	}
	return ports
}

// FreeAddr returns "127.0.0.1:port" for a port free at the time of the call.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// Poll calls cond until it returns nil or within has passed, sleeping a
// little longer after each try (10 ms growing to 200 ms). It returns nil, or
// cond's last error saying how long it waited.
func Poll(within time.Duration, cond func() error) error {
	deadline := time.Now().Add(within)
	pause := 10 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", within, err)
		}
		time.Sleep(pause)
		pause = min(2*pause, 200*time.Millisecond)
	}
}

// WaitFor is Poll that fails the test, naming what it waited for, when cond
// is not met within the time.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	if err := Poll(within, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// errNotYet is what WaitUntil's condition says while it is false.
var errNotYet = errors.New("condition not met")

// WaitUntil is WaitFor with a condition that is only true or false.
func WaitUntil(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitFor(t, within, what, func() error {
		if !cond() {
			return errNotYet
		}
		return nil
	})
}

// WaitTCP waits (at most within) until addr accepts a TCP connection.
func WaitTCP(within time.Duration, addr string) error {
	return Poll(within, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// WaitHTTP waits (at most within) until a GET of url answers 200 OK.
func WaitHTTP(within time.Duration, url string) error {
	return Poll(within, func() error {
		_, err := HTTPGet(url)
		return err
	})
}

// HTTPGet returns the body of a GET of url (5 s timeout); an answer other
// than 200 OK is an error that carries the body.
func HTTPGet(url string) ([]byte, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b, nil
}

// SyncBuffer is a bytes.Buffer safe for a process or goroutine writing and a
// test reading at the same time.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ErrStillRunning is returned by Process.Stop when the process has not
// exited within the time given.
var ErrStillRunning = errors.New("testutil: process still running")

// Process is an OS process started by StartProcess.
type Process struct {
	// Cmd is the running command.
	Cmd *exec.Cmd
	// Output collects the process's stderr, and its stdout unless Cmd.Stdout
	// was set before the start.
	Output SyncBuffer

	done chan struct{}
	err  error
}

// StartProcess starts cmd (built by the caller: path, args, Dir, Env) with
// its output in Output. Unless cmd.SysProcAttr is set, the process gets
// SIGKILL if the test process dies. At the end of the test a process still
// running is killed and waited for.
func StartProcess(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = &p.Output
	}
	cmd.Stderr = &p.Output
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testutil: start %s: %v", cmd.Path, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// Exited is closed when the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Err is the process's exit error (nil for exit status 0); it is valid once
// Exited is closed.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Stop sends sig and waits at most within for the process to end. It
// returns the exit error, or ErrStillRunning (the process is then killed at
// the end of the test).
func (p *Process) Stop(sig os.Signal, within time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	if err := p.Cmd.Process.Signal(sig); err != nil {
		select {
		case <-p.done: // it ended meanwhile
			return p.err
		default:
			return err
		}
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		return fmt.Errorf("%w %s after %v", ErrStillRunning, within, sig)
	}
}

// Goroutines returns the stacks of every goroutine of the process, grouped
// by identical stack (runtime/pprof's debug=1 form): what a test prints
// when something it waited for did not happen, to show who is stuck where.
func Goroutines() string {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	return b.String()
}
