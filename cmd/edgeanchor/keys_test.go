package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
)

// devRun runs the real edgeanchor binary in dir with stdin and returns
// stdout, stderr and the exit code.
func devRun(t *testing.T, dir string, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(testbin.Path(t, "./cmd/edgeanchor"), args...)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("edgeanchor %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

// devMustRun is devRun that fails the test unless the exit code is 0.
func devMustRun(t *testing.T, dir string, stdin []byte, args ...string) string {
	t.Helper()
	out, errOut, code := devRun(t, dir, stdin, args...)
	if code != 0 {
		t.Fatalf("edgeanchor %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

func devOpenSSL(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl 3 is required (.ci/run installs it): %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %v: %v", args, err)
	}
	return out
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	out := devMustRun(t, dir, nil, "keygen", "--out", "keys/gate-7.pem")
	did, err := device.ParseDID(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("keygen printed %q: %v", out, err)
	}
	keyPath, pubPath := filepath.Join(dir, "keys", "gate-7.pem"), filepath.Join(dir, "keys", "gate-7.pub.pem")
	st, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v, want 0600", st.Mode().Perm())
	}
	s, err := device.LoadKeySigner(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := device.ReadPublicKeyFile(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	if s.DID() != did || device.DIDFromPublicKey(pub) != did {
		t.Fatalf("printed %s, key %s, public key %s", did, s.DID(), device.DIDFromPublicKey(pub))
	}
	// openssl reads both files.
	devOpenSSL(t, dir, "pkey", "-in", keyPath, "-check", "-noout")
	devOpenSSL(t, dir, "pkey", "-pubin", "-in", pubPath, "-noout")

	// `did` agrees with keygen, and with the openssl pipeline of docs/envelope.md.
	if got := strings.TrimSpace(devMustRun(t, dir, nil, "did", "--pub", pubPath)); got != string(did) {
		t.Fatalf("did --pub = %s, keygen printed %s", got, did)
	}

	// A second keygen to the same name refuses and changes nothing.
	before, _ := os.ReadFile(keyPath)
	_, errOut, code := devRun(t, dir, nil, "keygen", "--out", "keys/gate-7.pem")
	if code != 1 || !strings.Contains(errOut, "refusing to overwrite") {
		t.Fatalf("second keygen: exit %d, stderr %q", code, errOut)
	}
	after, _ := os.ReadFile(keyPath)
	if !bytes.Equal(before, after) {
		t.Fatal("second keygen changed the key")
	}

	// An existing public key file alone also blocks, before a private key is made.
	if err := os.WriteFile(filepath.Join(dir, "other.pub.pem"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, code := devRun(t, dir, nil, "keygen", "--out", "other.pem"); code != 1 {
		t.Fatalf("keygen over an existing .pub.pem: exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(dir, "other.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("keygen left other.pem behind: %v", err)
	}

	// Usage errors exit 2.
	for _, args := range [][]string{{"keygen"}, {"keygen", "--out", "a.pem", "extra"}, {"keygen", "--nope"}, {"did"}} {
		if _, _, code := devRun(t, dir, nil, args...); code != 2 {
			t.Errorf("edgeanchor %v: exit %d, want 2", args, code)
		}
	}
}

func TestDIDOfOpenSSLKey(t *testing.T) {
	dir := t.TempDir()
	devOpenSSL(t, dir, "genpkey", "-algorithm", "SM2", "-out", "k.pem")
	devOpenSSL(t, dir, "pkey", "-in", "k.pem", "-pubout", "-out", "k.pub.pem")
	der := devOpenSSL(t, dir, "pkey", "-in", "k.pem", "-pubout", "-outform", "DER")
	cmd := exec.Command("openssl", "dgst", "-sm3", "-r")
	cmd.Stdin = bytes.NewReader(der[len(der)-65:])
	sum, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "did:ea:" + string(sum[:32])
	if got := strings.TrimSpace(devMustRun(t, dir, nil, "did", "--pub", "k.pub.pem")); got != want {
		t.Fatalf("did --pub = %s, openssl pipeline gives %s", got, want)
	}
	// A private key file is not a public key: exit 1; a missing file is an
	// I/O error: exit 2.
	for f, want := range map[string]int{"k.pem": 1, "missing.pem": 2} {
		if _, errOut, code := devRun(t, dir, nil, "did", "--pub", f); code != want || errOut == "" {
			t.Errorf("did --pub %s: exit %d (want %d), stderr %q", f, code, want, errOut)
		}
	}
}
