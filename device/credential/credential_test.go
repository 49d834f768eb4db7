package credential

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
)

func newSigner(t testing.TB) *device.KeySigner {
	t.Helper()
	k, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return device.NewKeySigner(k)
}

func TestParseConnect(t *testing.T) {
	good := "ea1.1764064800.0123456789abcdef.MEUCIQ=="
	cases := []struct {
		name, pw string
		ok       bool
	}{
		{"good", good, true},
		{"long nonce", "ea1.1764064800." + strings.Repeat("a", 64) + ".MEUCIQ==", true},
		{"no prefix", "ea2.1764064800.0123456789abcdef.MEUCIQ==", false},
		{"three parts", "ea1.1764064800.0123456789abcdef", false},
		{"five parts", good + ".x", false},
		{"signed unix", "ea1.+1764064800.0123456789abcdef.MEUCIQ==", false},
		{"unix not number", "ea1.17640648x0.0123456789abcdef.MEUCIQ==", false},
		{"short nonce", "ea1.1764064800.0123456789abcde.MEUCIQ==", false},
		{"long nonce", "ea1.1764064800." + strings.Repeat("a", 65) + ".MEUCIQ==", false},
		{"upper nonce", "ea1.1764064800.0123456789ABCDEF.MEUCIQ==", false},
		{"sig not base64", "ea1.1764064800.0123456789abcdef.!!!", false},
		{"empty sig", "ea1.1764064800.0123456789abcdef.", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConnect(tc.pw)
			if (err == nil) != tc.ok {
				t.Fatalf("ParseConnect(%q) = %+v, %v; want ok=%v", tc.pw, c, err, tc.ok)
			}
			if tc.ok && (c.Unix != 1764064800 || len(c.Sig) == 0) {
				t.Fatalf("parsed %+v", c)
			}
		})
	}
}

func TestMakeConnectVerifies(t *testing.T) {
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s := device.NewKeySigner(priv)
	now := time.Unix(1764064800, 0)
	pw, err := MakeConnect(s, now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConnect(pw)
	if err != nil {
		t.Fatal(err)
	}
	if c.Unix != now.Unix() {
		t.Fatalf("unix = %d", c.Unix)
	}
	msg := ConnectMessage(s.DID(), c.Unix, c.Nonce)
	if want := "edgeanchor-connect-v1\n" + string(s.DID()) + "\n1764064800\n" + c.Nonce; string(msg) != want {
		t.Fatalf("message = %q, want %q", msg, want)
	}
	if !device.VerifySignature(s.Public(), msg, c.Sig) {
		t.Fatal("credential signature does not verify")
	}
}

// TestCredentialsWireForm reads both credentials by hand, the way
// docs/protocol.md describes them, not with this package's parsers.
func TestCredentialsWireForm(t *testing.T) {
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s := device.NewKeySigner(priv)
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	pw, err := MakeConnect(s, now)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(pw, ".")
	if len(parts) != 4 || parts[0] != "ea1" || parts[1] != strconv.FormatInt(now.Unix(), 10) || len(parts[2]) != 32 {
		t.Fatalf("password %q not ea1.{unix}.{nonce}.{sig}", pw)
	}
	sig, err := base64.StdEncoding.DecodeString(parts[3])
	if err != nil {
		t.Fatal(err)
	}
	msg := "edgeanchor-connect-v1\n" + string(s.DID()) + "\n" + parts[1] + "\n" + parts[2]
	if !device.VerifySignature(s.Public(), []byte(msg), sig) {
		t.Fatal("connect signature does not verify")
	}
	pw2, _ := MakeConnect(s, now)
	if strings.Split(pw2, ".")[2] == parts[2] {
		t.Fatal("nonce repeated between connects")
	}

	epw, err := MakeEnroll(s, strings.Repeat("e", 64), KindEnv, "site-a", now)
	if err != nil {
		t.Fatal(err)
	}
	ep := strings.Split(epw, ".")
	if len(ep) != 4 || ep[0] != "ea1-enroll" || ep[1] != strings.Repeat("e", 64) {
		t.Fatalf("enroll password %q", epw)
	}
	body, _ := base64.StdEncoding.DecodeString(ep[2])
	esig, _ := base64.StdEncoding.DecodeString(ep[3])
	if !device.VerifySignature(s.Public(), body, esig) {
		t.Fatal("registration signature does not verify")
	}
	var reg map[string]any
	if err := json.Unmarshal(body, &reg); err != nil {
		t.Fatal(err)
	}
	if reg["type"] != "DeviceRegistration" || reg["did"] != string(s.DID()) || reg["kind"] != "env" || reg["site"] != "site-a" || reg["ts"] != "2026-11-25T10:00:00Z" {
		t.Fatalf("registration body %s", body)
	}
	der, _ := base64.StdEncoding.DecodeString(reg["pub"].(string))
	pub, err := device.ParsePublicKeyDER(der)
	if err != nil || !s.DID().Matches(pub) {
		t.Fatalf("registration pub does not match the DID: %v", err)
	}
}

func TestParseRegistration(t *testing.T) {
	dev := newSigner(t)
	other := newSigner(t)
	der, _ := device.MarshalPublicKeyDER(dev.Public())
	good := DeviceRegistration{Type: TypeRegistration, V: 1, DID: dev.DID(), Pub: der, Kind: "survey", Site: "site-a", TS: "2026-11-25T10:00:00Z", Nonce: "0123456789abcdef"}
	raw, _ := json.Marshal(good)
	// The documented member order.
	want := `{"type":"DeviceRegistration","v":1,"did":"` + dev.DID().String() + `","pub":"` + base64.StdEncoding.EncodeToString(der) +
		`","kind":"survey","site":"site-a","ts":"2026-11-25T10:00:00Z","nonce":"0123456789abcdef"}`
	if string(raw) != want {
		t.Fatalf("registration encoding:\n got %s\nwant %s", raw, want)
	}
	r, pub, err := ParseRegistration(raw)
	if err != nil || r.Kind != "survey" || !r.DID.Matches(pub) {
		t.Fatalf("ParseRegistration = %+v, %v", r, err)
	}
	mut := func(f func(r *DeviceRegistration)) []byte {
		c := good
		f(&c)
		b, _ := json.Marshal(c)
		return b
	}
	bad := map[string][]byte{
		"did mismatch": mut(func(r *DeviceRegistration) { r.DID = other.DID() }),
		"kind":         mut(func(r *DeviceRegistration) { r.Kind = "payroll.wage" }),
		"version":      mut(func(r *DeviceRegistration) { r.V = 2 }),
		"type":         mut(func(r *DeviceRegistration) { r.Type = "RegisterDevice" }),
		"no site":      mut(func(r *DeviceRegistration) { r.Site = "" }),
		"short nonce":  mut(func(r *DeviceRegistration) { r.Nonce = "abc" }),
		"upper nonce":  mut(func(r *DeviceRegistration) { r.Nonce = "0123456789ABCDEF" }),
		"ts":           mut(func(r *DeviceRegistration) { r.TS = "yesterday" }),
		"not json":     []byte("nope"),
	}
	for name, in := range bad {
		t.Run(name, func(t *testing.T) {
			if _, _, err := ParseRegistration(in); !errors.Is(err, ErrMalformedRegistration) {
				t.Fatalf("error = %v, want ErrMalformedRegistration", err)
			}
		})
	}
	if _, err := NewRegistration(dev.Public(), "robot", "s", time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), ""); !errors.Is(err, ErrMalformedRegistration) {
		t.Fatalf("NewRegistration with a bad kind: %v", err)
	}
}

func FuzzParseCredential(f *testing.F) {
	f.Add("ea1.1764064800.0123456789abcdef.MEUCIQ==")
	f.Add("ea1..." + strings.Repeat("a", 70))
	f.Add("ea1-enroll.x.y.z")
	f.Fuzz(func(t *testing.T, pw string) {
		c, err := ParseConnect(pw)
		if err != nil {
			return
		}
		// Whatever parses has the documented shape.
		if len(c.Nonce) < 16 || len(c.Nonce) > 64 || len(c.Sig) == 0 || c.Unix < 0 {
			t.Fatalf("parsed %q into %+v", pw, c)
		}
	})
}

// FuzzParseEnroll: any password either parses into a token of
// lowercase hex and non-empty registration and signature that re-encode to
// the same password, or is refused; it never panics.
func FuzzParseEnroll(f *testing.F) {
	priv, err := newFuzzKey()
	if err != nil {
		f.Fatal(err)
	}
	good, err := MakeEnroll(priv, strings.Repeat("ab", 32), "env", "site-a", time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{good, "ea1-enroll.", "ea1-enroll....", "ea1-enroll.00.AA==.AA==", "ea1.1.00.AA", good + ".x",
		strings.Replace(good, "ea1-enroll.ab", "ea1-enroll.AB", 1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, pw string) {
		c, err := ParseEnroll(pw)
		if err != nil {
			return
		}
		if len(c.Registration) == 0 || len(c.Sig) == 0 || strings.Trim(c.Token, "0123456789abcdef") != "" {
			t.Fatalf("accepted %q as %+v", pw, c)
		}
		re := "ea1-enroll." + c.Token + "." + base64.StdEncoding.EncodeToString(c.Registration) + "." + base64.StdEncoding.EncodeToString(c.Sig)
		if re != pw {
			t.Fatalf("parse of %q re-encodes as %q", pw, re)
		}
	})
}

func newFuzzKey() (*device.KeySigner, error) {
	priv, err := device.GenerateKey()
	if err != nil {
		return nil, err
	}
	return device.NewKeySigner(priv), nil
}
