package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

// TestLedgerExportTrust exports the trust of a real node home (genesis
// mode, no node needed) and of the running node over RPC (header mode).
func TestLedgerExportTrust(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	ports := testutil.FreePorts(t, 3)
	rpcPort := strconv.Itoa(ports[0])
	devMustRun(t, dir, nil, "ledger", "init", "--home", home, "--chain-id", "trust-test",
		"--p2p-port", strconv.Itoa(ports[1]), "--rpc-port", rpcPort, "--prometheus-port", strconv.Itoa(ports[2]))

	genPath := filepath.Join(dir, "genesis-trust.json")
	out := devMustRun(t, dir, nil, "ledger", "export-trust", "--home", home, "--out", genPath)
	if !strings.Contains(out, "genesis mode") {
		t.Fatalf("output %q does not name the mode", out)
	}
	gen, err := evidence.ReadTrustFile(genPath)
	if err != nil {
		t.Fatal(err)
	}
	if gen.Mode != evidence.TrustModeGenesis || gen.ChainID != "trust-test" || gen.Validators.Size() != 1 {
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
	// Not a home (no config/genesis.json to read): an I/O error, exit 2.
	if _, errOut, code := devRun(t, dir, nil, "ledger", "export-trust", "--home", dir, "--out", bad); code != 2 || errOut == "" {
		t.Errorf("export-trust of a non-home: exit %d, stderr %q", code, errOut)
	}

	// Header mode from the running node.
	node := testutil.StartProcess(t, exec.Command(testbin.Path(t, "./cmd/edgeanchor"), "ledger", "start", "--home", home, "--log-level", "error"))

	rpcPath := filepath.Join(dir, "trust.json")
	rpc := "http://127.0.0.1:" + rpcPort
	if err := testutil.Poll(30*time.Second, func() error {
		if _, errOut, code := devRun(t, dir, nil, "ledger", "export-trust", "--rpc", rpc, "--out", rpcPath); code != 0 {
			return fmt.Errorf("exit %d: %s", code, errOut)
		}
		return nil
	}); err != nil {
		t.Fatalf("export-trust --rpc: %v\nnode: %s", err, node.Output.String())
	}
	tr, err := evidence.ReadTrustFile(rpcPath)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Mode != evidence.TrustModeHeader || tr.ChainID != "trust-test" || tr.Height < 1 || tr.Header == nil {
		t.Fatalf("rpc trust = mode %s chain %s height %d", tr.Mode, tr.ChainID, tr.Height)
	}
	if !bytes.Equal(tr.Validators.Hash(), gen.Validators.Hash()) {
		t.Fatal("validator set over RPC differs from the genesis set")
	}
}
