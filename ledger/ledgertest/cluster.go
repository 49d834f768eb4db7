package ledgertest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
	"github.com/edgeanchor/edgeanchor/ledger"
)

// Cluster is a consortium of validators made by ledger.Testnet (what
// `edgeanchor ledger testnet` runs), each run by ledgernode (what
// `edgeanchor ledger start --home` runs) as its own OS process on
// 127.0.0.1. Processes are killed at t.Cleanup (and by the kernel if the
// test process dies).
type Cluster struct {
	Dir           string            // testnet output directory
	Homes         []string          // node homes
	Committee     *device.KeySigner // the whole committee (threshold 1)
	Regulator     *device.KeySigner // genesis regulator
	TimeoutCommit string            // consensus timeout_commit of the homes

	t     testing.TB
	bin   string
	base  int
	rpcs  []string // RPC URLs of homes not laid out from base (RunHomes, AddHome)
	mu    sync.Mutex
	procs []*exec.Cmd
	logs  []*os.File
}

// ClusterOptions tune StartClusterWith.
type ClusterOptions struct {
	// Prepare, if set, may edit each home (config.toml, genesis.json) after
	// ledger.Testnet made it and before its node starts.
	Prepare func(home string) error
}

// nodeMain is the package of the node process (relative to the module
// root): the ledger's own entry point, not the edgeanchor command.
const nodeMain = "./ledger/ledgertest/ledgernode"

// StartCluster makes an n-validator testnet on a random free base port and
// starts every validator; it returns once all of them are past height 1.
// It retries with another base port if a port turns out to be taken.
func StartCluster(t testing.TB, n int) *Cluster { return StartClusterWith(t, n, ClusterOptions{}) }

// StartClusterWith is StartCluster with options.
func StartClusterWith(t testing.TB, n int, opts ClusterOptions) *Cluster {
	t.Helper()
	bin := testbin.Path(t, nodeMain)
	var lastErr error
	for attempt := 0; attempt < 4; attempt++ {
		base, ok := freeBase(n)
		if !ok {
			continue
		}
		c := &Cluster{Dir: t.TempDir(), t: t, bin: bin, base: base, procs: make([]*exec.Cmd, n), logs: make([]*os.File, n)}
		_, err := ledger.Testnet(c.Dir, n, base, ledger.HomeOptions{})
		if err != nil {
			t.Fatalf("ledgertest: ledger testnet: %v", err)
		}
		for i := range n {
			c.Homes = append(c.Homes, filepath.Join(c.Dir, fmt.Sprintf("node%d", i)))
			if opts.Prepare != nil {
				if err := opts.Prepare(c.Homes[i]); err != nil {
					t.Fatalf("ledgertest: prepare %s: %v", c.Homes[i], err)
				}
			}
		}
		if c.Committee, err = device.LoadKeySigner(filepath.Join(c.Dir, ledger.CommitteeKeyFile)); err != nil {
			t.Fatalf("ledgertest: committee key: %v", err)
		}
		if c.Regulator, err = device.LoadKeySigner(filepath.Join(c.Dir, ledger.RegulatorKeyFile)); err != nil {
			t.Fatalf("ledgertest: regulator key: %v", err)
		}
		if conf, err := ledger.LoadConfig(c.Homes[0]); err == nil {
			c.TimeoutCommit = conf.Consensus.TimeoutCommit.String()
		}
		t.Cleanup(c.stopAll)
		for i := range n {
			if err := c.start(i); err != nil {
				t.Fatalf("ledgertest: %v", err)
			}
		}
		if lastErr = c.waitAll(1, 60*time.Second); lastErr == nil {
			return c
		}
		c.stopAll()
		if !c.portConflict() {
			t.Fatalf("ledgertest: cluster did not start: %v\n%s", lastErr, c.tails())
		}
	}
	t.Fatalf("ledgertest: cluster did not start after retries: %v", lastErr)
	return nil
}

// freeBase picks a random base port whose 3n ports (p2p, rpc, prometheus
// of each node, spaced by 10) are free right now.
func freeBase(n int) (int, bool) {
	for range 20 {
		// below the kernel's ephemeral range (32768-60999 by default), so
		// that no outgoing connection or :0 listener of another test holds
		// one of these ports
		base := 20000 + 10*rand.IntN(1200)
		ok := true
		for k := 0; k < n && ok; k++ {
			for off := 0; off < 3; off++ {
				l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+10*k+off))
				if err != nil {
					ok = false
					break
				}
				l.Close()
			}
		}
		if ok {
			return base, true
		}
	}
	return 0, false
}

// FreeBase returns a base port P below the kernel's ephemeral range such
// that P+10k, P+10k+1 and P+10k+2 are free for k < n right now: the ports of
// n homes made apart (p2p, RPC, Prometheus), as StartCluster lays them out.
func FreeBase(t testing.TB, n int) int {
	t.Helper()
	base, ok := freeBase(n)
	if !ok {
		t.Fatal("ledgertest: no free block of ports")
	}
	return base
}

// N is the number of validators.
func (c *Cluster) N() int { return len(c.Homes) }

// RPC is node i's RPC URL.
func (c *Cluster) RPC(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < len(c.rpcs) && c.rpcs[i] != "" {
		return c.rpcs[i]
	}
	return fmt.Sprintf("http://127.0.0.1:%d", c.base+10*i+1)
}

// RunHomes starts a node process for each of homes (made and
// given their genesis by the caller: `ledger init --org`, `ledger genesis
// assemble` and `install`), rpcs[i] being home i's RPC URL, and waits
// until every node is past height 1. Logs go to a temp dir.
func RunHomes(t testing.TB, homes, rpcs []string) *Cluster {
	t.Helper()
	c := &Cluster{Dir: t.TempDir(), t: t, bin: testbin.Path(t, nodeMain), Homes: homes, rpcs: rpcs,
		procs: make([]*exec.Cmd, len(homes)), logs: make([]*os.File, len(homes))}
	t.Cleanup(c.stopAll)
	for i := range homes {
		if err := c.start(i); err != nil {
			t.Fatalf("ledgertest: %v", err)
		}
	}
	c.WaitHeight(t, 2, 90*time.Second)
	return c
}

// AddHome starts a node from another home (a validator joining the running
// chain, say) whose RPC URL is rpc, and returns its index.
func (c *Cluster) AddHome(home, rpc string) int {
	c.t.Helper()
	c.mu.Lock()
	i := len(c.Homes)
	for len(c.rpcs) < i {
		c.rpcs = append(c.rpcs, "")
	}
	c.Homes = append(c.Homes, home)
	c.rpcs = append(c.rpcs, rpc)
	c.procs = append(c.procs, nil)
	c.logs = append(c.logs, nil)
	c.mu.Unlock()
	c.Start(i)
	return i
}

func (c *Cluster) start(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.procs[i] != nil {
		return fmt.Errorf("node %d already running", i)
	}
	logf, err := os.OpenFile(filepath.Join(c.Dir, fmt.Sprintf("node%d.log", i)), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, "--home", c.Homes[i])
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start node %d: %w", i, err)
	}
	c.procs[i], c.logs[i] = cmd, logf
	return nil
}

// Start (re)starts node i from its home.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	if err := c.start(i); err != nil {
		c.t.Fatalf("ledgertest: %v", err)
	}
}

// Kill kills node i with SIGKILL (kill -9) and reaps it.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	cmd := c.procs[i]
	if cmd == nil {
		c.t.Fatalf("ledgertest: node %d is not running", i)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	c.logs[i].Close()
	c.procs[i], c.logs[i] = nil, nil
}

// PIDs returns the process ids of the running nodes.
func (c *Cluster) PIDs() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for _, cmd := range c.procs {
		if cmd != nil {
			out = append(out, cmd.Process.Pid)
		}
	}
	return out
}

// Running reports whether node i's process runs.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[i] != nil
}

func (c *Cluster) stopAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, cmd := range c.procs {
		if cmd == nil {
			continue
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		c.logs[i].Close()
		c.procs[i], c.logs[i] = nil, nil
	}
}

// Height is node i's latest committed height (an error if it does not
// answer).
func (c *Cluster) Height(i int) (int64, error) {
	cl, err := ledgerclient.NewClient(c.RPC(i), ledgerclient.ClientOptions{Retries: 1, Backoff: 10 * time.Millisecond, RequestTimeout: 2 * time.Second})
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return cl.Height(ctx)
}

// WaitHeight waits until every running node is at height h or more.
func (c *Cluster) WaitHeight(t testing.TB, h int64, timeout time.Duration) {
	t.Helper()
	if err := c.waitAll(h, timeout); err != nil {
		t.Fatalf("ledgertest: %v\n%s", err, c.tails())
	}
}

// WaitNodeHeight waits until node i is at height h or more.
func (c *Cluster) WaitNodeHeight(t testing.TB, i int, h int64, timeout time.Duration) {
	t.Helper()
	if err := waitHeight(c.RPC(i), h, timeout); err != nil {
		t.Fatalf("ledgertest: node %d: %v\n%s", i, err, c.tails())
	}
}

func (c *Cluster) waitAll(h int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for i := range c.Homes {
		if !c.Running(i) {
			continue
		}
		if err := waitHeight(c.RPC(i), h, time.Until(deadline)); err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
	}
	return nil
}

func (c *Cluster) portConflict() bool {
	for i := range c.Homes {
		b, _ := os.ReadFile(filepath.Join(c.Dir, fmt.Sprintf("node%d.log", i)))
		if bytes.Contains(b, []byte("address already in use")) {
			return true
		}
	}
	return false
}

// tails returns the last lines of every node's log, for failure messages.
func (c *Cluster) tails() string {
	var sb strings.Builder
	for i := range c.Homes {
		b, _ := os.ReadFile(filepath.Join(c.Dir, fmt.Sprintf("node%d.log", i)))
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 8 {
			lines = lines[len(lines)-8:]
		}
		fmt.Fprintf(&sb, "--- node%d.log (last lines)\n%s\n", i, strings.Join(lines, "\n"))
	}
	return sb.String()
}
