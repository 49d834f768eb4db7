package main

import (
	"bytes"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
)

func trustFreePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// TestLedgerExportTrust exports the trust of a real node home (genesis
// mode, no node needed) and of the running node over RPC (header mode).
func TestLedgerExportTrust(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	rpcPort := trustFreePort(t)
	devMustRun(t, dir, nil, "ledger", "init", "--home", home, "--chain-id", "trust-test",
		"--p2p-port", trustFreePort(t), "--rpc-port", rpcPort, "--prometheus-port", trustFreePort(t))

	genPath := filepath.Join(dir, "genesis-trust.json")
	out := devMustRun(t, dir, nil, "ledger", "export-trust", "--home", home, "--out", genPath)
	if !strings.Contains(out, "genesis mode") {
		t.Fatalf("output %q does not name the mode", out)
	}
	gen, err := anchor.ReadTrustFile(genPath)
	if err != nil {
		t.Fatal(err)
	}
	if gen.Mode != anchor.TrustModeGenesis || gen.ChainID != "trust-test" || gen.Validators.Size() != 1 {
		t.Fatalf("genesis trust = mode %s chain %s, %d validators", gen.Mode, gen.ChainID, gen.Validators.Size())
	}

	// Usage errors exit 2 and write nothing.
	bad := filepath.Join(dir, "bad.json")
	for _, args := range [][]string{
		{"ledger", "export-trust", "--out", bad},
		{"ledger", "export-trust", "--home", home, "--rpc", "http://127.0.0.1:1", "--out", bad},
		{"ledger", "export-trust", "--home", home},
		{"ledger", "export-trust", "--home", home, "--height", "3", "--out", bad},
	} {
		if _, _, code := devRun(t, dir, nil, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	// Not a home: exit 1.
	if _, errOut, code := devRun(t, dir, nil, "ledger", "export-trust", "--home", dir, "--out", bad); code != 1 || errOut == "" {
		t.Errorf("export-trust of a non-home: exit %d, stderr %q", code, errOut)
	}

	// Header mode from the running node.
	node := exec.Command(testbin.Path(t, "./cmd/edgeanchor"), "ledger", "start", "--home", home, "--log-level", "error")
	var nodeLog bytes.Buffer
	node.Stderr = &nodeLog
	node.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Process.Kill(); _ = node.Wait() })

	rpcPath := filepath.Join(dir, "trust.json")
	rpc := "http://127.0.0.1:" + rpcPort
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, errOut, code := devRun(t, dir, nil, "ledger", "export-trust", "--rpc", rpc, "--out", rpcPath)
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("export-trust --rpc: exit %d: %s\nnode: %s", code, errOut, nodeLog.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	tr, err := anchor.ReadTrustFile(rpcPath)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Mode != anchor.TrustModeHeader || tr.ChainID != "trust-test" || tr.Height < 1 || tr.Header == nil {
		t.Fatalf("rpc trust = mode %s chain %s height %d", tr.Mode, tr.ChainID, tr.Height)
	}
	if !bytes.Equal(tr.Validators.Hash(), gen.Validators.Hash()) {
		t.Fatal("validator set over RPC differs from the genesis set")
	}
}
