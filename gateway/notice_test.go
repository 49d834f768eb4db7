package gateway

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device/credential"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// A device with a persistent session that disconnects right after its
// PUBACK, before its batch is anchored, gets the anchor notice (the
// receipt's second message) when it returns; it can also fetch it over
// HTTP, identical to the one published. The notice used to be dropped in
// silence: the topic ACL refused a connection that had gone.
func TestAnchorNoticeReachesPersistentSession(t *testing.T) {
	e := anStart(t, 1, 300*time.Millisecond, 0)
	d := e.devs[0]
	d.c.Disconnect(0)
	did := d.key.DID()
	msgs := make(chan []byte, 16)
	connect := func() paho.Client {
		pw, err := credential.MakeConnect(d.key, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		o := paho.NewClientOptions().AddBroker("tcp://" + e.g.Broker().Addr("tcp")).SetClientID(string(did)).
			SetUsername(string(did)).SetPassword(pw).SetAutoReconnect(false).SetConnectRetry(false).
			SetCleanSession(false).SetProtocolVersion(4).
			SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { msgs <- m.Payload() })
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("connect: %v", tok.Error())
		}
		return c
	}
	c := connect()
	d.c = c
	if tok := c.Subscribe(broker.ReceiptTopic(did), 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if err := e.publish(d); err != nil {
		t.Fatal(err)
	}
	first := waitMsg(t, msgs)
	c.Disconnect(0)
	d.c = nil
	e.waitAnchored(30 * time.Second)

	code, fetched := e.get("/v1/devices/" + string(did) + "/records/1/receipt")
	if code != 200 {
		t.Fatalf("GET receipt: %d %s", code, fetched)
	}
	var fm store.ReceiptMessage
	if err := json.Unmarshal(fetched, &fm); err != nil || fm.Batch == 0 || fm.Height == 0 || fm.TX == "" {
		t.Fatalf("fetched receipt %s is not an anchor notice: %v", fetched, err)
	}
	if _, err := store.VerifyReceipt(fetched, e.g.Signer().Public()); err != nil {
		t.Fatalf("fetched receipt: %v", err)
	}

	c = connect()
	d.c = c
	var notice []byte
	for notice == nil {
		m := waitMsg(t, msgs)
		if bytes.Equal(m, first) {
			continue // the receipt, resent if its PUBACK did not reach the broker
		}
		notice = m
	}
	if !bytes.Equal(notice, fetched) {
		t.Fatalf("notice delivered on return:\n%s\nfetched over HTTP:\n%s", notice, fetched)
	}
	if got := testutil.ToFloat64(e.g.Broker().Metrics().ReceiptsDropped); got != 0 {
		t.Fatalf("receipts_dropped_total = %v", got)
	}
	for path, want := range map[string]int{"/records/2/receipt": 404, "/records/0/receipt": 400, "/records/x/receipt": 400} {
		if code, b := e.get("/v1/devices/" + string(did) + path); code != want {
			t.Fatalf("GET %s: %d %s, want %d", path, code, b, want)
		}
	}
	if code, _ := e.get("/v1/devices/did:ea:nothex/records/1/receipt"); code != 400 {
		t.Fatalf("malformed DID: %d, want 400", code)
	}
}
