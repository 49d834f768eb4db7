package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/ledger"
)

// newPublicKeyFile writes the public key of a new SM2 key pair to path (PEM)
// and returns its DID.
func newPublicKeyFile(t *testing.T, path string) device.DID {
	t.Helper()
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := device.WritePublicKeyFile(path, &priv.PublicKey); err != nil {
		t.Fatal(err)
	}
	return device.DIDFromPublicKey(&priv.PublicKey)
}

// TestLedgerCLI runs the real binary: init (with a genesis gateway), the
// refusals, testnet, and start until SIGTERM.
func TestLedgerCLI(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "ledger")
	gwPub := filepath.Join(dir, "gw.pub.pem")
	gwDID := newPublicKeyFile(t, gwPub)
	ports := testutil.FreePorts(t, 3)
	p2pPort, rpcPort, promPort := ports[0], ports[1], ports[2]
	out := devMustRun(t, dir, nil, "ledger", "init", "--home", home,
		"--p2p-port", fmt.Sprint(p2pPort), "--rpc-port", fmt.Sprint(rpcPort), "--prometheus-port", fmt.Sprint(promPort),
		"--gateway-pub", gwPub, "--gateway-site", "site-a", "--gateway-name", "Gateway A")
	committeeKey := filepath.Join(home, ledger.CommitteeKeyFile)
	if !strings.Contains(out, committeeKey) || !strings.Contains(out, string(gwDID)) {
		t.Fatalf("init output lacks the committee key path or the gateway:\n%s", out)
	}
	if fi, err := os.Stat(committeeKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("committee key: %v %v", err, fi)
	}

	// Refusals.
	if _, errOut, code := devRun(t, dir, nil, "ledger", "init", "--home", home); code != 1 || !strings.Contains(errOut, "already") {
		t.Errorf("init over a home: exit %d %s", code, errOut)
	}
	if _, _, code := devRun(t, dir, nil, "ledger", "init"); code != 2 {
		t.Errorf("init without --home: exit %d", code)
	}
	if _, _, code := devRun(t, dir, nil, "ledger", "init", "--home", filepath.Join(dir, "x"), "--gateway-pub", gwPub); code != 2 {
		t.Errorf("--gateway-pub without --gateway-site: exit %d", code)
	}
	if _, _, code := devRun(t, dir, nil, "ledger", "start", "--home", filepath.Join(dir, "nothing")); code != 2 {
		t.Errorf("start without a home (a missing file): exit %d, want 2", code)
	}
	gw2Pub := filepath.Join(dir, "gw2.pub.pem")
	gw2DID := newPublicKeyFile(t, gw2Pub)
	out = devMustRun(t, dir, nil, "ledger", "testnet", "--validators", "3", "--out", filepath.Join(dir, "net"), "--base-port", "41000",
		"--gateway-pub", gwPub, "--gateway-site", "site-a", "--gateway-name", "A", "--gateway-pub", gw2Pub, "--gateway-site", "site-b", "--gateway-name", "B")
	for k := range 3 {
		if !strings.Contains(out, filepath.Join(dir, "net", fmt.Sprintf("node%d", k))) {
			t.Errorf("testnet output lacks node%d:\n%s", k, out)
		}
	}
	genesis, err := os.ReadFile(filepath.Join(dir, "net", "node2", "config", "genesis.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{string(gwDID), string(gw2DID), `"name": "A"`, `"name": "B"`, `"site": "site-b"`} {
		if !strings.Contains(string(genesis), want) {
			t.Errorf("testnet genesis lacks %s", want)
		}
	}

	// start runs until SIGTERM and stops cleanly.
	node := testutil.StartProcess(t, exec.Command(testbin.Path(t, "./cmd/edgeanchor"), "ledger", "start", "--home", home))
	rpc := fmt.Sprintf("http://127.0.0.1:%d", rpcPort)
	var gwAnswer string
	_ = testutil.Poll(30*time.Second, func() error {
		st, err := testutil.HTTPGet(rpc + "/status")
		if err != nil || strings.Contains(string(st), `"latest_block_height":"0"`) {
			return errors.New("no block yet")
		}
		b, err := testutil.HTTPGet(fmt.Sprintf(`%s/abci_query?path="/gateway/%s"`, rpc, gwDID))
		if gwAnswer = string(b); err != nil || !strings.Contains(gwAnswer, `"code":0`) {
			return errors.New("gateway not served yet")
		}
		return nil
	})
	if !strings.Contains(gwAnswer, `"code":0`) {
		t.Fatalf("genesis gateway not served by the started node: %q\nstderr: %s", gwAnswer, node.Output.String())
	}
	metrics, err := testutil.HTTPGet(fmt.Sprintf("http://127.0.0.1:%d/metrics", promPort))
	if err != nil || !strings.Contains(string(metrics), "edgeanchor_ledger_registrations_total") || !strings.Contains(string(metrics), "cometbft_consensus_height") {
		t.Errorf("prometheus listener lacks application or CometBFT metrics: %v", err)
	}
	// A second start of the running home says so, with the running pid.
	_, errOut, code := devRun(t, dir, nil, "ledger", "start", "--home", home)
	if want := fmt.Sprintf("already running: %s (pid %d)", home, node.Cmd.Process.Pid); code != 2 || !strings.Contains(errOut, want) {
		t.Errorf("second ledger start: exit %d, stderr %q; want 2 and %q", code, errOut, want)
	}
	if err := node.Stop(syscall.SIGTERM, 20*time.Second); err != nil {
		t.Fatalf("ledger start after SIGTERM: %v\nstderr: %s", err, node.Output.String())
	}
	if !strings.Contains(node.Output.String(), "ledger node stopped") {
		t.Errorf("no clean stop in the log:\n%s", node.Output.String())
	}
}
