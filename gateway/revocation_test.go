package gateway

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
	"github.com/edgeanchor/edgeanchor/gateway/identity"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// registerDevices registers n new env devices of the gateway under test on
// the ledger, concurrently (they commit in one or two blocks).
func registerDevices(t *testing.T, env *ledgertest.Member, n int) []*device.KeySigner {
	t.Helper()
	devs := make([]*device.KeySigner, n)
	txs := make([][]byte, n)
	for i := range devs {
		devs[i], txs[i] = env.Gateway.NewDevice(t, "env")
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range txs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			_, errs[i] = env.Client.Submit(ctx, txs[i])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("register device: %v", err)
		}
	}
	return devs
}

// A RevokeDevice committed on the ledger (signed by a regulator) cuts the
// connected device off within 5 s, its next CONNECT is refused as revoked,
// and a device that was not revoked carries on.
func TestRevocationCutsDeviceOff(t *testing.T) {
	t.Parallel()
	env := ledgertest.StartMember(t, "site-a")
	devs := registerDevices(t, env, 2)
	victim, bystander := devs[0], devs[1]
	g := startGatewayProc(t, env, "")

	lost := make(chan time.Time, 1)
	vc, err := e2eConnect(g.mqtt, victim, func() { lost <- time.Now() })
	if err != nil {
		t.Fatalf("victim connect: %v", err)
	}
	defer vc.Disconnect(0)
	bc, err := e2eConnect(g.mqtt, bystander, nil)
	if err != nil {
		t.Fatalf("bystander connect: %v", err)
	}
	defer bc.Disconnect(0)
	if tok := vc.Publish("ea/v1/dev/"+string(victim.DID())+"/up", 1, false, e2eEnvelope(t, victim, 1)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("victim publish before revocation: %v", tok.Error())
	}

	submitted := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := env.Client.Submit(ctx, ledgertest.RevokeDeviceTx(t, env.Node.Regulator, victim.DID(), "stolen"))
	if err != nil {
		t.Fatalf("revoke: %v", err)
	}
	committed := time.Now()
	select {
	case at := <-lost:
		sinceCommit := at.Sub(committed)
		t.Logf("revocation at height %d: submit→commit seen %s, commit→disconnect %s, submit→disconnect %s",
			r.Height, committed.Sub(submitted).Round(time.Millisecond), sinceCommit.Round(time.Millisecond),
			at.Sub(submitted).Round(time.Millisecond))
		if sinceCommit > 5*time.Second {
			t.Fatalf("device disconnected %s after the revocation committed, want ≤ 5 s", sinceCommit)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("revoked device still connected 5 s after the revocation committed")
	}

	_, err = e2eConnect(g.mqtt, victim, nil)
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "not authorized") {
		t.Fatalf("reconnect of the revoked device: %v, want not authorized", err)
	}
	if v := g.metric(`edgeanchor_auth_failures_total{reason="revoked"}`); v != 1 {
		t.Fatalf(`auth_failures_total{reason="revoked"} = %v, want 1`, v)
	}
	// Enrolling again does not bring it back either.
	pw, err := credential.MakeEnroll(victim, strings.Repeat("a", 64), "env", "site-a", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e2eConnectPassword(g.mqtt, victim.DID(), pw); err == nil {
		t.Fatal("revoked device re-enrolled")
	}
	if n := len(g.deviceRecords(victim.DID())); n != 1 {
		t.Fatalf("revoked device has %d records, want the 1 from before", n)
	}

	if !bc.IsConnectionOpen() {
		t.Fatal("bystander lost its connection")
	}
	if tok := bc.Publish("ea/v1/dev/"+string(bystander.DID())+"/up", 1, false, e2eEnvelope(t, bystander, 1)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("bystander publish after the revocation: %v", tok.Error())
	}
	if n := len(g.deviceRecords(bystander.DID())); n != 1 {
		t.Fatalf("bystander has %d records, want 1", n)
	}
}

// While the ledger is down the gateway keeps its identity cache: /readyz
// reports the ledger as degraded (200, within 100 ms), and known devices still connect and publish (the
// retry-and-resume side is TestCacheSurvivesOutage).
func TestIdentitySurvivesLedgerOutage(t *testing.T) {
	t.Parallel()
	env := ledgertest.StartMember(t, "site-a")
	devs := registerDevices(t, env, 1)
	a := devs[0]
	g := startGatewayProc(t, env, "")

	env.Node.Stop()
	// Ledger down while ingest is healthy: degraded, still 200 for devices,
	// the ledger named, answered from the background state at once.
	waitFor(t, 20*time.Second, "/readyz to report the ledger down", func() bool {
		code, body := g.get("/readyz")
		return code == 200 && strings.Contains(string(body), `"status": "degraded"`) &&
			strings.Contains(string(body), `"ledger": "unreachable`)
	})
	var took []time.Duration
	for range 11 {
		start := time.Now()
		if code, body := g.get("/readyz"); code != 200 || !strings.Contains(string(body), `"ledger": "unreachable`) {
			t.Fatalf("/readyz during the outage: %d %s", code, body)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	if median, worst := took[len(took)/2], took[len(took)-1]; median >= 100*time.Millisecond || worst >= time.Second {
		t.Fatalf("/readyz with the ledger stopped took median %s, slowest %s; want < 100ms and < 1s", median, worst)
	}
	t.Logf("/readyz with the ledger stopped: median %s, slowest %s of %d", took[len(took)/2], took[len(took)-1], len(took))
	c, err := e2eConnect(g.mqtt, a, nil)
	if err != nil {
		t.Fatalf("known device during the outage: %v", err)
	}
	defer c.Disconnect(0)
	if tok := c.Publish("ea/v1/dev/"+string(a.DID())+"/up", 1, false, e2eEnvelope(t, a, 1)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish during the outage: %v", tok.Error())
	}
	if n := len(g.deviceRecords(a.DID())); n != 1 {
		t.Fatalf("device has %d records, want 1", n)
	}
	// An unknown device cannot enroll meanwhile: the ledger is needed.
	ts, err := identity.OpenTokenStore(g.dataDir())
	if err != nil {
		t.Fatal(err)
	}
	toks, _, err := ts.Create(identity.TokenRequest{Site: "site-a", Kind: "env", Count: 1, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := device.GenerateKey()
	newDev := device.NewKeySigner(priv)
	pw, err := credential.MakeEnroll(newDev, toks[0], "env", "site-a", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	before := g.metric(`edgeanchor_enrollments_total{result="ledger_unavailable"}`)
	if _, err := e2eConnectPassword(g.mqtt, newDev.DID(), pw); err == nil {
		t.Fatal("enrolled while the ledger is down")
	}
	if after := g.metric(`edgeanchor_enrollments_total{result="ledger_unavailable"}`); after != before+1 {
		t.Fatalf(`enrollments{result="ledger_unavailable"} %v -> %v, want +1`, before, after)
	}
}
