package main

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/internal/testbin"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

// TestGatewayCommand: `gateway init` writes a 0600 key and a config that
// `gateway --config` runs with flag overrides; the effective config is
// printed with secrets redacted, /healthz answers, /readyz names the
// unreachable ledger, and SIGTERM stops it cleanly.
func TestGatewayCommand(t *testing.T) {
	dir := t.TempDir()
	out := devMustRun(t, dir, nil, "gateway", "init", "--dir", "gw", "--site", "site-x")
	if !strings.Contains(out, "did: did:ea:") || !strings.Contains(out, "pub: ") {
		t.Fatalf("init output: %s", out)
	}
	st, err := os.Stat(filepath.Join(dir, "gw", "gateway.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("gateway.key: %v, mode %v", err, st.Mode())
	}
	if _, _, code := devRun(t, dir, nil, "gateway", "init", "--dir", "gw"); code == 0 {
		t.Fatal("init over an existing config succeeded")
	}
	// Add an application account, to check that its hash is not printed.
	hash := strings.TrimSpace(devMustRun(t, dir, []byte("correct horse\n"), "gateway", "passwd"))
	cfgPath := filepath.Join(dir, "gw", "gateway.yaml")
	f, err := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString("accounts:\n  - username: dash\n    password_hash: \"" + hash + "\"\n    topics: [\"ea/v1/site/site-x/records/#\"]\n")
	f.Close()
	if err != nil {
		t.Fatal(err)
	}

	// A bad flag value is a usage error naming the field.
	_, errOut, code := devRun(t, dir, nil, "gateway", "--config", cfgPath, "--max-payload", "1")
	if code != 2 || !strings.Contains(errOut, "limits.max_payload") {
		t.Fatalf("bad flag: exit %d, stderr %s", code, errOut)
	}

	httpAddr := testutil.FreeAddr(t)
	cmd := exec.Command(testbin.Path(t, "./cmd/edgeanchor"), "gateway", "--config", cfgPath,
		"--mqtt-tcp", "127.0.0.1:0", "--mqtt-ws", "", "--http", httpAddr, "--ledger-rpc", "http://"+testutil.FreeAddr(t))
	cmd.Dir = dir
	cmd.Stdout = io.Discard
	gw := testutil.StartProcess(t, cmd)
	if err := testutil.WaitHTTP(30*time.Second, "http://"+httpAddr+"/healthz"); err != nil {
		t.Fatalf("no /healthz: %v; stderr:\n%s", err, gw.Output.String())
	}
	resp, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"ledger"`) {
		t.Fatalf("/readyz without a ledger: %d %s", resp.StatusCode, body)
	}
	if err := gw.Stop(syscall.SIGTERM, 20*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, gw.Output.String())
	}
	log := gw.Output.String()
	for _, want := range []string{"# effective configuration", "site: site-x", "max_payload: 16384", "<redacted>", "gateway started", "gateway stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	if strings.Contains(log, hash) {
		t.Error("the password hash was printed")
	}

	// The gateway marked its data directory: `token create --data-dir`
	// accepts it and takes the site from it.
	devMustRun(t, dir, nil, "token", "create", "--data-dir", filepath.Join("gw", "data"), "--kind", "env")
	list := devMustRun(t, dir, nil, "token", "list", "--data-dir", filepath.Join("gw", "data"))
	if !strings.Contains(list, `"site": "site-x"`) {
		t.Errorf("token made with --data-dir of a gateway of site-x and no --site: %s", list)
	}
}
