package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm3"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/identity"
	"github.com/edgeanchor/edgeanchor/gateway/store"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// lookTool finds a CLI the interop tests need; a missing one fails the test
// (.ci/run installs openssl and Debian's mosquitto-clients).
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required (apt-get install mosquitto-clients openssl; .ci/run does): %v", name, err)
	}
	return p
}

// opensslDevice runs testdata/openssl-device.sh in dir: an SM2 key made by
// openssl, its DID, an enrollment credential (if token is set), a connect
// credential and a signed envelope with seq.
func opensslDevice(t *testing.T, dir, token string, seq int) (did device.DID) {
	t.Helper()
	lookTool(t, "openssl")
	script, err := filepath.Abs("testdata/openssl-device.sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", script)
	cmd.Env = append(os.Environ(), "DIR="+dir, "SITE=site-a", "KIND=env", "TOKEN="+token, "SEQ="+strconv.Itoa(seq))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl-device.sh: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "did"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := device.ParseDID(string(b))
	if err != nil {
		t.Fatalf("openssl-made DID: %v", err)
	}
	return d
}

// mosquittoPub publishes dir/envelope.json at QoS 1 as did with the
// password in dir/pwFile, over MQTT version (mqttv5 or mqttv311).
func mosquittoPub(t *testing.T, g *gwProc, dir string, did device.DID, pwFile, version string) (string, error) {
	t.Helper()
	bin := lookTool(t, "mosquitto_pub")
	pw, err := os.ReadFile(filepath.Join(dir, pwFile))
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(g.mqtt, ":")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-h", host, "-p", port, "-V", version, "-i", string(did), "-u", string(did),
		"-P", string(pw), "-q", "1", "-t", "ea/v1/dev/"+string(did)+"/up", "-f", filepath.Join(dir, "envelope.json"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// createTokenCLI runs `edgeanchor token create` against the running
// gateway's config and returns the token.
func createTokenCLI(t *testing.T, g *gwProc, site, kind, ttl string) string {
	t.Helper()
	out, err := exec.Command(testbin.Path(t, "./cmd/edgeanchor"), "token", "create", "--config", g.config,
		"--site", site, "--kind", kind, "--count", "1", "--ttl", ttl).Output()
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	tok := strings.TrimSpace(string(out))
	if len(tok) != 64 {
		t.Fatalf("token create printed %q", out)
	}
	return tok
}

// createTokenAPI makes a token through the running gateway's admin API; a
// request without the bearer token is refused first.
func createTokenAPI(t *testing.T, g *gwProc, site, kind, ttl string) string {
	t.Helper()
	body := `{"site":"` + site + `","kind":"` + kind + `","count":1,"ttl":"` + ttl + `"}`
	post := func(bearer string) (int, []byte) {
		req, err := http.NewRequest("POST", "http://"+g.http+"/v1/admin/tokens", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, b := post(""); code != http.StatusUnauthorized {
		t.Fatalf("admin API without bearer: %d %s", code, b)
	}
	code, b := post(g.admin)
	if code != http.StatusCreated {
		t.Fatalf("admin API: %d %s", code, b)
	}
	var out struct{ Tokens []string }
	if err := json.Unmarshal(b, &out); err != nil || len(out.Tokens) != 1 {
		t.Fatalf("admin API answer %s: %v", b, err)
	}
	return out.Tokens[0]
}

// A device made with the openssl CLI alone enrolls and publishes through
// Debian's mosquitto_pub (MQTT 5 with the enrollment credential, then MQTT
// 3.1.1 with a connect credential); both records are stored with receipts
// that verify against the gateway's key, and the device is on the ledger.
func TestInteropOpensslMosquitto(t *testing.T) {
	t.Parallel()
	env := ledgertest.StartMember(t, "site-a")
	g := startGatewayProc(t, env, "")
	tok := createTokenCLI(t, g, "site-a", "env", "10m") // while the gateway runs

	dir := t.TempDir()
	did := opensslDevice(t, dir, tok, 1)
	if out, err := mosquittoPub(t, g, dir, did, "enroll.pw", "mqttv5"); err != nil {
		t.Fatalf("mosquitto_pub with the enrollment credential: %v\n%s", err, out)
	}
	env1, _ := os.ReadFile(filepath.Join(dir, "envelope.json"))
	opensslDevice(t, dir, "", 2) // same key: new connect credential, seq 2
	if out, err := mosquittoPub(t, g, dir, did, "connect.pw", "mqttv311"); err != nil {
		t.Fatalf("mosquitto_pub with the connect credential: %v\n%s", err, out)
	}
	env2, _ := os.ReadFile(filepath.Join(dir, "envelope.json"))

	recs := g.deviceRecords(did)
	if len(recs) != 2 {
		t.Fatalf("stored %d records of the openssl device, want 2", len(recs))
	}
	for i, want := range [][]byte{env1, env2} {
		r := recs[i]
		if r.Seq != uint64(i+1) || r.DID != did || r.Kind != device.KindDust {
			t.Fatalf("record %d: %+v", i, r)
		}
		msg, _ := json.Marshal(r.Receipt)
		rc, err := store.VerifyReceipt(msg, env.Gateway.Signer.Public())
		if err != nil {
			t.Fatalf("receipt of seq %d: %v", r.Seq, err)
		}
		sum := sm3.Sum(want)
		if rc.DID != did || rc.Seq != r.Seq || rc.GSeq != r.GSeq || rc.Env != anchor.Hash(sum) {
			t.Fatalf("receipt %+v does not match the envelope mosquitto_pub sent (SM3 %x)", rc, sum)
		}
		// The record is also served by gseq.
		code, b := g.get("/v1/records/" + strconv.FormatUint(r.GSeq, 10))
		if code != 200 || !strings.Contains(string(b), string(did)) {
			t.Fatalf("/v1/records/%d: %d %s", r.GSeq, code, b)
		}
	}
	rec, err := env.Client.Device(context.Background(), did)
	if err != nil || rec.Status != "active" || rec.Gateway != env.Gateway.DID() {
		t.Fatalf("ledger record of the openssl device: %+v %v", rec, err)
	}
	if v := g.metric(`edgeanchor_enrollments_total{result="ok"}`); v != 1 {
		t.Fatalf("enrollments ok = %v, want 1", v)
	}
	// The runtime settings of the config's defaults are in force.
	if os.Getenv("GOGC") == "" {
		if v := g.metric(`go_gc_gogc_percent`); v != float64(DefaultConfig().GCPercent) {
			t.Fatalf("go_gc_gogc_percent = %v, want gc_percent %d", v, DefaultConfig().GCPercent)
		}
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if v := g.metric(`go_gc_gomemlimit_bytes`); v != float64(DefaultConfig().MemoryLimitMB<<20) {
			t.Fatalf("go_gc_gomemlimit_bytes = %v, want memory_limit_mb %d MiB", v, DefaultConfig().MemoryLimitMB)
		}
	}
}

// Used, expired, wrong-site and wrong-kind tokens are refused at CONNECT
// with their reasons; nothing is registered on the ledger or stored.
func TestInteropTokenRefusals(t *testing.T) {
	t.Parallel()
	env := ledgertest.StartMember(t, "site-a")
	g := startGatewayProc(t, env, "")
	good := createTokenCLI(t, g, "site-a", "env", "10m")
	wrongSite := createTokenCLI(t, g, "site-b", "env", "10m")
	wrongKind := createTokenAPI(t, g, "site-a", "payroll", "10m")
	// An expired token, written to the running gateway's token store from
	// this process (the store is shared through its file lock).
	ts, err := identity.OpenTokenStore(g.dataDir())
	if err != nil {
		t.Fatal(err)
	}
	old, _, err := ts.Create(identity.TokenRequest{Site: "site-a", Kind: "env", Count: 1, TTL: time.Hour}, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}

	first := t.TempDir()
	firstDID := opensslDevice(t, first, good, 1)
	if out, err := mosquittoPub(t, g, first, firstDID, "enroll.pw", "mqttv5"); err != nil {
		t.Fatalf("first enrollment: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name, token, reason string
	}{
		{"used", good, "token_used"},
		{"expired", old[0], "token_expired"},
		{"wrong site", wrongSite, "token_wrong_site"},
		{"wrong kind", wrongKind, "token_wrong_kind"},
		{"unknown", strings.Repeat("0f", 32), "token_unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			did := opensslDevice(t, dir, tc.token, 1)
			before := g.metric(`edgeanchor_enrollments_total{result="` + tc.reason + `"}`)
			out, err := mosquittoPub(t, g, dir, did, "enroll.pw", "mqttv5")
			if err == nil {
				t.Fatalf("mosquitto_pub succeeded with a %s token:\n%s", tc.name, out)
			}
			if !strings.Contains(strings.ToLower(out), "not authori") {
				t.Fatalf("mosquitto_pub did not report not authorized:\n%s", out)
			}
			if after := g.metric(`edgeanchor_enrollments_total{result="` + tc.reason + `"}`); after != before+1 {
				t.Fatalf("enrollments{result=%q} went %v -> %v, want +1", tc.reason, before, after)
			}
			if _, err := env.Client.Device(context.Background(), did); !errors.Is(err, ledgerclient.ErrNotFound) {
				t.Fatalf("refused device is on the ledger (err %v)", err)
			}
			if recs := g.deviceRecords(did); len(recs) != 0 {
				t.Fatalf("refused device has %d stored records", len(recs))
			}
		})
	}
	if recs := g.deviceRecords(firstDID); len(recs) != 1 {
		t.Fatalf("first device has %d records, want 1", len(recs))
	}
}
