package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	pahopk "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

// selfSigned writes a certificate and key for 127.0.0.1 into dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gateway"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTLSAndWebSocketListeners: a device publishes through the TLS and the
// WebSocket listeners and both records are stored.
func TestTLSAndWebSocketListeners(t *testing.T) {
	cfg := itConfig(t)
	cert, key, pool := selfSigned(t, t.TempDir())
	cfg.MQTT = MQTTConfig{TLS: "127.0.0.1:0", TLSCert: cert, TLSKey: key, WS: testutil.FreeAddr(t)} // mochi's WebSocket listener cannot report a port 0 bind
	e := itStart(t, cfg, nil, nil)
	if e.g.Broker().Addr("tcp") != "" {
		t.Fatal("TCP listener on although its address is empty")
	}
	d := e.newDevice("env")
	for i, url := range []string{"ssl://" + e.g.Broker().Addr("tls"), "ws://" + e.g.Broker().Addr("ws")} {
		o := paho.NewClientOptions().AddBroker(url).SetClientID(string(d.did)).SetUsername(string(d.did)).
			SetPassword(d.credential(t)).SetAutoReconnect(false).SetProtocolVersion(4).
			SetTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: connect: %v", url, tok.Error())
		}
		seq := uint64(i + 1)
		if tok := c.Publish(broker.UpTopic(d.did), 1, false, d.envelope(t, seq)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: publish: %v", url, tok.Error())
		}
		c.Disconnect(0)
		if rec, err := e.g.Store().Get(seq); err != nil || rec.Seq != seq {
			t.Fatalf("%s: record %d: %+v %v", url, seq, rec, err)
		}
	}
}

// TestMaxConnections: a client beyond limits.max_connections is refused.
func TestMaxConnections(t *testing.T) {
	cfg := itConfig(t)
	cfg.Limits.MaxConnections = 1
	e := itStart(t, cfg, nil, nil)
	a, b := e.newDevice("env"), e.newDevice("env")
	if _, _, _, err := e.v3(a, a.credential(t)); err != nil {
		t.Fatal(err)
	}
	_, _, _, err := e.v3(b, b.credential(t))
	if !errors.Is(err, pahopk.ErrorRefusedServerUnavailable) {
		t.Fatalf("second connection: %v, want server unavailable", err)
	}
}
