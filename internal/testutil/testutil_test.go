package testutil

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFreePortsDistinctAndBindable(t *testing.T) {
	ports := FreePorts(t, 5)
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("port %d returned twice in %v", p, ports)
		}
		seen[p] = true
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d not bindable: %v", p, err)
		}
		l.Close()
	}
	if a := FreeAddr(t); !strings.HasPrefix(a, "127.0.0.1:") {
		t.Fatalf("FreeAddr = %q", a)
	}
}

func TestPoll(t *testing.T) {
	n := 0
	if err := Poll(5*time.Second, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Fatalf("Poll = %v after %d calls", err, n)
	}
	calls := 0
	WaitUntil(t, 5*time.Second, "third call", func() bool { calls++; return calls == 3 })
	if calls != 3 {
		t.Fatalf("WaitUntil returned after %d calls", calls)
	}
	errNever := errors.New("never")
	if err := Poll(50*time.Millisecond, func() error { return errNever }); !errors.Is(err, errNever) {
		t.Fatalf("Poll of a condition never met = %v", err)
	}
}

func TestWaitTCPAndHTTP(t *testing.T) {
	if err := WaitTCP(100*time.Millisecond, FreeAddr(t)); err == nil {
		t.Fatal("WaitTCP of a closed port succeeded")
	}
	status := http.StatusServiceUnavailable
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		_, _ = w.Write([]byte("body"))
	}))
	defer srv.Close()
	if err := WaitTCP(5*time.Second, srv.Listener.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if err := WaitHTTP(100*time.Millisecond, srv.URL); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("WaitHTTP of a 503 = %v", err)
	}
	status = http.StatusOK
	if err := WaitHTTP(5*time.Second, srv.URL); err != nil {
		t.Fatal(err)
	}
	if b, err := HTTPGet(srv.URL); err != nil || string(b) != "body" {
		t.Fatalf("HTTPGet = %q, %v", b, err)
	}
}

func TestProcessStop(t *testing.T) {
	p := StartProcess(t, exec.Command("sh", "-c", "echo started; echo oops >&2; exec sleep 30"))
	WaitFor(t, 10*time.Second, "output", func() error {
		if s := p.Output.String(); !strings.Contains(s, "started") || !strings.Contains(s, "oops") {
			return errors.New("no output yet: " + s)
		}
		return nil
	})
	err := p.Stop(syscall.SIGTERM, 10*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Fatalf("Stop = %v, want death by SIGTERM", err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Exited not closed after Stop")
	}
	// A process that ignores the signal is reported still running.
	q := StartProcess(t, exec.Command("sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"))
	WaitFor(t, 10*time.Second, "trap set", func() error {
		if !strings.Contains(q.Output.String(), "ready") {
			return errors.New("not ready")
		}
		return nil
	})
	if err := q.Stop(syscall.SIGTERM, 300*time.Millisecond); !errors.Is(err, ErrStillRunning) {
		t.Fatalf("Stop of a process ignoring SIGTERM = %v", err)
	}
}

func TestStablePorts(t *testing.T) {
	ports := StablePorts(t, 5)
	seen := map[int]bool{}
	for _, p := range ports {
		if p < 20000 || p >= 32000 || seen[p] {
			t.Fatalf("ports %v: want 5 distinct ports in [20000, 32000)", ports)
		}
		seen[p] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d is not free after the call: %v", p, err)
		}
		l.Close()
	}
}
