package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
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

	paho5 "github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/refusal"
	itest "github.com/edgeanchor/edgeanchor/internal/testutil"
)

// fdHelperEnv, when set, makes TestFDExhaustionHelper run as the child
// process of TestFDExhaustion: a real gateway under a low RLIMIT_NOFILE.
const fdHelperEnv = "EDGEANCHOR_FD_HELPER_DIR"

// fdHelperLimit is the child's RLIMIT_NOFILE.
const fdHelperLimit = 256

// TestFDExhaustionHelper is the child process of TestFDExhaustion; it does
// nothing unless started by it. It lowers RLIMIT_NOFILE, runs a real
// gateway with the device whose public key is in the given directory,
// prints "ready {mqtt} {http}", then obeys stdin: "hog" opens files until
// the process is out of descriptors ("hogged N"), "free" closes them
// ("freed"); end of input stops it.
func TestFDExhaustionHelper(t *testing.T) {
	dir := os.Getenv(fdHelperEnv)
	if dir == "" {
		return // not started by TestFDExhaustion
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: fdHelperLimit, Max: fdHelperLimit}); err != nil {
		t.Fatal(err)
	}
	pub, err := device.ReadPublicKeyFile(filepath.Join(dir, "device.pub"))
	if err != nil {
		t.Fatal(err)
	}
	reg := broker.NewStaticRegistry()
	cfg := itConfig(t)
	cfg.MQTT.FDHeadroom = 64
	reg.Put(broker.DeviceInfo{DID: device.DIDFromPublicKey(pub), Pub: pub, Kind: "env", Site: cfg.Site})
	e := itStart(t, cfg, nil, reg)
	fmt.Printf("ready %s %s %d\n", e.addr(), e.g.HTTPAddr(), e.g.Broker().ConnectionLimit())
	var hog []*os.File
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "hog":
			for len(hog) < 2*fdHelperLimit {
				f, err := os.Open(os.DevNull)
				if err != nil {
					if !errors.Is(err, syscall.EMFILE) {
						t.Errorf("hog: %v", err)
					}
					break
				}
				hog = append(hog, f)
			}
			fmt.Printf("hogged %d\n", len(hog))
		case "free":
			for _, f := range hog {
				_ = f.Close()
			}
			hog = nil
			fmt.Println("freed")
		}
	}
}

// fdChild drives the helper process.
type fdChild struct {
	t          *testing.T
	in         io.Writer
	out        *bufio.Scanner
	mqtt, http string
}

func (c *fdChild) say(cmd, wantPrefix string) string {
	c.t.Helper()
	if _, err := fmt.Fprintln(c.in, cmd); err != nil {
		c.t.Fatal(err)
	}
	return c.expect(wantPrefix)
}

func (c *fdChild) expect(prefix string) string {
	c.t.Helper()
	for c.out.Scan() {
		if line := c.out.Text(); strings.HasPrefix(line, prefix) {
			return line
		}
	}
	c.t.Fatalf("child ended before %q: %v", prefix, c.out.Err())
	return ""
}

// TestFDExhaustion: a gateway whose process runs out of file descriptors
// keeps its MQTT listener: /readyz says the listener is not accepting while
// it is out, and once descriptors are free again a device connects and
// publishes without a restart.
func TestFDExhaustion(t *testing.T) {
	dir := t.TempDir()
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := device.WritePublicKeyFile(filepath.Join(dir, "device.pub"), &priv.PublicKey); err != nil {
		t.Fatal(err)
	}
	d := &itDevice{key: device.NewKeySigner(priv), kind: "env"}
	d.did = d.key.DID()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestFDExhaustionHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), fdHelperEnv+"="+dir)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = in.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper process: %v", err)
		}
	}()
	c := &fdChild{t: t, in: in, out: bufio.NewScanner(out)}
	var limit int
	if _, err := fmt.Sscanf(c.expect("ready "), "ready %s %s %d", &c.mqtt, &c.http, &limit); err != nil {
		t.Fatal(err)
	}
	// The connection limit sits below the lowered descriptor limit.
	if limit < 1 || limit > fdHelperLimit-64 {
		t.Fatalf("connection limit %d, want within [1, %d] under RLIMIT_NOFILE %d", limit, fdHelperLimit-64, fdHelperLimit)
	}
	mqttAddr := c.mqtt
	publishOK := func(seq uint64) {
		t.Helper()
		conn, err := net.DialTimeout("tcp", mqttAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cl := paho5.NewClient(paho5.ClientConfig{Conn: conn})
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		ca, err := cl.Connect(cctx, &paho5.Connect{ClientID: string(d.did), Username: string(d.did), UsernameFlag: true,
			Password: []byte(d.credential(t)), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
		if err != nil {
			_ = conn.Close()
			t.Fatalf("connect for seq %d: %v %+v", seq, err, ca)
		}
		defer func() { _ = cl.Disconnect(&paho5.Disconnect{}) }()
		if code, err := publish5(cl, d, "", d.envelope(t, seq)); err != nil || code != 0 {
			t.Fatalf("publish seq %d: code %#x %v", seq, code, err)
		}
	}
	// One kept-alive HTTP connection: while the child is out of
	// descriptors it cannot accept a new one, but answers on this.
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}}
	readyz := func() (int, string, error) {
		resp, err := hc.Get("http://" + c.http + "/readyz")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	if code, body, err := readyz(); err != nil || code != http.StatusOK {
		t.Fatalf("/readyz before: %d %s %v", code, body, err)
	}
	publishOK(1)

	hogged := c.say("hog", "hogged ")
	t.Logf("child: %s", hogged)
	// A device knocks while the child is out of descriptors: the kernel
	// queues the connection, accept fails with EMFILE and is retried.
	knock, err := net.Dial("tcp", mqttAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer knock.Close()
	var notReady string
	itest.WaitUntil(t, 20*time.Second, "/readyz reports the MQTT listener not accepting", func() bool {
		code, body, err := readyz()
		if err == nil && code == http.StatusServiceUnavailable && strings.Contains(body, "not accepting") {
			notReady = body
			return true
		}
		return false
	})
	t.Logf("/readyz while out of descriptors: %s", strings.TrimSpace(notReady))
	if !strings.Contains(notReady, "too many open files") {
		t.Errorf("/readyz does not say why: %s", notReady)
	}

	c.say("free", "freed")
	// The queued connection is accepted now: it gets its CONNACK.
	if _, err := knock.Write(connectPacket(t, d, d.credential(t))); err != nil {
		t.Fatal(err)
	}
	_ = knock.SetReadDeadline(time.Now().Add(20 * time.Second))
	var ack [4]byte
	if _, err := io.ReadFull(knock, ack[:]); err != nil || ack[0] != packets.Connack<<4 || ack[3] != 0 {
		t.Fatalf("queued connection after the descriptors were freed: %x %v", ack, err)
	}
	_ = knock.Close()
	publishOK(2)
	itest.WaitUntil(t, 20*time.Second, "/readyz ok again", func() bool {
		code, _, err := readyz()
		return err == nil && code == http.StatusOK
	})
	resp, err := hc.Get("http://" + c.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `edgeanchor_mqtt_accept_errors_total{error="emfile",listener="tcp"}`) {
		t.Errorf("accept errors not counted:\n%s", grepLines(string(metrics), "accept_errors"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// connectPacket encodes an MQTT 5 CONNECT of d with password pw.
func connectPacket(t testing.TB, d *itDevice, pw string) []byte {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30,
			ClientIdentifier: string(d.did), UsernameFlag: true, Username: []byte(d.did), PasswordFlag: true, Password: []byte(pw)}}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestFutureTimestamp: a record dated beyond future_tolerance ahead of the
// gateway's clock is refused as future_timestamp and stores nothing; old
// timestamps (a spool) and a small skew are accepted.
func TestFutureTimestamp(t *testing.T) {
	cfg := itConfig(t)
	cfg.FutureTolerance = 5 * time.Minute
	e := itStart(t, cfg, nil, nil)
	d := e.newDevice("env")
	c, _, _, err := e.v5(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	at := func(seq uint64, ts time.Time) []byte {
		body, err := device.NewBody(d.did, seq, ts, device.KindDust, sampleData(device.KindDust))
		if err != nil {
			t.Fatal(err)
		}
		env, err := device.Seal(d.key, body)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	now := time.Now()
	year9999, _ := time.Parse(time.RFC3339, "9999-12-31T23:59:59Z")
	for _, tc := range []struct {
		name string
		seq  uint64
		ts   time.Time
		want byte
	}{
		{"a year ahead", 1, now.AddDate(1, 0, 0), packets.ErrPayloadFormatInvalid.Code},
		{"9999-12-31", 1, year9999, packets.ErrPayloadFormatInvalid.Code},
		{"10 minutes ahead", 1, now.Add(10 * time.Minute), packets.ErrPayloadFormatInvalid.Code},
		{"1 minute ahead", 1, now.Add(time.Minute), 0},
		{"30 days old (spooled)", 2, now.AddDate(0, 0, -30), 0},
		{"2001", 3, time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), 0},
	} {
		code, err := publish5(c, d, "", at(tc.seq, tc.ts))
		if err != nil || code != tc.want {
			t.Errorf("%s: code %#x %v, want %#x", tc.name, code, err, tc.want)
		}
	}
	if got := testutil.ToFloat64(e.g.Broker().Metrics().Refused.WithLabelValues(refusal.FutureTimestamp, device.KindDust)); got != 3 {
		t.Errorf("refused{future_timestamp} = %g, want 3", got)
	}
	if last := e.g.Store().LastGSeq(); last != 3 {
		t.Errorf("last gseq %d, want 3 (the refused ones store nothing)", last)
	}
}

// TestConnFaultConfigValidate: the connection-fault keys name themselves
// and their bound.
func TestConnFaultConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"connect timeout", func(c *Config) { c.MQTT.ConnectTimeout = time.Millisecond }, "mqtt.connect_timeout (1ms) must be 0 (the default, 5s) or within [1s, 5m]"},
		{"fd headroom", func(c *Config) { c.MQTT.FDHeadroom = 10 }, "mqtt.fd_headroom (10)"},
		{"future tolerance", func(c *Config) { c.FutureTolerance = 0 }, "future_tolerance (0s) must be within [1s, 24h]"},
		{"negative rate", func(c *Config) { c.Limits.ConnectSourceRate = -1 }, "limits.connect_source_rate (-1) cannot be negative"},
		{"burst", func(c *Config) { c.Limits.AuthFailureBurst = 0 }, "limits.auth_failure_burst (0) must be within [1, 1048576]"},
		{"global below source", func(c *Config) { c.Limits.ConnectRate = c.Limits.ConnectSourceRate },
			"limits.connect_rate and _burst (100, 5000) must be greater than limits.connect_source_rate and _burst (100, 1000)"},
		{"global failures below source", func(c *Config) { c.Limits.AuthFailureBurst = 10 }, "limits.auth_failure_rate and _burst"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			err := c.Validate()
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want ErrConfig naming %q", err, tc.want)
			}
		})
	}
	c := DefaultConfig()
	c.Limits.ConnectSourceRate, c.Limits.ConnectRate, c.Limits.AuthFailureSourceRate, c.Limits.AuthFailureRate = 0, 0, 0, 0
	c.MQTT.ConnectTimeout, c.MQTT.FDHeadroom = 0, 0
	if err := c.Validate(); err != nil {
		t.Fatalf("limits off and defaults by zero: %v", err)
	}
}

// TestGatewayStopWithPendingConnection: a connection that never sent
// CONNECT does not hold up the gateway's stop.
func TestGatewayStopWithPendingConnection(t *testing.T) {
	cfg := itConfig(t)
	cfg.MQTT.ConnectTimeout = 5 * time.Minute
	e := itStart(t, cfg, nil, nil)
	c, err := net.Dial("tcp", e.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	itest.WaitUntil(t, 5*time.Second, "pending connection", func() bool {
		return testutil.ToFloat64(e.g.Broker().Metrics().Conn.Pending) == 1
	})
	start := time.Now()
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("gateway still stopping 10 s later with a connection that never sent CONNECT")
	}
	t.Logf("stopped in %s with a pending connection", time.Since(start).Round(time.Millisecond))
}
