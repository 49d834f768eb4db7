package gateway

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	pahopk "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
)

// protocolDocBlock returns the lines of the fenced block opened by fence in
// docs/protocol.md.
func protocolDocBlock(t *testing.T, fence string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "docs", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		switch {
		case !in && sc.Text() == fence:
			in = true
		case in && sc.Text() == "```":
			return strings.Join(lines, "\n") + "\n"
		case in:
			lines = append(lines, sc.Text())
		}
	}
	t.Fatalf("block %s not found in docs/protocol.md", fence)
	return ""
}

// TestProtocolDocConnectCredential runs the openssl-only credential recipe
// of docs/protocol.md and connects to a real gateway with what it printed.
func TestProtocolDocConnectCredential(t *testing.T) {
	script := protocolDocBlock(t, "```sh id=\"connect-credential\"")
	for _, must := range []string{"openssl pkeyutl -sign -rawin -digest sm3", "edgeanchor-connect-v1", "openssl rand -hex 16"} {
		if !strings.Contains(script, must) {
			t.Fatalf("the recipe lost %q", must)
		}
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("openssl 3 is required: %v", err)
	}
	dir := t.TempDir()
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := device.WritePrivateKeyFile(filepath.Join(dir, "device.pem"), priv); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("recipe failed: %v\n%s", err, out)
	}
	pw, err := os.ReadFile(filepath.Join(dir, "password.txt"))
	if err != nil {
		t.Fatal(err)
	}

	e := itStart(t, itConfig(t), nil, nil)
	d := &itDevice{key: device.NewKeySigner(priv), kind: "env"}
	d.did = d.key.DID()
	e.reg.Put(broker.DeviceInfo{DID: d.did, Pub: d.key.Public(), Kind: "env", Site: e.cfg.Site})
	c, receipts, _, err := e.v3(d, string(pw))
	if err != nil {
		t.Fatalf("connect with the openssl credential: %v", err)
	}
	env := d.envelope(t, 1)
	if tok := c.Publish(broker.UpTopic(d.did), 1, false, env); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	e.checkReceipt(waitMsg(t, receipts), d, 1, env)
	c.Disconnect(0)

	// The same password again is a replay.
	o := paho.NewClientOptions().AddBroker("tcp://" + e.addr()).SetClientID(string(d.did)).SetProtocolVersion(4).
		SetUsername(string(d.did)).SetPassword(string(pw)).SetAutoReconnect(false)
	tok := paho.NewClient(o).Connect()
	tok.WaitTimeout(10 * time.Second)
	if !errors.Is(tok.Error(), pahopk.ErrorRefusedNotAuthorised) {
		t.Fatalf("replayed openssl credential: %v", tok.Error())
	}
}
