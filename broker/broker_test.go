package broker

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
	"github.com/edgeanchor/edgeanchor/device/refusal"
)

func TestNonceCache(t *testing.T) {
	var c nonceCache
	now := time.Unix(1000, 0)
	w := 120 * time.Second
	if !c.use("did:a", "n1", now, w) {
		t.Fatal("fresh nonce refused")
	}
	if c.use("did:a", "n1", now.Add(time.Second), w) {
		t.Fatal("nonce accepted twice")
	}
	if !c.use("did:b", "n1", now, w) {
		t.Fatal("same nonce of another device refused")
	}
	if !c.use("did:a", "n1", now.Add(3*w), w) {
		t.Fatal("nonce still remembered after two windows")
	}
}

func TestFilterWithin(t *testing.T) {
	cases := []struct {
		filter, pattern string
		want            bool
	}{
		{"ea/v1/site/a/records/env.dust", "ea/v1/site/a/records/#", true},
		{"ea/v1/site/a/records/#", "ea/v1/site/a/records/#", true},
		{"ea/v1/site/a/records", "ea/v1/site/a/records/#", true},
		{"ea/v1/site/a/records/+", "ea/v1/site/a/records/+", true},
		{"ea/v1/site/a/records/+", "ea/v1/site/+/records/+", true},
		{"ea/v1/site/+/records/x", "ea/v1/site/a/records/+", false},
		{"ea/v1/site/a/#", "ea/v1/site/a/records/#", false},
		{"#", "ea/v1/site/a/records/#", false},
		{"ea/v1/site/a/records/x/y", "ea/v1/site/a/records/+", false},
		{"ea/v1/site/b/records/x", "ea/v1/site/a/records/#", false},
		{"$share/g/ea/v1/site/a/records/x", "ea/v1/site/a/records/#", false},
	}
	for _, tc := range cases {
		if got := filterWithin(tc.filter, tc.pattern); got != tc.want {
			t.Errorf("filterWithin(%q, %q) = %v, want %v", tc.filter, tc.pattern, got, tc.want)
		}
	}
}

func TestValidateAccountPattern(t *testing.T) {
	for p, ok := range map[string]bool{
		"ea/v1/site/a/records/#": true, "ea/v1/site/+/records/+": true,
		"ea/v1/dev/+/up": false, "#": false, "ea/v1/site/": false, "ea/v1/site/a/#/x": false, "ea/v1/site/a+": false,
	} {
		if err := ValidateAccountPattern(p); (err == nil) != ok {
			t.Errorf("ValidateAccountPattern(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}

func TestRateLimiter(t *testing.T) {
	l := newRateLimiter(10, 2)
	now := time.Unix(0, 0)
	for i := 0; i < 2; i++ {
		if !l.allow("d", now) {
			t.Fatalf("message %d of the burst refused", i+1)
		}
	}
	if l.allow("d", now) {
		t.Fatal("third message in the same instant allowed")
	}
	if !l.allow("other", now) {
		t.Fatal("buckets are not per device")
	}
	if !l.allow("d", now.Add(100*time.Millisecond)) {
		t.Fatal("token not refilled after 1/rate")
	}
	if newRateLimiter(0, 0).allow("d", now) != true {
		t.Fatal("rate 0 must mean unlimited")
	}
}

// funcIngester is a test double of Ingester: a struct of function fields.
// ingest runs at write time (inside wait), like the store's writer.
type funcIngester struct {
	ingest func(ctx context.Context, dev DeviceInfo, payload []byte) (Accepted, error)
}

func (f funcIngester) Ingest(ctx context.Context, dev DeviceInfo, payload []byte) (func() (Accepted, error), error) {
	return func() (Accepted, error) { return f.ingest(ctx, dev, payload) }, nil
}

type testBroker struct {
	b   *Broker
	reg *StaticRegistry
}

func startBroker(t *testing.T, opts Options) *testBroker {
	t.Helper()
	if opts.Registry == nil {
		opts.Registry = NewStaticRegistry()
	}
	opts.Site = "site-a"
	opts.TCPAddr = "127.0.0.1:0"
	opts.Registerer = prometheus.NewRegistry()
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return &testBroker{b: b, reg: opts.Registry.(*StaticRegistry)}
}

func (tb *testBroker) device(t *testing.T) *device.KeySigner {
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s := device.NewKeySigner(priv)
	tb.reg.Put(DeviceInfo{DID: s.DID(), Pub: s.Public(), Kind: "env", Site: "site-a"})
	return s
}

func (tb *testBroker) connect5(t *testing.T, s *device.KeySigner) *paho5.Client {
	t.Helper()
	conn, err := net.Dial("tcp", tb.b.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	c := paho5.NewClient(paho5.ClientConfig{Conn: conn})
	pw, err := credential.MakeConnect(s, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho5.Connect{ClientID: string(s.DID()), Username: string(s.DID()), UsernameFlag: true,
		Password: []byte(pw), PasswordFlag: true, KeepAlive: 30, CleanStart: true}); err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho5.Disconnect{}) })
	return c
}

func pub(c *paho5.Client, did device.DID, qos byte) (*paho5.PublishResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Publish(ctx, &paho5.Publish{Topic: UpTopic(did), QoS: qos, Payload: []byte("x")})
}

// TestInFlightLimit: with MaxInFlight 1, a publish arriving while another is
// inside Ingest is refused with quota exceeded and never reaches Ingest.
func TestInFlightLimit(t *testing.T) {
	entered := make(chan struct{}, 4)
	release := make(chan struct{})
	var calls sync.WaitGroup
	tb := startBroker(t, Options{MaxInFlight: 1, Ingester: funcIngester{func(ctx context.Context, dev DeviceInfo, p []byte) (Accepted, error) {
		calls.Add(1)
		defer calls.Done()
		entered <- struct{}{}
		<-release
		return Accepted{Kind: "env.dust", Receipt: func() []byte { return []byte("{}") }}, nil
	}}})
	a, b := tb.device(t), tb.device(t)
	ca, cb := tb.connect5(t, a), tb.connect5(t, b)
	first := make(chan error, 1)
	go func() { _, err := pub(ca, a.DID(), 1); first <- err }()
	<-entered
	pr, _ := pub(cb, b.DID(), 1)
	if pr == nil || pr.ReasonCode != 0x97 {
		t.Fatalf("second publish: %+v, want reason 0x97", pr)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first publish: %v", err)
	}
	if got := testutil.ToFloat64(tb.b.Metrics().Refused.WithLabelValues(refusal.InFlightExceeded, "")); got != 1 {
		t.Fatalf("refused{inflight_exceeded} = %v", got)
	}
	if len(entered) != 0 {
		t.Fatal("the refused publish reached Ingest")
	}
}

// TestRevokedAtPublish: a device revoked after it connected has its next
// publish refused even before the sweep disconnects it.
func TestRevokedAtPublish(t *testing.T) {
	var n int
	var mu sync.Mutex
	tb := startBroker(t, Options{RevocationSweep: time.Hour, Ingester: funcIngester{func(context.Context, DeviceInfo, []byte) (Accepted, error) {
		mu.Lock()
		n++
		mu.Unlock()
		return Accepted{Kind: "env.dust", Receipt: func() []byte { return []byte("{}") }}, nil
	}}})
	d := tb.device(t)
	c := tb.connect5(t, d)
	if pr, err := pub(c, d.DID(), 1); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("publish before revocation: %+v %v", pr, err)
	}
	tb.reg.Revoke(d.DID())
	pr, _ := pub(c, d.DID(), 1)
	if pr == nil || pr.ReasonCode != 0x87 {
		t.Fatalf("publish after revocation: %+v, want 0x87", pr)
	}
	if pr.Properties == nil || pr.Properties.ReasonString != refusal.Revoked {
		t.Fatalf("reason string = %+v, want %q", pr.Properties, refusal.Revoked)
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 1 {
		t.Fatalf("Ingest called %d times, want 1", n)
	}
	if !tb.b.DisconnectDevice(d.DID(), "test") {
		t.Fatal("DisconnectDevice found no session")
	}
}

// TestQoS2RefusalIsPubrec: a refused QoS 2 publish is answered with a PUBREC
// carrying the reason code (mochi alone would send a PUBACK).
func TestQoS2RefusalIsPubrec(t *testing.T) {
	tb := startBroker(t, Options{Ingester: funcIngester{func(context.Context, DeviceInfo, []byte) (Accepted, error) {
		return Accepted{}, &Refusal{Reason: "signature", Kind: "env.dust", Err: errors.New("bad")}
	}}})
	d := tb.device(t)
	c := tb.connect5(t, d)
	pr, err := pub(c, d.DID(), 2)
	if err != nil && pr == nil {
		t.Fatalf("publish: %v", err)
	}
	if pr == nil || pr.ReasonCode != 0x87 {
		t.Fatalf("QoS 2 refusal: %+v, want PUBREC 0x87", pr)
	}
	if got := testutil.ToFloat64(tb.b.Metrics().Refused.WithLabelValues("signature", "env.dust")); got != 1 {
		t.Fatalf("refused{signature} = %v", got)
	}
}
