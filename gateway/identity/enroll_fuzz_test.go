package identity

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
)

// FuzzParseEnrollCredential: any password either parses into a token of
// lowercase hex and non-empty registration and signature that re-encode to
// the same password, or is refused; it never panics.
func FuzzParseEnrollCredential(f *testing.F) {
	priv, err := newFuzzKey()
	if err != nil {
		f.Fatal(err)
	}
	good, err := MakeEnrollCredential(priv, strings.Repeat("ab", 32), "env", "site-a", time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{good, "ea1-enroll.", "ea1-enroll....", "ea1-enroll.00.AA==.AA==", "ea1.1.00.AA", good + ".x",
		strings.Replace(good, "ea1-enroll.ab", "ea1-enroll.AB", 1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, pw string) {
		c, err := ParseEnrollCredential(pw)
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
