package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
	pahopk "github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/emmansun/gmsm/sm3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
	"github.com/edgeanchor/edgeanchor/device/refusal"
	"github.com/edgeanchor/edgeanchor/gateway/httpapi"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// itEnv is a real gateway (mochi broker, Badger in t.TempDir, HTTP API) on
// free loopback ports, for the ingest integration tests.
type itEnv struct {
	t      *testing.T
	cfg    Config
	g      *Gateway
	reg    *broker.StaticRegistry
	gwKey  *device.KeySigner
	prom   *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func itLogger() *slog.Logger {
	if os.Getenv("EDGEANCHOR_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func itConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.KeyPath = "unused-signer-given"
	cfg.MQTT = MQTTConfig{TCP: "127.0.0.1:0"}
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Limits.DeviceRate = 0
	return cfg
}

func itStart(t *testing.T, cfg Config, gwKey *device.KeySigner, reg *broker.StaticRegistry) *itEnv {
	t.Helper()
	if gwKey == nil {
		priv, err := device.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		gwKey = device.NewKeySigner(priv)
	}
	if reg == nil {
		reg = broker.NewStaticRegistry()
	}
	prom := prometheus.NewRegistry()
	g, err := New(cfg, Deps{Logger: itLogger(), Registerer: prom, Gatherer: prom, Signer: gwKey, Registry: reg})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &itEnv{t: t, cfg: cfg, g: g, reg: reg, gwKey: gwKey, prom: prom, cancel: cancel, done: make(chan error, 1)}
	go func() { e.done <- g.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for !g.Broker().Up() {
		if time.Now().After(deadline) {
			t.Fatal("broker did not come up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Cleanup(e.stop)
	return e
}

func (e *itEnv) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		e.t.Errorf("gateway did not stop within 15 s; goroutines:\n%s", goroutines())
	}
}

func (e *itEnv) addr() string { return e.g.Broker().Addr("tcp") }

type itDevice struct {
	key  *device.KeySigner
	did  device.DID
	kind string
}

func (e *itEnv) newDevice(kind string) *itDevice {
	e.t.Helper()
	priv, err := device.GenerateKey()
	if err != nil {
		e.t.Fatal(err)
	}
	d := &itDevice{key: device.NewKeySigner(priv), kind: kind}
	d.did = d.key.DID()
	e.reg.Put(broker.DeviceInfo{DID: d.did, Pub: d.key.Public(), Kind: kind, Site: e.cfg.Site})
	return d
}

func sampleData(kind string) map[string]any {
	switch kind {
	case device.KindAttendance:
		return map[string]any{"worker": strings.Repeat("ab", 32), "project": "p1", "gate": "g1", "direction": "in", "method": "face"}
	case device.KindSurvey:
		return map[string]any{"instrument": "gnss-rtk", "point": "P1", "x_m": 3380000.5, "y_m": 38500000.25, "h_m": 12.5,
			"h_prec_m": 0.01, "v_prec_m": 0.02, "parcel": "A-1", "operator": "op"}
	default:
		return map[string]any{"pm25_ugm3": 35.5, "pm10_ugm3": 60, "noise_dba": 70}
	}
}

func defaultKind(devKind string) string { return DeviceRecordKinds[devKind][0] }

// envelope makes a signed envelope of d with seq.
func (d *itDevice) envelope(t testing.TB, seq uint64) []byte {
	t.Helper()
	kind := defaultKind(d.kind)
	body, err := device.NewBody(d.did, seq, time.Now(), kind, sampleData(kind))
	if err != nil {
		t.Fatal(err)
	}
	env, err := device.Seal(d.key, body)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func (d *itDevice) credential(t testing.TB) string {
	t.Helper()
	c, err := credential.MakeConnect(d.key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// v3 connects d with paho (MQTT 3.1.1); receipts go to the returned channel.
func (e *itEnv) v3(d *itDevice, password string) (paho.Client, chan []byte, chan error, error) {
	receipts := make(chan []byte, 1024)
	lost := make(chan error, 1)
	o := paho.NewClientOptions().AddBroker("tcp://" + e.addr()).SetClientID(string(d.did)).
		SetUsername(string(d.did)).SetPassword(password).SetAutoReconnect(false).SetConnectRetry(false).
		SetCleanSession(true).SetOrderMatters(false).SetProtocolVersion(4).SetConnectTimeout(5 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, nil, nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, nil, nil, err
	}
	sub := c.Subscribe(string(broker.ReceiptTopic(d.did)), 1, func(_ paho.Client, m paho.Message) { receipts <- m.Payload() })
	if !sub.WaitTimeout(5*time.Second) || sub.Error() != nil {
		c.Disconnect(0)
		return nil, nil, nil, fmt.Errorf("subscribe: %v", sub.Error())
	}
	e.t.Cleanup(func() { c.Disconnect(0) })
	return c, receipts, lost, nil
}

// v5 connects d with paho.golang (MQTT 5).
func (e *itEnv) v5(d *itDevice, password string) (*paho5.Client, *paho5.Connack, chan []byte, error) {
	conn, err := net.Dial("tcp", e.addr())
	if err != nil {
		return nil, nil, nil, err
	}
	receipts := make(chan []byte, 1024)
	c := paho5.NewClient(paho5.ClientConfig{Conn: conn, OnPublishReceived: []func(paho5.PublishReceived) (bool, error){
		func(pr paho5.PublishReceived) (bool, error) { receipts <- pr.Packet.Payload; return true, nil },
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho5.Connect{ClientID: string(d.did), Username: string(d.did), UsernameFlag: true,
		Password: []byte(password), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
	if err != nil {
		_ = conn.Close()
		return nil, ca, nil, err
	}
	e.t.Cleanup(func() { _ = c.Disconnect(&paho5.Disconnect{}) })
	if _, err := c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: broker.ReceiptTopic(d.did), QoS: 1}}}); err != nil {
		return nil, ca, nil, err
	}
	return c, ca, receipts, nil
}

func publish5(c *paho5.Client, d *itDevice, topic string, payload []byte) (byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if topic == "" {
		topic = broker.UpTopic(d.did)
	}
	pr, err := c.Publish(ctx, &paho5.Publish{Topic: topic, QoS: 1, Payload: payload})
	if pr == nil {
		return 0xff, err
	}
	return pr.ReasonCode, nil
}

func (e *itEnv) checkReceipt(msg []byte, d *itDevice, seq uint64, env []byte) *anchor.Receipt {
	e.t.Helper()
	r, err := store.VerifyReceipt(msg, e.gwKey.Public())
	if err != nil {
		e.t.Fatalf("receipt: %v", err)
	}
	sum := sm3.Sum(env)
	if r.DID != d.did || r.Seq != seq || r.Env != anchor.Hash(sum) || r.Gateway != e.gwKey.DID() {
		e.t.Fatalf("receipt %+v does not describe seq %d of %s", r, seq, d.did)
	}
	return r
}

func waitMsg(t *testing.T, ch chan []byte) []byte {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10 s")
		return nil
	}
}

func TestIngestV3HappyPath(t *testing.T) {
	e := itStart(t, itConfig(t), nil, nil)
	d := e.newDevice("env")
	c, receipts, _, err := e.v3(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		env := d.envelope(t, seq)
		tok := c.Publish(broker.UpTopic(d.did), 1, false, env)
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", seq, tok.Error())
		}
		// The PUBACK is back: the record must already be readable from the
		// store (the hook returns only after the synced commit).
		if got := e.g.Store().LastGSeq(); got != seq {
			t.Fatalf("after PUBACK of seq %d: LastGSeq = %d", seq, got)
		}
		rec, err := e.g.Store().Get(seq)
		if err != nil {
			t.Fatalf("Get(%d) right after PUBACK: %v", seq, err)
		}
		if string(rec.Envelope) != string(env) || rec.Seq != seq || rec.DID != d.did {
			t.Fatalf("stored record %+v is not what was sent", rec)
		}
		r := e.checkReceipt(waitMsg(t, receipts), d, seq, env)
		if r.GSeq != seq {
			t.Fatalf("receipt gseq = %d, want %d", r.GSeq, seq)
		}
		if _, err := anchor.VerifyReceipt(rec.Receipt, rec.Group, rec.Path, rec.ReceiptSig, e.gwKey.Public()); err != nil {
			t.Fatalf("stored receipt: %v", err)
		}
	}
	m := e.g.Broker().Metrics()
	if got := testutil.ToFloat64(m.Accepted.WithLabelValues(device.KindDust)); got != 3 {
		t.Errorf("accepted{env.dust} = %v, want 3", got)
	}
	if got := testutil.ToFloat64(m.DevicesConnected); got != 1 {
		t.Errorf("devices_connected = %v, want 1", got)
	}
}

func TestIngestV5HappyPath(t *testing.T) {
	e := itStart(t, itConfig(t), nil, nil)
	d := e.newDevice("payroll")
	c, ca, receipts, err := e.v5(d, d.credential(t))
	if err != nil {
		t.Fatalf("connect: %v (connack %+v)", err, ca)
	}
	env := d.envelope(t, 1)
	code, err := publish5(c, d, "", env)
	if err != nil || code != 0 {
		t.Fatalf("publish: code %#x, %v", code, err)
	}
	rec, err := e.g.Store().Get(1)
	if err != nil {
		t.Fatalf("Get(1) right after PUBACK: %v", err)
	}
	if rec.Kind != device.KindAttendance || len(rec.Salt) != 16 {
		t.Fatalf("record kind %q salt %d bytes", rec.Kind, len(rec.Salt))
	}
	e.checkReceipt(waitMsg(t, receipts), d, 1, env)
	// The leaf data is salt ‖ receipt body.
	if ld := rec.LeafData(); string(ld[:16]) != string(rec.Salt) || string(ld[16:]) != string(rec.Receipt) {
		t.Fatal("LeafData is not salt ‖ receipt")
	}
}

// TestIngestRefusalsV5 sends each kind of bad publish from an MQTT 5 client
// and checks the PUBACK reason code, the refusal metric, and that nothing
// was stored.
func TestIngestRefusalsV5(t *testing.T) {
	cfg := itConfig(t)
	cfg.Limits.MaxPayload = 4096
	e := itStart(t, cfg, nil, nil)
	d := e.newDevice("env")
	other := e.newDevice("env")
	c, _, _, err := e.v5(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	// Two good records first, so that replay has something to replay
	// (seqs 1..3 are an open gap: a late fill there is not a replay).
	for _, seq := range []uint64{4, 5} {
		if code, err := publish5(c, d, "", d.envelope(t, seq)); code != 0 || err != nil {
			t.Fatalf("good publish of seq %d: %#x %v", seq, code, err)
		}
	}
	seal := func(body []byte, key device.Signer) []byte {
		env, err := device.Seal(key, body)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	body := func(did device.DID, seq uint64, kind string, data any) []byte {
		b, err := device.NewBody(did, seq, time.Now(), kind, data)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rawEnv := func(v int, alg string, b []byte, sig []byte) []byte {
		out, _ := json.Marshal(device.Envelope{V: v, Alg: alg, Body: b, Sig: sig})
		return out
	}
	okBody := body(d.did, 6, device.KindDust, sampleData(device.KindDust))
	okSig, _ := d.key.Sign(okBody)
	tampered := append([]byte(nil), okBody...)
	tampered = []byte(strings.Replace(string(tampered), `"seq":6`, `"seq":7`, 1))
	badTS := []byte(strings.Replace(string(okBody), `Z"`, `+08:00"`, 1))

	cases := []struct {
		name, reason, kind, topic string
		payload                   []byte
		code                      byte
	}{
		{"not json", "malformed", "", "", []byte("{nope"), 0x99},
		{"version", "version", "", "", rawEnv(2, device.AlgSM2SM3, okBody, okSig), 0x99},
		{"algorithm", "algorithm", "", "", rawEnv(1, "ECDSA", okBody, okSig), 0x99},
		{"too large", refusal.TooLarge, "", "", []byte(`{"v":1,"pad":"` + strings.Repeat("x", 5000) + `"}`), 0x99},
		{"timestamp", "timestamp", "", "", rawEnv(1, device.AlgSM2SM3, badTS, okSig), 0x99},
		{"did mismatch", "did_mismatch", device.KindDust, "", seal(body(other.did, 6, device.KindDust, sampleData(device.KindDust)), other.key), 0x87},
		{"signature", "signature", device.KindDust, "", rawEnv(1, device.AlgSM2SM3, tampered, okSig), 0x87},
		{"schema", "schema", device.KindDust, "", seal(body(d.did, 6, device.KindDust, map[string]any{"pm25_ugm3": -1, "pm10_ugm3": 1, "noise_dba": 50}), d.key), 0x99},
		{"kind not allowed", refusal.KindNotAllowed, device.KindAttendance, "", seal(body(d.did, 6, device.KindAttendance, sampleData(device.KindAttendance)), d.key), 0x87},
		{"replay same seq", refusal.Replay, device.KindDust, "", d.envelope(t, 5), 0x83},
		{"replay older", refusal.Replay, device.KindDust, "", d.envelope(t, 4), 0x83},
		{"foreign topic", refusal.ForeignTopic, "", broker.UpTopic(other.did), d.envelope(t, 6), 0x87},
	}
	m := e.g.Broker().Metrics()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(m.Refused.WithLabelValues(tc.reason, tc.kind))
			code, _ := publish5(c, d, tc.topic, tc.payload)
			if code != tc.code {
				t.Errorf("PUBACK reason code = %#x, want %#x", code, tc.code)
			}
			if got := testutil.ToFloat64(m.Refused.WithLabelValues(tc.reason, tc.kind)) - before; got != 1 {
				t.Errorf("refused{reason=%q,kind=%q} grew by %v, want 1", tc.reason, tc.kind, got)
			}
			if got := e.g.Store().LastGSeq(); got != 2 {
				t.Errorf("LastGSeq = %d after a refusal, want 2 (nothing stored)", got)
			}
		})
	}
	// A jump in seq is accepted and counted as a gap.
	if code, err := publish5(c, d, "", d.envelope(t, 9)); code != 0 || err != nil {
		t.Fatalf("publish after refusals: %#x %v", code, err)
	}
	rec, err := e.g.Store().Get(3)
	if err != nil || rec.Seq != 9 || rec.Gap != 3 {
		t.Fatalf("record 3 = %+v, %v; want seq 9 with gap 3", rec, err)
	}
	gaps, err := testutil.GatherAndCount(e.prom, "edgeanchor_sequence_gaps_total")
	if err != nil || gaps != 1 {
		t.Fatalf("sequence_gaps_total series: %d, %v", gaps, err)
	}
	if v := gatherValue(t, e.prom, "edgeanchor_sequence_gaps_total"); v != 2 { // seq 4 as first record, then 9 after 5
		t.Fatalf("sequence_gaps_total = %v, want 2", v)
	}
}

func TestIngestRateLimited(t *testing.T) {
	cfg := itConfig(t)
	cfg.Limits.DeviceRate = 0.001
	cfg.Limits.DeviceBurst = 2
	e := itStart(t, cfg, nil, nil)
	d := e.newDevice("env")
	c, _, _, err := e.v5(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 2; seq++ {
		if code, err := publish5(c, d, "", d.envelope(t, seq)); code != 0 || err != nil {
			t.Fatalf("publish %d within burst: %#x %v", seq, code, err)
		}
	}
	if code, _ := publish5(c, d, "", d.envelope(t, 3)); code != 0x97 {
		t.Fatalf("publish over the rate: code %#x, want 0x97", code)
	}
	if got := testutil.ToFloat64(e.g.Broker().Metrics().Refused.WithLabelValues(refusal.RateLimited, "")); got != 1 {
		t.Fatalf("refused{rate_limited} = %v", got)
	}
	if got := e.g.Store().LastGSeq(); got != 2 {
		t.Fatalf("LastGSeq = %d, want 2", got)
	}
}

func TestIngestStoreErrorRefuses(t *testing.T) {
	e := itStart(t, itConfig(t), nil, nil)
	d := e.newDevice("env")
	c, _, _, err := e.v5(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.g.Store().Close(); err != nil {
		t.Fatal(err)
	}
	if code, _ := publish5(c, d, "", d.envelope(t, 1)); code != 0x80 {
		t.Fatalf("publish with the store closed: code %#x, want 0x80", code)
	}
	if got := testutil.ToFloat64(e.g.Broker().Metrics().Refused.WithLabelValues(refusal.StoreError, device.KindDust)); got != 1 {
		t.Fatalf("refused{store_error} = %v", got)
	}
}

// TestIngestV3RefusalDisconnects: an MQTT 3.1.1 client cannot be told why,
// so it is disconnected at the first refusal (the default).
func TestIngestV3RefusalDisconnects(t *testing.T) {
	e := itStart(t, itConfig(t), nil, nil)
	d := e.newDevice("env")
	c, _, lost, err := e.v3(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	env := d.envelope(t, 1)
	bad := []byte(strings.Replace(string(env), `"v":1`, `"v":3`, 1))
	c.Publish(broker.UpTopic(d.did), 1, false, bad)
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("v3 client not disconnected after a refused publish")
	}
	m := e.g.Broker().Metrics()
	if got := testutil.ToFloat64(m.Refused.WithLabelValues("version", "")); got != 1 {
		t.Errorf("refused{version} = %v", got)
	}
	if got := testutil.ToFloat64(m.V3Disconnects); got != 1 {
		t.Errorf("v3 disconnects = %v", got)
	}
	if got := e.g.Store().LastGSeq(); got != 0 {
		t.Errorf("LastGSeq = %d, want 0", got)
	}
}

func TestConnectRefusals(t *testing.T) {
	e := itStart(t, itConfig(t), nil, nil)
	d := e.newDevice("env")
	stranger := &itDevice{kind: "env"}
	{
		priv, _ := device.GenerateKey()
		stranger.key = device.NewKeySigner(priv)
		stranger.did = stranger.key.DID()
	}
	revoked := e.newDevice("env")
	e.reg.Revoke(revoked.did)
	reused := d.credential(t)
	if _, _, _, err := e.v3(d, reused); err != nil {
		t.Fatalf("first use of a credential: %v", err)
	}
	staleCred := func() string {
		c, err := credential.MakeConnect(d.key, time.Now().Add(-10*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}()
	otherSig := func() string {
		c := d.credential(t)
		oc := stranger.credential(t)
		return c[:strings.LastIndex(c, ".")] + oc[strings.LastIndex(oc, "."):]
	}()
	cases := []struct {
		name, reason string
		dev          *itDevice
		password     string
	}{
		{"unknown device", refusal.UnknownDevice, stranger, stranger.credential(t)},
		{"revoked", refusal.Revoked, revoked, revoked.credential(t)},
		{"stale", refusal.Stale, d, staleCred},
		{"replayed", refusal.Replayed, d, reused},
		{"bad signature", refusal.BadSignature, d, otherSig},
		{"malformed", refusal.Malformed, d, "hunter2"},
	}
	m := e.g.Broker().Metrics()
	for _, tc := range cases {
		t.Run(tc.name+"/v3", func(t *testing.T) {
			before := testutil.ToFloat64(m.AuthFailures.WithLabelValues(tc.reason))
			_, _, _, err := e.v3(tc.dev, tc.password)
			if !errors.Is(err, pahopk.ErrorRefusedNotAuthorised) {
				t.Errorf("connect error = %v, want not authorised (return code 5)", err)
			}
			if got := testutil.ToFloat64(m.AuthFailures.WithLabelValues(tc.reason)) - before; got != 1 {
				t.Errorf("auth_failures{%s} grew by %v", tc.reason, got)
			}
		})
		if tc.reason == refusal.Replayed {
			continue // the credential was used up above
		}
		t.Run(tc.name+"/v5", func(t *testing.T) {
			pw := tc.password
			if tc.reason == refusal.Stale || tc.reason == refusal.Malformed || tc.reason == refusal.BadSignature {
				// same credential again is fine: it was refused before its nonce was recorded
			} else {
				pw = tc.dev.credential(t)
			}
			before := testutil.ToFloat64(m.AuthFailures.WithLabelValues(tc.reason))
			_, ca, _, err := e.v5(tc.dev, pw)
			if err == nil || ca == nil || ca.ReasonCode != 0x87 {
				t.Errorf("connack = %+v, err %v; want reason 0x87", ca, err)
			}
			if got := testutil.ToFloat64(m.AuthFailures.WithLabelValues(tc.reason)) - before; got != 1 {
				t.Errorf("auth_failures{%s} grew by %v", tc.reason, got)
			}
		})
	}
	t.Run("client id mismatch", func(t *testing.T) {
		o := paho.NewClientOptions().AddBroker("tcp://" + e.addr()).SetClientID("someone-else").
			SetUsername(string(d.did)).SetPassword(d.credential(t)).SetAutoReconnect(false).SetProtocolVersion(4)
		c := paho.NewClient(o)
		tok := c.Connect()
		tok.WaitTimeout(10 * time.Second)
		if !errors.Is(tok.Error(), pahopk.ErrorRefusedNotAuthorised) {
			t.Errorf("connect error = %v", tok.Error())
		}
		if got := testutil.ToFloat64(m.AuthFailures.WithLabelValues(refusal.ClientIDMismatch)); got != 1 {
			t.Errorf("auth_failures{client_id_mismatch} = %v", got)
		}
	})
}

// TestRevokedDeviceCutOff: a device revoked in the registry while connected
// is disconnected by the broker's sweep and cannot connect again.
func TestRevokedDeviceCutOff(t *testing.T) {
	e := itStart(t, itConfig(t), nil, nil)
	d := e.newDevice("env")
	_, _, lost, err := e.v3(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	e.reg.Revoke(d.did)
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("revoked device still connected after 5 s")
	}
	if _, _, _, err := e.v3(d, d.credential(t)); !errors.Is(err, pahopk.ErrorRefusedNotAuthorised) {
		t.Fatalf("reconnect of a revoked device: %v", err)
	}
}

func TestConcurrentPublishers(t *testing.T) {
	e := itStart(t, itConfig(t), nil, nil)
	const devices, perDevice = 10, 20
	var wg sync.WaitGroup
	errc := make(chan error, devices)
	devs := make([]*itDevice, devices)
	for i := range devs {
		devs[i] = e.newDevice("env")
	}
	for _, d := range devs {
		c, _, _, err := e.v3(d, d.credential(t))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks := make([]paho.Token, 0, perDevice)
			for seq := uint64(1); seq <= perDevice; seq++ {
				toks = append(toks, c.Publish(broker.UpTopic(d.did), 1, false, d.envelope(t, seq)))
			}
			for i, tok := range toks {
				if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					errc <- fmt.Errorf("%s seq %d: %v", d.did, i+1, tok.Error())
					return
				}
				// PUBACKed, so durably stored: the store's last seq of the
				// device (read from Badger) has reached it.
				if last, err := e.g.Store().LastSeq(d.did); err != nil || last < uint64(i+1) {
					errc <- fmt.Errorf("%s seq %d acknowledged but last stored seq is %d (%v)", d.did, i+1, last, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if got := e.g.Store().LastGSeq(); got != devices*perDevice {
		t.Fatalf("LastGSeq = %d, want %d", got, devices*perDevice)
	}
	seen := map[string]bool{}
	var next uint64 = 1
	err := e.g.Store().Range(1, devices*perDevice, func(r *store.Record) error {
		if r.GSeq != next {
			return fmt.Errorf("gseq %d where %d expected", r.GSeq, next)
		}
		next++
		k := fmt.Sprintf("%s/%d", r.DID, r.Seq)
		if seen[k] {
			return fmt.Errorf("%s stored twice", k)
		}
		seen[k] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != devices*perDevice {
		t.Fatalf("%d distinct records", len(seen))
	}
}

// TestRestartKeepsSequences: gseq and each device's last seq survive a
// restart of the whole gateway.
func TestRestartKeepsSequences(t *testing.T) {
	cfg := itConfig(t)
	e := itStart(t, cfg, nil, nil)
	d := e.newDevice("env")
	c, _, _, err := e.v5(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		if code, err := publish5(c, d, "", d.envelope(t, seq)); code != 0 || err != nil {
			t.Fatalf("publish %d: %#x %v", seq, code, err)
		}
	}
	e.stop()

	e2 := itStart(t, cfg, e.gwKey, e.reg)
	if got := e2.g.Store().LastGSeq(); got != 3 {
		t.Fatalf("LastGSeq after restart = %d, want 3", got)
	}
	c2, _, _, err := e2.v5(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := publish5(c2, d, "", d.envelope(t, 3)); code != 0x83 {
		t.Fatalf("replay after restart: code %#x, want 0x83", code)
	}
	if code, err := publish5(c2, d, "", d.envelope(t, 4)); code != 0 || err != nil {
		t.Fatalf("next seq after restart: %#x %v", code, err)
	}
	rec, err := e2.g.Store().Get(4)
	if err != nil || rec.Seq != 4 {
		t.Fatalf("gseq 4 = %+v, %v", rec, err)
	}
}

// TestApplicationAccount: a site application reads verified records on its
// patterns and nothing else, and cannot publish.
func TestApplicationAccount(t *testing.T) {
	cfg := itConfig(t)
	// MinCost keeps the test fast under -race; production hashes use the default cost.
	h, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	hash := string(h)
	cfg.Accounts = []AccountConfig{{Username: "dashboard", PasswordHash: hash, Topics: []string{"ea/v1/site/site-a/records/#"}}}
	e := itStart(t, cfg, nil, nil)
	d := e.newDevice("env")

	got := make(chan []byte, 16)
	o := paho.NewClientOptions().AddBroker("tcp://" + e.addr()).SetClientID("dash-1").
		SetUsername("dashboard").SetPassword("s3cret").SetAutoReconnect(false).SetProtocolVersion(4)
	app := paho.NewClient(o)
	if tok := app.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("app connect: %v", tok.Error())
	}
	t.Cleanup(func() { app.Disconnect(0) })
	sub := app.Subscribe("ea/v1/site/site-a/records/#", 1, func(_ paho.Client, m paho.Message) { got <- m.Payload() })
	if !sub.WaitTimeout(5*time.Second) || sub.Error() != nil {
		t.Fatalf("app subscribe: %v", sub.Error())
	}
	// Forbidden filters: the raw device topics and another site.
	for _, f := range []string{"ea/v1/dev/+/up", "#", "ea/v1/site/site-b/records/#"} {
		tok := app.Subscribe(f, 1, nil)
		tok.WaitTimeout(5 * time.Second)
		st, ok := tok.(*paho.SubscribeToken)
		if !ok || st.Result()[f] != 0x80 {
			t.Errorf("subscribe %q: result %v, want 0x80", f, st.Result())
		}
	}
	// A device's raw publish is never delivered, even to a broad subscriber.
	c, _, _, err := e.v3(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	env := d.envelope(t, 1)
	if tok := c.Publish(broker.UpTopic(d.did), 1, false, env); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	var view httpapi.RecordView
	if err := json.Unmarshal(waitMsg(t, got), &view); err != nil {
		t.Fatal(err)
	}
	if view.GSeq != 1 || view.DID != d.did || string(view.Envelope) != string(env) || view.Kind != device.KindDust {
		t.Fatalf("republished record = %+v", view)
	}
	if _, err := store.VerifyReceipt(mustJSON(t, view.Receipt), e.gwKey.Public()); err != nil {
		t.Fatalf("republished receipt: %v", err)
	}
	// The application may not publish (paho 3.1.1: the broker disconnects it).
	before := testutil.ToFloat64(e.g.Broker().Metrics().Refused.WithLabelValues(refusal.ForeignTopic, ""))
	app.Publish("ea/v1/site/site-a/records/env.dust", 1, false, env).WaitTimeout(2 * time.Second)
	if got := testutil.ToFloat64(e.g.Broker().Metrics().Refused.WithLabelValues(refusal.ForeignTopic, "")) - before; got != 1 {
		t.Errorf("refused{foreign_topic} for an application publish grew by %v", got)
	}
	if e.g.Store().LastGSeq() != 1 {
		t.Error("application publish changed the store")
	}
	// Wrong password.
	o2 := paho.NewClientOptions().AddBroker("tcp://" + e.addr()).SetClientID("dash-2").
		SetUsername("dashboard").SetPassword("wrong").SetAutoReconnect(false).SetProtocolVersion(4)
	tok := paho.NewClient(o2).Connect()
	tok.WaitTimeout(10 * time.Second)
	if !errors.Is(tok.Error(), pahopk.ErrorRefusedNotAuthorised) {
		t.Errorf("wrong password: %v", tok.Error())
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHTTPAPI(t *testing.T) {
	cfg := itConfig(t)
	cfg.HTTP.MaxPage = 2
	e := itStart(t, cfg, nil, nil)
	d := e.newDevice("survey")
	c, _, _, err := e.v5(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		if code, err := publish5(c, d, "", d.envelope(t, seq)); code != 0 || err != nil {
			t.Fatalf("publish: %#x %v", code, err)
		}
	}
	base := "http://" + e.g.HTTPAddr()
	get := func(path string, wantCode int, into any) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != wantCode {
			t.Fatalf("GET %s: %d %s, want %d", path, resp.StatusCode, body, wantCode)
		}
		if into != nil {
			if err := json.Unmarshal(body, into); err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
		}
		if s, ok := into.(*string); ok {
			*s = string(body)
		}
	}
	get("/healthz", 200, nil)
	var ready map[string]string
	get("/readyz", 200, &ready)
	if ready["broker"] != "ok" || ready["store"] != "ok" {
		t.Fatalf("readyz = %v", ready)
	}
	var rv httpapi.RecordView
	get("/v1/records/2", 200, &rv)
	if rv.GSeq != 2 || rv.Seq != 2 || rv.DID != d.did || rv.Kind != device.KindSurvey {
		t.Fatalf("record 2 = %+v", rv)
	}
	if _, err := store.VerifyReceipt(mustJSON(t, rv.Receipt), e.gwKey.Public()); err != nil {
		t.Fatalf("served receipt: %v", err)
	}
	if _, err := device.Verify(rv.Envelope, d.key.Public(), 0); err != nil {
		t.Fatalf("served envelope: %v", err)
	}
	get("/v1/records/99", 404, nil)
	get("/v1/records/abc", 400, nil)
	var page httpapi.DeviceRecordsPage
	get("/v1/devices/"+string(d.did)+"/records?from_seq=1", 200, &page)
	if len(page.Records) != 2 || page.Records[0].Seq != 1 || page.NextFromSeq != 3 {
		t.Fatalf("page 1 = %d records, next %d", len(page.Records), page.NextFromSeq)
	}
	page = httpapi.DeviceRecordsPage{}
	get("/v1/devices/"+string(d.did)+"/records?from_seq=3&to_seq=10", 200, &page)
	if len(page.Records) != 1 || page.Records[0].Seq != 3 || page.NextFromSeq != 0 {
		t.Fatalf("page 2 = %+v", page)
	}
	get("/v1/devices/not-a-did/records", 400, nil)
	get("/v1/devices/"+string(d.did)+"/records?from_seq=5&to_seq=1", 400, nil)
	var metrics string
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metrics = string(b)
	for _, name := range []string{"edgeanchor_messages_accepted_total", "edgeanchor_store_write_seconds",
		"edgeanchor_ingest_latency_seconds", "edgeanchor_devices_connected", "edgeanchor_store_size_bytes"} {
		if !strings.Contains(metrics, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// TestIngestV3RefusalsBeforeDisconnect: with the limit at 2, a 3.1.1 client
// survives its first refusal and is cut off at the second.
func TestIngestV3RefusalsBeforeDisconnect(t *testing.T) {
	cfg := itConfig(t)
	cfg.Limits.V3RefusalsBeforeDisconnect = 2
	e := itStart(t, cfg, nil, nil)
	d := e.newDevice("env")
	c, _, lost, err := e.v3(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	good := d.envelope(t, 1)
	if tok := c.Publish(broker.UpTopic(d.did), 1, false, good); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	c.Publish(broker.UpTopic(d.did), 0, false, d.envelope(t, 1)) // a replay, at QoS 0: refused, no answer
	if tok := c.Publish(broker.UpTopic(d.did), 1, false, d.envelope(t, 2)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish after one refusal: %v", tok.Error())
	}
	select {
	case err := <-lost:
		t.Fatalf("disconnected after one refusal: %v", err)
	default:
	}
	c.Publish(broker.UpTopic(d.did), 0, false, d.envelope(t, 1))
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("not disconnected at the second refusal")
	}
	if got := testutil.ToFloat64(e.g.Broker().Metrics().Refused.WithLabelValues(refusal.Replay, device.KindDust)); got != 2 {
		t.Fatalf("refused{replay} = %v, want 2", got)
	}
	if e.g.Store().LastGSeq() != 2 {
		t.Fatalf("LastGSeq = %d, want 2", e.g.Store().LastGSeq())
	}
}

// swapKey registers another key for d, so that any signature check of
// d's envelopes would fail: an answer other than "signature" proves an
// envelope was not verified.
func swapKey(t *testing.T, e *itEnv, d *itDevice) {
	t.Helper()
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e.reg.Put(broker.DeviceInfo{DID: d.did, Pub: device.NewKeySigner(priv).Public(), Kind: d.kind, Site: e.cfg.Site})
}

// checkResends checks the metrics and the store after resends of seq 1.
func checkResends(t *testing.T, e *itEnv, resends int) {
	t.Helper()
	m := e.g.Broker().Metrics()
	if got := gatherValue(t, e.prom, "edgeanchor_messages_duplicate_total"); got != float64(resends) {
		t.Errorf("messages_duplicate_total = %v, want %d", got, resends)
	}
	if got := testutil.ToFloat64(m.Accepted.WithLabelValues(device.KindDust)); got != 1 {
		t.Errorf("accepted{env.dust} = %v, want 1 (resends are not new records)", got)
	}
	if got := testutil.ToFloat64(m.Refused.WithLabelValues("signature", device.KindDust)); got != 0 {
		t.Errorf("refused{signature} = %v: a resend was verified again", got)
	}
	if got := e.g.Store().LastGSeq(); got != 1 {
		t.Errorf("LastGSeq = %d after resends, want 1 (nothing stored)", got)
	}
}

// TestIngestResendV3: an MQTT 3.1.1 device whose PUBACK was lost resends
// the same envelope (same did, seq, bytes), here on a new connection: it
// gets a PUBACK and its stored receipt again, nothing is stored or
// verified again, and it is not disconnected even with the refusal limit
// at 1; a different envelope with that seq is still a replay.
func TestIngestResendV3(t *testing.T) {
	cfg := itConfig(t)
	cfg.Limits.V3RefusalsBeforeDisconnect = 1
	e := itStart(t, cfg, nil, nil)
	d := e.newDevice("env")
	c, receipts, _, err := e.v3(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	env := d.envelope(t, 1)
	if tok := c.Publish(broker.UpTopic(d.did), 1, false, env); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	stored := e.checkReceipt(waitMsg(t, receipts), d, 1, env)
	c.Disconnect(100)
	// Reconnect at once: the broker makes the new connection wait for the
	// old clean session's cleanup (broker.awaitCleanup), so the receipts of
	// the resends reach it.
	c2, receipts2, lost, err := e.v3(d, d.credential(t)) // the credential needs the real key
	if err != nil {
		t.Fatal(err)
	}
	swapKey(t, e, d)
	const resends = 3
	for i := range resends {
		if tok := c2.Publish(broker.UpTopic(d.did), 1, false, env); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("resend %d: %v", i, tok.Error())
		}
		r := e.checkReceipt(waitMsg(t, receipts2), d, 1, env)
		if *r != *stored {
			t.Fatalf("resend %d: receipt %+v, stored receipt %+v", i, r, stored)
		}
	}
	select {
	case err := <-lost:
		t.Fatalf("disconnected after resends: %v", err)
	default:
	}
	checkResends(t, e, resends)
	// A different envelope with seq 1 stays a replay (and, at limit 1,
	// disconnects).
	e.reg.Put(broker.DeviceInfo{DID: d.did, Pub: d.key.Public(), Kind: d.kind, Site: e.cfg.Site})
	c2.Publish(broker.UpTopic(d.did), 1, false, d.envelope(t, 1))
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("a replay with other bytes was not refused")
	}
	if got := testutil.ToFloat64(e.g.Broker().Metrics().Refused.WithLabelValues(refusal.Replay, device.KindDust)); got != 1 {
		t.Fatalf("refused{replay} = %v, want 1", got)
	}
	if got := e.g.Store().LastGSeq(); got != 1 {
		t.Fatalf("LastGSeq = %d, want 1", got)
	}
}

// TestIngestResendV5: the same with MQTT 5: a resend gets reason code 0
// and the stored receipt, a different envelope with that seq 0x83.
func TestIngestResendV5(t *testing.T) {
	e := itStart(t, itConfig(t), nil, nil)
	d := e.newDevice("env")
	c, _, receipts, err := e.v5(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	env := d.envelope(t, 1)
	if code, err := publish5(c, d, "", env); code != 0 || err != nil {
		t.Fatalf("publish: %#x %v", code, err)
	}
	stored := e.checkReceipt(waitMsg(t, receipts), d, 1, env)
	swapKey(t, e, d)
	const resends = 2
	for i := range resends {
		if code, err := publish5(c, d, "", env); code != 0 || err != nil {
			t.Fatalf("resend %d: %#x %v", i, code, err)
		}
		if r := e.checkReceipt(waitMsg(t, receipts), d, 1, env); *r != *stored {
			t.Fatalf("resend %d: receipt %+v, stored receipt %+v", i, r, stored)
		}
	}
	checkResends(t, e, resends)
	e.reg.Put(broker.DeviceInfo{DID: d.did, Pub: d.key.Public(), Kind: d.kind, Site: e.cfg.Site})
	if code, _ := publish5(c, d, "", d.envelope(t, 1)); code != 0x83 {
		t.Fatalf("replay with other bytes: code %#x, want 0x83", code)
	}
	if code, err := publish5(c, d, "", d.envelope(t, 2)); code != 0 || err != nil {
		t.Fatalf("next seq: %#x %v", code, err)
	}
	if got := e.g.Store().LastGSeq(); got != 2 {
		t.Fatalf("LastGSeq = %d, want 2", got)
	}
}

// TestRepublishBestEffort: a site application that stops acknowledging has
// republished records dropped once its queue is full; the drops are counted
// and every record is still stored and served.
func TestRepublishBestEffort(t *testing.T) {
	cfg := itConfig(t)
	h, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Accounts = []AccountConfig{{Username: "slow", PasswordHash: string(h), Topics: []string{"ea/v1/site/+/records/#"}}}
	cfg.Limits.SubscriberInflight = 2
	e := itStart(t, cfg, nil, nil)

	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	got := make(chan []byte, 16)
	o := paho.NewClientOptions().AddBroker("tcp://" + e.addr()).SetClientID("slow-1").SetProtocolVersion(4).
		SetUsername("slow").SetPassword("s3cret").SetAutoReconnect(false).SetOrderMatters(true)
	app := paho.NewClient(o)
	if tok := app.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("app connect: %v", tok.Error())
	}
	t.Cleanup(func() { app.Disconnect(0) })
	t.Cleanup(unblock) // runs first: the handler must not hold up the disconnect
	// With OrderMatters, paho calls the handler and only then sends the
	// PUBACK: the blocked handler keeps its message unacknowledged, and
	// paho's router takes nothing else, so nothing is acknowledged until
	// release.
	sub := app.Subscribe("ea/v1/site/site-a/records/#", 1, func(_ paho.Client, m paho.Message) {
		got <- m.Payload()
		<-release
	})
	if !sub.WaitTimeout(5*time.Second) || sub.Error() != nil {
		t.Fatalf("subscribe: %v", sub.Error())
	}

	d := e.newDevice("env")
	c, _, _, err := e.v3(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	for seq := uint64(1); seq <= n; seq++ {
		if tok := c.Publish(broker.UpTopic(d.did), 1, false, d.envelope(t, seq)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", seq, tok.Error())
		}
	}
	seqOf := func(msg []byte) uint64 {
		var v httpapi.RecordView
		if err := json.Unmarshal(msg, &v); err != nil {
			t.Fatalf("republished record: %v", err)
		}
		return v.Seq
	}
	if s := seqOf(waitMsg(t, got)); s != 1 {
		t.Fatalf("first republished seq %d, want 1", s)
	}
	if e.g.Store().LastGSeq() != n {
		t.Fatalf("LastGSeq = %d, want %d: a slow subscriber must not hold up ingest", e.g.Store().LastGSeq(), n)
	}
	// The broker republishes a record just after its PUBACK, so the last
	// drops may be counted after the device saw its PUBACKs: wait for them
	// (bounded). Seqs 1 and 2 fill the queue of 2; 3..6 are dropped, no
	// more and no fewer.
	dropped := e.g.Broker().Metrics().RepublishDropped
	for deadline := time.Now().Add(10 * time.Second); testutil.ToFloat64(dropped) < n-2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if got := testutil.ToFloat64(dropped); got != n-2 {
		t.Fatalf("republish_dropped = %v, want %d (queue of 2)", got, n-2)
	}
	// Released, the application gets what was queued: seq 2.
	unblock()
	if s := seqOf(waitMsg(t, got)); s != 2 {
		t.Fatalf("second republished seq %d, want 2", s)
	}
	if got := testutil.ToFloat64(dropped); got != n-2 {
		t.Fatalf("republish_dropped = %v after release, want %d", got, n-2)
	}
}
