package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/ledger"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// TestKeyRotationFromCLI runs docs/operations.md "Rotating a gateway key"
// with the real binary: keygen, the committee's add-gateway --succeeds,
// the gateway restarted with the new key on its data directory, then
// remove-gateway of the old key. The device connected before the rotation
// is served after it without enrolling again; the old key's anchor is
// refused once succeeded (its batch is re-signed under the new key); a
// record anchored before, one re-signed across the switch and one received
// after all verify with `edgeanchor verify` and the regulator's trust file,
// and `edgeanchor audit` of the new key finds nothing, also after the old
// key is removed.
func TestKeyRotationFromCLI(t *testing.T) {
	t.Parallel()
	bin := testbin.Path(t, "./cmd/edgeanchor")
	env := ledgertest.StartMember(t, "site-a")
	dev := registerDevices(t, env, 1)[0]
	oldDID := env.Gateway.DID()
	committee := filepath.Join(env.Node.Home, ledger.CommitteeKeyFile)
	dir := t.TempDir()
	run := func(want int, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		out, err := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != want {
			t.Fatalf("edgeanchor %s: exit %d (%v), want %d\n%s", strings.Join(args, " "), code, err, want, out)
		}
		return string(out)
	}
	g := startGatewayProc(t, env, "")
	seq := uint64(0)
	send := func(g *gwProc) uint64 {
		t.Helper()
		c, err := e2eConnect(g.mqtt, dev, nil)
		if err != nil {
			t.Fatalf("device connect: %v", err)
		}
		defer c.Disconnect(0)
		seq++
		if tok := c.Publish("ea/v1/dev/"+string(dev.DID())+"/up", 1, false, e2eEnvelope(t, dev, seq)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish seq %d: %v", seq, tok.Error())
		}
		return seq // one device: gseq = seq
	}
	bundle := func(g *gwProc, gseq uint64) string {
		t.Helper()
		var body []byte
		testutil.WaitFor(t, 60*time.Second, fmt.Sprintf("proof of gseq %d", gseq), func() error {
			code, b := g.get(fmt.Sprintf("/v1/records/%d/proof", gseq))
			if code != http.StatusOK {
				return fmt.Errorf("HTTP %d %s", code, b)
			}
			body = b
			return nil
		})
		p := filepath.Join(dir, fmt.Sprintf("bundle-%d-%d.json", gseq, time.Now().UnixNano()))
		if err := os.WriteFile(p, body, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	trust := filepath.Join(dir, "trust.json")
	run(0, "ledger", "export-trust", "--rpc", env.Node.RPC, "--out", trust)
	verify := func(p, wantGateway string) {
		t.Helper()
		out := run(0, "verify", p, "--trust", trust)
		if !strings.Contains(out, "OK: record") || !strings.Contains(out, "of gateway "+wantGateway) {
			t.Fatalf("verify %s: not OK for gateway %s:\n%s", p, wantGateway, out)
		}
	}
	audit := func(g *gwProc, did device.DID) {
		t.Helper()
		out := run(0, "audit", "--gateway", string(did), "--ledger", env.Node.RPC, "--api", "http://"+g.http)
		if !strings.Contains(out, "✓ no findings") {
			t.Fatalf("audit of %s:\n%s", did, out)
		}
	}

	// Before: one record anchored under the old key.
	before := bundle(g, send(g))

	// The new key, admitted by the committee as the old one's successor.
	newKey := filepath.Join(dir, "gateway-2.pem")
	kg := strings.Fields(run(0, "keygen", "--out", newKey)) // "wrote …" on stderr, the DID on stdout
	newDID := device.DID(kg[len(kg)-1])
	if _, err := device.ParseDID(string(newDID)); err != nil {
		t.Fatalf("keygen printed %q: %v", kg, err)
	}
	out := run(0, "consortium", "propose", "add-gateway", "--pub", strings.TrimSuffix(newKey, ".pem")+".pub.pem",
		"--site", "site-a", "--succeeds", string(oldDID), "--key", committee, "--rpc", env.Node.RPC)
	if !strings.Contains(out, "committed (code 0)") {
		t.Fatalf("succession proposal:\n%s", out)
	}
	if out := run(0, "gateway", "list", "--rpc", env.Node.RPC); !strings.Contains(out, "succeeded by "+string(newDID)) || !strings.Contains(out, "succeeds "+string(oldDID)) {
		t.Fatalf("gateway list does not show the succession:\n%s", out)
	}
	// The same succession again is refused by the ledger: exit 1.
	run(1, "consortium", "propose", "add-gateway", "--pub", strings.TrimSuffix(newKey, ".pem")+".pub.pem",
		"--site", "site-a", "--succeeds", string(oldDID), "--key", committee, "--rpc", env.Node.RPC)

	// The old gateway, still running, takes one more record; the ledger
	// refuses its batch (the old key is succeeded).
	across := send(g)
	testutil.WaitFor(t, 60*time.Second, "the old key's anchor refused", func() error {
		if !strings.Contains(g.out.String(), "succeeded by "+string(newDID)) {
			return fmt.Errorf("no refusal in the gateway's log yet")
		}
		return nil
	})
	g.stop()

	// The gateway on the same data directory with the new key.
	priv, err := device.ReadPrivateKeyFile(newKey)
	if err != nil {
		t.Fatal(err)
	}
	env.Key = priv
	g2 := startGatewayProcAt(t, env, g.dataDir(), "")
	after := send(g2) // connects with its own key: no enrollment
	acrossBundle, afterBundle := bundle(g2, across), bundle(g2, after)
	verify(before, string(oldDID))
	verify(acrossBundle, string(newDID)) // received by the old key, batched under the new one
	verify(afterBundle, string(newDID))
	for _, p := range []string{acrossBundle, afterBundle} {
		b, err := evidence.ReadBundleFile(p)
		if err != nil || len(b.Line) != 1 || b.Line[0].Gateway.DID != oldDID {
			t.Fatalf("bundle %s: key line %+v (%v), want one link to %s", p, b.Line, err, oldDID)
		}
	}
	checkLineRefusals(t, trust, acrossBundle, afterBundle)
	audit(g2, newDID)
	if out := run(0, "device", "list", "--gateway", string(newDID), "--rpc", env.Node.RPC); !strings.Contains(out, string(dev.DID())) {
		t.Fatalf("device list of the new key lacks the device:\n%s", out)
	}

	// The old key removed: nothing moves.
	run(0, "consortium", "propose", "remove-gateway", "--did", string(oldDID), "--key", committee, "--rpc", env.Node.RPC)
	last := bundle(g2, send(g2))
	verify(before, string(oldDID))
	verify(acrossBundle, string(newDID))
	verify(last, string(newDID))
	audit(g2, newDID)
	if !strings.Contains(g2.out.String(), "unanchored batches re-signed under the new key") {
		t.Fatalf("the new gateway did not re-sign the old key's tail")
	}

	// Retention after the rotation: the archive holds the batches the old
	// key signed (batch 1), under the old key's ledger record, and stops
	// before the first batch the new key signed; its bundles verify as
	// the old key's.
	g2.stop()
	arch := filepath.Join(dir, "old-key.ea")
	out = run(0, "gateway", "archive", "--data-dir", g2.dataDir(), "--ledger", env.Node.RPC, "--trust", trust,
		"--out", arch, "--before", time.Now().UTC().Format(time.RFC3339Nano))
	if !strings.Contains(out, "archived gseq 1..1 ") || !strings.Contains(out, "batches 1..1,") {
		t.Fatalf("archive after the rotation:\n%s", out)
	}
	archived := filepath.Join(dir, "archived-1.json")
	run(0, "archive", "proof", "--archive", arch, "--gseq", "1", "--out", archived)
	verify(archived, string(oldDID))
}

// checkLineRefusals: a bundle across a key rotation verifies only with its
// key line intact; each change to a link is refused at the step it breaks.
func checkLineRefusals(t *testing.T, trustPath, acrossPath, afterPath string) {
	t.Helper()
	trust, err := evidence.ReadTrustFile(trustPath)
	if err != nil {
		t.Fatal(err)
	}
	load := func(p string) *evidence.Bundle {
		b, err := evidence.ReadBundleFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	stranger, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	strangerDER, _ := device.MarshalPublicKeyDER(&stranger.PublicKey)
	flip := func(b []byte) []byte { c := append([]byte(nil), b...); c[len(c)/2] ^= 1; return c }
	for name, c := range map[string]struct {
		path   string
		change func(b *evidence.Bundle)
		step   string
		says   string
	}{
		"after: no line":                {afterPath, func(b *evidence.Bundle) { b.Line = nil }, evidence.StepDeviceKey, "not by the bundle's gateway"},
		"across: no line":               {acrossPath, func(b *evidence.Bundle) { b.Line = nil }, evidence.StepDeviceKey, "not by the bundle's gateway"},
		"another predecessor key":       {afterPath, func(b *evidence.Bundle) { b.Line[0].Gateway.Pub = strangerDER }, evidence.StepDeviceKey, "predecessor key is"},
		"predecessor's header changed":  {afterPath, func(b *evidence.Bundle) { b.Line[0].Last = flip(b.Line[0].Last) }, evidence.StepDeviceKey, "key line link 1"},
		"successor's signature changed": {afterPath, func(b *evidence.Bundle) { b.Line[0].Next.Sig = flip(b.Line[0].Next.Sig) }, evidence.StepDeviceKey, "key line link 1"},
		"another anchor proof":          {afterPath, func(b *evidence.Bundle) { b.Line[0].Anchor = b.Anchor }, evidence.StepDeviceKey, "not the successor's first header"},
		"anchor proof dropped":          {afterPath, func(b *evidence.Bundle) { b.Line[0].Anchor = nil }, evidence.StepDeviceKey, "no anchor proof"},
	} {
		b := load(c.path)
		if _, err := b.Verify(trust, nil); err != nil {
			t.Fatalf("%s: the unchanged bundle: %v", name, err)
		}
		c.change(b)
		_, err := b.Verify(trust, nil)
		var se *evidence.StepError
		if !errors.As(err, &se) || se.Step != c.step || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want a failure at %q saying %q", name, err, c.step, c.says)
		}
	}
}

// TestKeyRotationStartedEarly: a gateway restarted with its new key before
// the committee admitted it as the successor serves its devices but anchors
// nothing: the old key's unanchored batch waits, not re-signed; once the
// succession executes, it is re-signed under the new key and anchored, and
// both records' bundles verify.
func TestKeyRotationStartedEarly(t *testing.T) {
	t.Parallel()
	bin := testbin.Path(t, "./cmd/edgeanchor")
	env := ledgertest.StartMember(t, "site-a")
	dev := registerDevices(t, env, 1)[0]
	oldDID := env.Gateway.DID()
	dir := t.TempDir()
	publish := func(g *gwProc, seq uint64) {
		t.Helper()
		c, err := e2eConnect(g.mqtt, dev, nil)
		if err != nil {
			t.Fatalf("device connect: %v", err)
		}
		defer c.Disconnect(0)
		if tok := c.Publish("ea/v1/dev/"+string(dev.DID())+"/up", 1, false, e2eEnvelope(t, dev, seq)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish seq %d: %v", seq, tok.Error())
		}
	}
	g := startGatewayProc(t, env, "")
	publish(g, 1) // anchored under the old key (a succession needs one)
	testutil.WaitFor(t, 60*time.Second, "gseq 1 anchored", func() error {
		if code, _ := g.get("/v1/records/1/proof"); code != http.StatusOK {
			return fmt.Errorf("HTTP %d", code)
		}
		return nil
	})
	// The ledger down: the old key's next batch is cut and signed but stays
	// in the outbox.
	env.Node.Stop()
	publish(g, 2)
	testutil.WaitFor(t, 60*time.Second, "the old key's batch in the outbox", func() error {
		if d := g.metric("edgeanchor_outbox_depth"); d < 1 {
			return fmt.Errorf("outbox depth %v", d)
		}
		return nil
	})
	g.stop()
	env.Node.Restart()

	newKey := filepath.Join(dir, "gateway-2.pem")
	if out, err := exec.Command(bin, "keygen", "--out", newKey).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	priv, err := device.ReadPrivateKeyFile(newKey)
	if err != nil {
		t.Fatal(err)
	}
	env.Key = priv
	g2 := startGatewayProcAt(t, env, g.dataDir(), "")
	// The record received under the old key is batched (signed by the
	// new key) but the ledger does not know the key: nothing anchors.
	testutil.WaitFor(t, 60*time.Second, "the anchorer waiting for the succession", func() error {
		if !strings.Contains(g2.out.String(), "anchoring waits for the key rotation") {
			return errors.New("no wait logged yet")
		}
		return nil
	})
	if strings.Contains(g2.out.String(), "re-signed under the new key") {
		t.Fatal("the old key's batch was re-signed before the ledger admitted the new key")
	}
	publish(g2, 3) // the device is served meanwhile

	out, err := exec.Command(bin, "consortium", "propose", "add-gateway", "--pub", strings.TrimSuffix(newKey, ".pem")+".pub.pem",
		"--site", "site-a", "--succeeds", string(oldDID), "--key", filepath.Join(env.Node.Home, ledger.CommitteeKeyFile),
		"--rpc", env.Node.RPC).CombinedOutput()
	if err != nil {
		t.Fatalf("succession: %v\n%s", err, out)
	}
	trust := filepath.Join(dir, "trust.json")
	if out, err := exec.Command(bin, "ledger", "export-trust", "--rpc", env.Node.RPC, "--out", trust).CombinedOutput(); err != nil {
		t.Fatalf("export-trust: %v\n%s", err, out)
	}
	for _, gseq := range []uint64{1, 2, 3} {
		var body []byte
		testutil.WaitFor(t, 90*time.Second, fmt.Sprintf("proof of gseq %d after the succession", gseq), func() error {
			code, b := g2.get(fmt.Sprintf("/v1/records/%d/proof", gseq))
			if code != http.StatusOK {
				return fmt.Errorf("HTTP %d", code)
			}
			body = b
			return nil
		})
		p := filepath.Join(dir, fmt.Sprintf("bundle-%d.json", gseq))
		if err := os.WriteFile(p, body, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, "verify", p, "--trust", trust).CombinedOutput(); err != nil || !strings.Contains(string(out), "OK: record") {
			t.Fatalf("verify gseq %d: %v\n%s", gseq, err, out)
		}
	}
}
