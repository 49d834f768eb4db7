package ingest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// roleEnv selects a server role when this test binary is re-run as a child.
const roleEnv = "EDGEANCHOR_BENCH_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "":
		os.Exit(m.Run())
	case "mochi":
		os.Exit(serve(runMochi))
	case "gateway":
		os.Exit(serve(runGateway))
	default:
		fmt.Fprintln(os.Stderr, "unknown role", os.Getenv(roleEnv))
		os.Exit(2)
	}
}

// serve runs a server role: it prints "READY <mqtt addr> [<http addr>]" on
// stdout and serves until stdin closes or SIGTERM.
func serve(run func(ctx context.Context, ready func(addrs ...string)) error) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	err := run(ctx, func(addrs ...string) { fmt.Println("READY " + strings.Join(addrs, " ")) })
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "server role:", err)
		return 1
	}
	return 0
}

// runMochi is the baseline: a plain mochi broker with an allow-all hook.
func runMochi(ctx context.Context, ready func(...string)) error {
	srv := mqtt.New(&mqtt.Options{InlineClient: false, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return err
	}
	l := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
	if err := srv.AddListener(l); err != nil {
		return err
	}
	if err := srv.Serve(); err != nil {
		return err
	}
	ready(l.Address())
	<-ctx.Done()
	return srv.Close()
}

// child is a server role running as a child process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addrs []string
}

// startChild re-runs this test binary in role with extra environment, and
// waits for its READY line.
func startChild(tb testing.TB, role string, env ...string) *child {
	tb.Helper()
	return startChildIn(tb, nil, role, env...)
}

// startChildIn is startChild with the child inside cg (if not nil) from
// its first instruction: a shell joins the cgroup, then execs the binary.
func startChildIn(tb testing.TB, cg *memCgroup, role string, env ...string) *child {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if cg != nil {
		cmd = exec.Command("/bin/sh", "-c", `echo $$ > "$0" && exec "$@"`, cg.procsFile(), os.Args[0], "-test.run=^$")
	}
	cmd.Env = append(append(os.Environ(), roleEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin}
	tb.Cleanup(c.stop)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
				lines <- line
			}
		}
		close(lines)
	}()
	select {
	case line, ok := <-lines:
		if !ok {
			tb.Fatalf("%s role exited before READY", role)
		}
		c.addrs = strings.Fields(line)
	case <-time.After(60 * time.Second):
		tb.Fatalf("%s role not ready in 60 s", role)
	}
	return c
}

func (c *child) stop() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.stdin.Close()
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

func (c *child) stats(tb testing.TB) procStats {
	ps, err := readProc(c.cmd.Process.Pid)
	if err != nil {
		tb.Fatalf("read /proc of the server: %v", err)
	}
	return ps
}
