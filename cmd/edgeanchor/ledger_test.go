package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
	"github.com/edgeanchor/edgeanchor/ledger"
)

func ledgerFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func httpGet(url string) (string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

// TestLedgerCLI runs the real binary: init (with a genesis gateway), the
// refusals, testnet, and start until SIGTERM.
func TestLedgerCLI(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "ledger")
	gw, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	gwPub := filepath.Join(dir, "gw.pub.pem")
	if err := device.WritePublicKeyFile(gwPub, &gw.PublicKey); err != nil {
		t.Fatal(err)
	}
	gwDID := device.DIDFromPublicKey(&gw.PublicKey)
	rpcPort, promPort := ledgerFreePort(t), ledgerFreePort(t)
	out := devMustRun(t, dir, nil, "ledger", "init", "--home", home,
		"--p2p-port", fmt.Sprint(ledgerFreePort(t)), "--rpc-port", fmt.Sprint(rpcPort), "--prometheus-port", fmt.Sprint(promPort),
		"--gateway-pub", gwPub, "--gateway-site", "site-a", "--gateway-name", "Gateway A")
	adminKey := filepath.Join(home, ledger.AdminKeyFile)
	if !strings.Contains(out, adminKey) || !strings.Contains(out, string(gwDID)) {
		t.Fatalf("init output lacks the admin key path or the gateway:\n%s", out)
	}
	if fi, err := os.Stat(adminKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin key: %v %v", err, fi)
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
	if _, _, code := devRun(t, dir, nil, "ledger", "start", "--home", filepath.Join(dir, "nothing")); code != 1 {
		t.Errorf("start without a home: exit %d", code)
	}
	gw2, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	gw2Pub := filepath.Join(dir, "gw2.pub.pem")
	if err := device.WritePublicKeyFile(gw2Pub, &gw2.PublicKey); err != nil {
		t.Fatal(err)
	}
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
	for _, want := range []string{string(gwDID), string(device.DIDFromPublicKey(&gw2.PublicKey)), `"name": "A"`, `"name": "B"`, `"site": "site-b"`} {
		if !strings.Contains(string(genesis), want) {
			t.Errorf("testnet genesis lacks %s", want)
		}
	}

	// start runs until SIGTERM and stops cleanly.
	cmd := exec.Command(testbin.Path(t, "./cmd/edgeanchor"), "ledger", "start", "--home", home)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-done
		}
	})
	rpc := fmt.Sprintf("http://127.0.0.1:%d", rpcPort)
	var gwAnswer string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st, err := httpGet(rpc + "/status")
		if err == nil && !strings.Contains(st, `"latest_block_height":"0"`) {
			gwAnswer, err = httpGet(fmt.Sprintf(`%s/abci_query?path="/gateway/%s"`, rpc, gwDID))
			if err == nil && strings.Contains(gwAnswer, `"code":0`) {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(gwAnswer, `"code":0`) {
		t.Fatalf("genesis gateway not served by the started node: %q\nstderr: %s", gwAnswer, stderr.String())
	}
	metrics, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/metrics", promPort))
	if err != nil || !strings.Contains(metrics, "edgeanchor_ledger_registrations_total") || !strings.Contains(metrics, "cometbft_consensus_height") {
		t.Errorf("prometheus listener lacks application or CometBFT metrics: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		stopped = true
		if err != nil {
			t.Fatalf("ledger start after SIGTERM: %v\nstderr: %s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ledger start did not stop within 20 s of SIGTERM")
	}
	if !strings.Contains(stderr.String(), "ledger node stopped") {
		t.Errorf("no clean stop in the log:\n%s", stderr.String())
	}
}
