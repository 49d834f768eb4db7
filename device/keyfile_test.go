package device

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeanchor/edgeanchor/device/refusal"
)

// A private key file its group or others can read is refused, as ssh does,
// naming the file and the chmod that fixes it; 0600 and 0400 are read, and
// so is a file systemd hands in under $CREDENTIALS_DIRECTORY.
func TestReadPrivateKeyFileMode(t *testing.T) {
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kp := filepath.Join(dir, "dev.pem")
	if err := WritePrivateKeyFile(kp, priv); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		if err := os.Chmod(kp, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadPrivateKeyFile(kp); err != nil {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(kp, mode); err != nil {
			t.Fatal(err)
		}
		_, err := ReadPrivateKeyFile(kp)
		if !errors.Is(err, ErrKeyFileMode) || !strings.Contains(err.Error(), "chmod 600 "+kp) {
			t.Errorf("mode %04o: %v, want ErrKeyFileMode naming chmod 600 %s", mode, err, kp)
		}
		if _, err := LoadKeySigner(kp); !errors.Is(err, ErrKeyFileMode) {
			t.Errorf("LoadKeySigner, mode %04o: %v", mode, err)
		}
	}
	// systemd's credentials directory: access is systemd's (an ACL may
	// show as group bits), so the mode is not held against the key.
	if err := os.Chmod(kp, 0o440); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	if _, err := ReadPrivateKeyFile(kp); err != nil {
		t.Errorf("key in $CREDENTIALS_DIRECTORY: %v", err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", filepath.Join(dir, "elsewhere"))
	if _, err := ReadPrivateKeyFile(kp); !errors.Is(err, ErrKeyFileMode) {
		t.Errorf("key outside $CREDENTIALS_DIRECTORY: %v", err)
	}
}

// Every reason Reason gives for an envelope error is a Publish reason of
// the refusal table, so it has its MQTT 5 code and its series at 0.
func TestReasonsInRefusalTable(t *testing.T) {
	for _, err := range []error{ErrMalformed, ErrVersion, ErrAlgorithm, ErrTooLarge, ErrTimestamp,
		ErrDIDMismatch, ErrSignature, &FieldError{Kind: "k", Field: "f", Reason: "r"}} {
		if _, ok := refusal.Lookup(refusal.Publish, Reason(err)); !ok {
			t.Errorf("Reason(%v) = %q is not a Publish reason of device/refusal", err, Reason(err))
		}
	}
}
