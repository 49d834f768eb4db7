package benchkit

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

// Main is a benchmark package's TestMain: it runs the tests, or, in a child
// started by StartChild, the server role the child was started in
// ("mochi" or "gateway").
func Main(m *testing.M) {
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

// Child is a server role running as a child process. Addrs are the
// addresses of its READY line: MQTT first, then (gateway) HTTP.
type Child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	Addrs []string
}

// StartChild re-runs this test binary in role with extra environment, and
// waits for its READY line.
func StartChild(tb testing.TB, role string, env ...string) *Child {
	tb.Helper()
	return StartChildIn(tb, nil, role, env...)
}

// StartChildIn is StartChild with the child inside cg (if not nil) from
// its first instruction: a shell joins the cgroup, then execs the binary.
func StartChildIn(tb testing.TB, cg *MemCgroup, role string, env ...string) *Child {
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
	c := &Child{cmd: cmd, stdin: stdin}
	tb.Cleanup(c.Stop)
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
		c.Addrs = strings.Fields(line)
	case <-time.After(60 * time.Second):
		tb.Fatalf("%s role not ready in 60 s", role)
	}
	return c
}

// Stop ends the child cleanly (stdin closed), killing it after 15 s.
func (c *Child) Stop() {
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

// Stats reads the child's CPU and memory from /proc.
func (c *Child) Stats(tb testing.TB) ProcStats {
	ps, err := ReadProc(c.cmd.Process.Pid)
	if err != nil {
		tb.Fatalf("read /proc of the server: %v", err)
	}
	return ps
}

// Kill ends the child with SIGKILL (no shutdown of any kind: the power-cut
// case) and waits for it.
func (c *Child) Kill() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

// Pid is the child's process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }
