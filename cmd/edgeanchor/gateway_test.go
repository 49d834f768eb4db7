package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/internal/testbin"
)

// lockedBuffer is a bytes.Buffer safe for a writing process and a reading test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func gwFreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

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

	httpAddr := gwFreeAddr(t)
	cmd := exec.Command(testbin.Path(t, "./cmd/edgeanchor"), "gateway", "--config", cfgPath,
		"--mqtt-tcp", "127.0.0.1:0", "--mqtt-ws", "", "--http", httpAddr, "--ledger-rpc", "http://"+gwFreeAddr(t))
	cmd.Dir = dir
	var stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no /healthz within 30 s; stderr:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
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
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("gateway did not stop within 20 s of SIGTERM")
	}
	log := stderr.String()
	for _, want := range []string{"# effective configuration", "site: site-x", "max_payload: 16384", "<redacted>", "gateway started", "gateway stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	if strings.Contains(log, hash) {
		t.Error("the password hash was printed")
	}
}
