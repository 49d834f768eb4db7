package gateway

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/internal/testbin"
	"github.com/edgeanchor/edgeanchor/ledger"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// TestRevokeFromCLI: `edgeanchor device revoke` (the real binary, signed
// with the regulator's key file) returns once the revocation committed;
// within 5 s of its return the gateway has cut the connected device off and
// refuses its next CONNECT. The test logs the measured times.
func TestRevokeFromCLI(t *testing.T) {
	t.Parallel()
	bin := testbin.Path(t, "./cmd/edgeanchor")
	env := ledgertest.StartMember(t, "site-a")
	victim := registerDevices(t, env, 1)[0]
	g := startGatewayProc(t, env, "")
	lost := make(chan time.Time, 1)
	vc, err := e2eConnect(g.mqtt, victim, func() { lost <- time.Now() })
	if err != nil {
		t.Fatalf("victim connect: %v", err)
	}
	defer vc.Disconnect(0)

	start := time.Now()
	out, err := exec.Command(bin, "device", "revoke", "--did", string(victim.DID()), "--reason", "stolen",
		"--key", filepath.Join(env.Node.Home, ledger.RegulatorKeyFile), "--rpc", env.Node.RPC).CombinedOutput()
	returned := time.Now()
	if err != nil {
		t.Fatalf("device revoke: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "result  committed (code 0)") || !strings.Contains(string(out), "height  ") {
		t.Fatalf("device revoke output lacks the height and result:\n%s", out)
	}
	var cut time.Time
	select {
	case cut = <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("revoked device still connected 5 s after `device revoke` returned")
	}
	if _, err := e2eConnect(g.mqtt, victim, nil); err == nil || !strings.Contains(strings.ToLower(err.Error()), "not authorized") {
		t.Fatalf("reconnect of the revoked device: %v, want not authorized", err)
	}
	refused := time.Now()
	if d := refused.Sub(returned); d > 5*time.Second {
		t.Fatalf("device refused %s after the command returned, want ≤ 5 s", d)
	}
	t.Logf("device revoke took %s; command return → disconnect %s, → refused CONNECT %s",
		returned.Sub(start).Round(time.Millisecond), cut.Sub(returned).Round(time.Millisecond), refused.Sub(returned).Round(time.Millisecond))
	// The queries show it.
	for _, q := range []struct {
		args []string
		want []string
	}{
		{[]string{"device", "show", string(victim.DID())}, []string{`"status": "revoked"`, `"revoke_reason": "stolen"`}},
		{[]string{"device", "list", "--gateway", string(env.Gateway.DID())}, []string{string(victim.DID()), "revoked"}},
		{[]string{"gateway", "list"}, []string{string(env.Gateway.DID()), "member"}},
	} {
		out, err := exec.Command(bin, append(q.args, "--rpc", env.Node.RPC)...).CombinedOutput()
		for _, w := range q.want {
			if err != nil || !strings.Contains(string(out), w) {
				t.Fatalf("edgeanchor %s: %v, want %q in\n%s", strings.Join(q.args, " "), err, w, out)
			}
		}
	}
	// A second revocation, signed offline and submitted from its file, is
	// refused by the ledger: exit 1 with its reason.
	txFile := filepath.Join(t.TempDir(), "revoke.json")
	out, err = exec.Command(bin, "device", "revoke", "--did", string(victim.DID()), "--reason", "again",
		"--key", filepath.Join(env.Node.Home, ledger.RegulatorKeyFile), "--sign-only", "--out", txFile).CombinedOutput()
	if err != nil {
		t.Fatalf("revoke --sign-only: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "ledger", "submit", txFile, "--rpc", env.Node.RPC)
	out, err = cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "device_revoked") {
		t.Fatalf("second revoke: exit %d (%v)\n%s", cmd.ProcessState.ExitCode(), err, out)
	}
}
