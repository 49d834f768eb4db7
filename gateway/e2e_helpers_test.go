package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
	"github.com/edgeanchor/edgeanchor/gateway/httpapi"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// End-to-end helpers: the gateway as a real OS process (bin/edgeanchor
// gateway) against a real single-validator ledger, spoken to by real MQTT
// clients and over its HTTP API.

// gwProc is a gateway process.
type gwProc struct {
	t          *testing.T
	bin        string
	dir        string
	data       string // data_dir
	config     string
	mqtt, http string
	admin      string // admin bearer token
	cmd        *exec.Cmd
	out        *testutil.SyncBuffer
	exited     chan struct{}
}

// startGatewayProc writes a config for a gateway whose key is gw (already a
// ledger member at site) and starts it.
func startGatewayProc(t *testing.T, env *ledgertest.Member, extra string) *gwProc {
	t.Helper()
	return startGatewayProcAt(t, env, "", extra)
}

// startGatewayProcAt is startGatewayProc with the data directory at
// dataDir ("": in the test's temporary directory).
func startGatewayProcAt(t *testing.T, env *ledgertest.Member, dataDir, extra string) *gwProc {
	t.Helper()
	dir := t.TempDir()
	if dataDir == "" {
		dataDir = filepath.Join(dir, "data")
	}
	key, err := device.MarshalPrivateKeyPEM(env.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "gateway.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	ports := testutil.FreePorts(t, 2) // distinct
	g := &gwProc{t: t, bin: testbin.Path(t, "./cmd/edgeanchor"), dir: dir, data: dataDir,
		mqtt: fmt.Sprintf("127.0.0.1:%d", ports[0]), http: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		admin: "e2e-admin-" + fmt.Sprint(time.Now().UnixNano())}
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte(g.admin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`data_dir: %s
key_path: %s
site: %s
name: e2e
ledger_rpc: %s
mqtt:
  tcp: %s
  ws: ""
  tls: ""
http:
  addr: %s
  admin_token_file: %s
batch_interval: 500ms
%s`, dataDir, filepath.Join(dir, "gateway.key"), env.Gateway.Site, env.Node.RPC,
		g.mqtt, g.http, filepath.Join(dir, "admin.token"), extra)
	g.config = filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(g.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	g.start()
	t.Cleanup(g.stop)
	return g
}

func (g *gwProc) dataDir() string { return g.data }

// start runs the process and waits until /readyz answers 200.
func (g *gwProc) start() {
	g.t.Helper()
	g.out = &testutil.SyncBuffer{}
	g.cmd = exec.Command(g.bin, "gateway", "--config", g.config)
	g.cmd.Stdout, g.cmd.Stderr = g.out, g.out
	if err := g.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	g.exited = make(chan struct{})
	go func(c *exec.Cmd, ch chan struct{}) { _ = c.Wait(); close(ch) }(g.cmd, g.exited)
	deadline := time.Now().Add(45 * time.Second)
	for {
		select {
		case <-g.exited:
			g.t.Fatalf("gateway exited at start:\n%s", g.out.String())
		default:
		}
		if code, _ := g.get("/readyz"); code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("gateway not ready in 45 s:\n%s", g.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to end.
func (g *gwProc) kill() {
	_ = g.cmd.Process.Signal(syscall.SIGKILL)
	<-g.exited
}

func (g *gwProc) stop() {
	select {
	case <-g.exited:
		return
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(15 * time.Second):
		g.kill()
	}
	if g.t.Failed() {
		out := g.out.String()
		if len(out) > 20000 {
			out = out[len(out)-20000:]
		}
		g.t.Logf("gateway output (tail):\n%s", out)
	}
}

func (g *gwProc) get(path string) (int, []byte) {
	resp, err := http.Get("http://" + g.http + path)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// metric returns the value of one sample line of /metrics (name with its
// labels exactly as exposed, e.g. `edgeanchor_auth_failures_total{reason="revoked"}`),
// or 0 if absent.
func (g *gwProc) metric(sample string) float64 {
	g.t.Helper()
	_, b := g.get("/metrics")
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return 0
}

// deviceRecords returns the device's stored records over the HTTP API,
// paging through /v1/devices/{did}/records.
func (g *gwProc) deviceRecords(did device.DID) []httpapi.RecordView {
	g.t.Helper()
	var out []httpapi.RecordView
	from := uint64(1)
	for range 10000 {
		code, b := g.get(fmt.Sprintf("/v1/devices/%s/records?from_seq=%d", did, from))
		if code != http.StatusOK {
			g.t.Fatalf("records of %s: HTTP %d %s", did, code, b)
		}
		var page httpapi.DeviceRecordsPage
		if err := json.Unmarshal(b, &page); err != nil {
			g.t.Fatalf("records of %s: %v: %s", did, err, b)
		}
		out = append(out, page.Records...)
		if page.NextFromSeq == 0 {
			return out
		}
		from = page.NextFromSeq
	}
	return out
}

// e2eConnect connects a paho (MQTT 3.1.1) client as dev with a fresh
// connect credential; onLost (if set) is called when the connection drops.
func e2eConnect(addr string, dev device.Signer, onLost func()) (paho.Client, error) {
	pw, err := credential.MakeConnect(dev, time.Now())
	if err != nil {
		return nil, err
	}
	return e2eConnectWith(addr, dev.DID(), pw, onLost)
}

// e2eConnectPassword connects as did with an explicit password.
func e2eConnectPassword(addr string, did device.DID, pw string) (paho.Client, error) {
	return e2eConnectWith(addr, did, pw, nil)
}

func e2eConnectWith(addr string, did device.DID, pw string, onLost func()) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(string(did)).
		SetUsername(string(did)).SetPassword(pw).SetCleanSession(true).SetAutoReconnect(false).SetProtocolVersion(4).
		SetConnectTimeout(10 * time.Second).SetWriteTimeout(10 * time.Second).SetOrderMatters(false).
		SetConnectionLostHandler(func(paho.Client, error) {
			if onLost != nil {
				onLost()
			}
		})
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(30 * time.Second) {
		return nil, fmt.Errorf("connect of %s timed out", did)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

// envelope returns a signed env.dust envelope of dev with seq.
func e2eEnvelope(t testing.TB, dev device.Signer, seq uint64) []byte {
	t.Helper()
	body, err := device.NewBody(dev.DID(), seq, time.Now(), device.KindDust,
		map[string]any{"pm25_ugm3": 10, "pm10_ugm3": 20, "noise_dba": 50})
	if err != nil {
		t.Fatal(err)
	}
	env, err := device.Seal(dev, body)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// goroutines is every goroutine's stack, for a test that timed out waiting
// for the gateway to stop.
func goroutines() string { return testutil.Goroutines() }

// waitFor is testutil.WaitUntil.
func waitFor(t testing.TB, d time.Duration, what string, f func() bool) {
	t.Helper()
	testutil.WaitUntil(t, d, what, f)
}

// gatherValue is testutil.GatherValue.
func gatherValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	return testutil.GatherValue(t, g, name)
}

// newSigner makes a fresh SM2 key.
func newSigner(t testing.TB) *device.KeySigner {
	t.Helper()
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return device.NewKeySigner(priv)
}
