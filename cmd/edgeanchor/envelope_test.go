package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
)

// devKey runs keygen in dir and returns the DID.
func devKey(t *testing.T, dir, name string) device.DID {
	t.Helper()
	return device.DID(strings.TrimSpace(devMustRun(t, dir, nil, "keygen", "--out", name)))
}

func devDustBody(did device.DID, seq int, pm25 string) string {
	return `{"did":"` + string(did) + `","seq":` + strconv.Itoa(seq) + `,"ts":"2026-11-25T10:00:00Z","kind":"env.dust","data":{"pm25_ugm3":` + pm25 + `,"pm10_ugm3":71,"noise_dba":62.5}}`
}

func devBodyOf(t *testing.T, env []byte) []byte {
	t.Helper()
	var e device.Envelope
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatalf("envelope %q: %v", env, err)
	}
	return e.Body
}

func TestEnvelopeSignVerify(t *testing.T) {
	dir := t.TempDir()
	did := devKey(t, dir, "dev.pem")
	body := devDustBody(did, 1, "35.2")
	if err := os.WriteFile(filepath.Join(dir, "body.json"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	env := devMustRun(t, dir, nil, "envelope", "sign", "--key", "dev.pem", "--body", "body.json")
	if strings.Count(env, "\n") != 1 || !strings.HasSuffix(env, "\n") {
		t.Fatalf("envelope is not one line: %q", env)
	}
	if got := devBodyOf(t, []byte(env)); string(got) != body {
		t.Fatalf("signed body %q, file %q", got, body)
	}
	// The library agrees.
	pub, err := device.ReadPublicKeyFile(filepath.Join(dir, "dev.pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := device.Verify([]byte(env), pub, 0); err != nil {
		t.Fatalf("device.Verify: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "env.json"), []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	want := "valid did=" + string(did) + " seq=1 kind=env.dust ts=2026-11-25T10:00:00Z\n"
	for name, args := range map[string][]string{
		"file":     {"envelope", "verify", "--pub", "dev.pub.pem", "env.json"},
		"dash":     {"envelope", "verify", "--pub", "dev.pub.pem", "-"},
		"no FILE":  {"envelope", "verify", "--pub", "dev.pub.pem"},
		"max-body": {"envelope", "verify", "--pub", "dev.pub.pem", "--max-body", strconv.Itoa(len(body)), "env.json"},
	} {
		if out := devMustRun(t, dir, []byte(env), args...); out != want {
			t.Errorf("%s: stdout %q, want %q", name, out, want)
		}
	}
	// --out writes the same kind of envelope; body from stdin.
	devMustRun(t, dir, []byte(devDustBody(did, 2, "40")), "envelope", "sign", "--key", "dev.pem", "--body", "-", "--out", "env2.json")
	out := devMustRun(t, dir, nil, "envelope", "verify", "--pub", "dev.pub.pem", "env2.json")
	if !strings.Contains(out, "seq=2") {
		t.Fatalf("verify env2: %q", out)
	}

	// Invalid: another key, a smaller limit, a changed byte.
	devKey(t, dir, "other.pem")
	for name, tc := range map[string]struct {
		args   []string
		stdin  string
		reason string
	}{
		"other key":   {[]string{"envelope", "verify", "--pub", "other.pub.pem", "env.json"}, "", "did_mismatch"},
		"limit":       {[]string{"envelope", "verify", "--pub", "dev.pub.pem", "--max-body", strconv.Itoa(len(body) - 1), "env.json"}, "", "too_large"},
		"tampered":    {[]string{"envelope", "verify", "--pub", "dev.pub.pem"}, strings.Replace(env, `"sig":"ME`, `"sig":"MF`, 1), "signature"},
		"not json":    {[]string{"envelope", "verify", "--pub", "dev.pub.pem"}, "hello\n", "malformed"},
		"empty stdin": {[]string{"envelope", "verify", "--pub", "dev.pub.pem"}, "", "malformed"},
	} {
		stdout, errOut, code := devRun(t, dir, []byte(tc.stdin), tc.args...)
		if code != 1 || !strings.Contains(errOut, "invalid: "+tc.reason+": ") || stdout != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 1 and reason %s", name, code, stdout, errOut, tc.reason)
		}
	}
	// Usage errors exit 2.
	for _, args := range [][]string{
		{"envelope", "verify", "env.json"},
		{"envelope", "verify", "--pub", "dev.pub.pem", "a", "b"},
		{"envelope", "verify", "--pub", "dev.pub.pem", "--max-body", "0", "env.json"},
		{"envelope", "sign", "--key", "dev.pem"},
		{"envelope", "sign", "--body", "body.json"},
		{"envelope", "sign", "--key", "dev.pem", "--body", "body.json", "--bogus"},
	} {
		if _, _, code := devRun(t, dir, nil, args...); code != 2 {
			t.Errorf("edgeanchor %v: exit %d, want 2", args, code)
		}
	}
	// A missing public key file is an I/O error: 2.
	if _, _, code := devRun(t, dir, nil, "envelope", "verify", "--pub", "nope.pem", "env.json"); code != 2 {
		t.Errorf("missing --pub file: exit %d, want 2", code)
	}
}

// A trailing newline is signed as part of the body and said on stderr;
// --trim-newline drops exactly one.
func TestEnvelopeSignTrailingNewline(t *testing.T) {
	dir := t.TempDir()
	did := devKey(t, dir, "dev.pem")
	body := devDustBody(did, 1, "35.2")
	for _, tc := range []struct {
		name, file, flag, want string
		note                   bool
	}{
		{"kept", body + "\n", "", body + "\n", true},
		{"trimmed", body + "\n", "--trim-newline", body, false},
		{"crlf trimmed", body + "\r\n", "--trim-newline", body, false},
		{"only one trimmed", body + "\n\n", "--trim-newline", body + "\n", false},
		{"none", body, "", body, false},
		{"none with flag", body, "--trim-newline", body, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(dir, "body.json"), []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"envelope", "sign", "--key", "dev.pem", "--body", "body.json"}
			if tc.flag != "" {
				args = append(args, tc.flag)
			}
			stdout, errOut, code := devRun(t, dir, nil, args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if got := string(devBodyOf(t, []byte(stdout))); got != tc.want {
				t.Fatalf("signed body %q, want %q", got, tc.want)
			}
			if hasNote := strings.Contains(errOut, "ends with a newline"); hasNote != tc.note {
				t.Fatalf("stderr %q: note shown = %v, want %v", errOut, hasNote, tc.note)
			}
			devMustRun(t, dir, []byte(stdout), "envelope", "verify", "--pub", "dev.pub.pem")
		})
	}
}

// sign checks the body as a gateway would and signs nothing it would refuse.
func TestEnvelopeSignRefuses(t *testing.T) {
	dir := t.TempDir()
	did := devKey(t, dir, "dev.pem")
	for _, tc := range []struct {
		name, body, reason string
	}{
		{"schema", devDustBody(did, 1, "5000"), `schema: schema env.dust: field "pm25_ugm3"`},
		{"unknown kind", strings.Replace(devDustBody(did, 1, "35.2"), "env.dust", "env.smoke", 1), "schema: "},
		{"other DID", devDustBody("did:ea:00112233445566778899aabbccddeeff", 1, "35.2"), "did_mismatch: "},
		{"timestamp", strings.Replace(devDustBody(did, 1, "35.2"), "10:00:00Z", "10:00:00+08:00", 1), "timestamp: "},
		{"seq 0", devDustBody(did, 0, "35.2"), "malformed: "},
		{"not JSON", "pm25=35.2", "malformed: "},
		{"duplicate", strings.Replace(devDustBody(did, 1, "35.2"), `"seq":1`, `"seq":1,"seq":2`, 1), "malformed: "},
		{"too large", devDustBody(did, 1, "35.2"+strings.Repeat(" ", device.DefaultMaxBody)), "too_large: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(dir, "body.json"), []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "env.json")
			stdout, errOut, code := devRun(t, dir, nil, "envelope", "sign", "--key", "dev.pem", "--body", "body.json", "--out", out)
			if code != 1 || !strings.Contains(errOut, "refusing to sign: "+tc.reason) || stdout != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 1 and %q", code, stdout, errOut, tc.reason)
			}
			if _, err := os.Stat(out); err == nil {
				t.Fatal("an envelope was written")
			}
		})
	}
}

// Every golden envelope gets its verdict from the CLI too.
func TestEnvelopeVerifyGolden(t *testing.T) {
	gdir, err := filepath.Abs("../../device/testdata/golden")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(gdir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Key   string `json:"key"`
		Cases []struct {
			File, Verdict string
		} `json:"cases"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Cases) < 20 {
		t.Fatalf("manifest has %d cases", len(m.Cases))
	}
	for _, c := range m.Cases {
		stdout, errOut, code := devRun(t, gdir, nil, "envelope", "verify", "--pub", m.Key, c.File)
		switch {
		case c.Verdict == "valid":
			if code != 0 || !strings.HasPrefix(stdout, "valid did=did:ea:") {
				t.Errorf("%s: exit %d, stdout %q, stderr %q; want valid", c.File, code, stdout, errOut)
			}
		case code != 1 || !strings.Contains(errOut, "invalid: "+c.Verdict+": "):
			t.Errorf("%s: exit %d, stderr %q; want exit 1 with reason %s", c.File, code, errOut, c.Verdict)
		}
	}
}

// docBlock returns the lines of the fenced block that opens with fence in
// docs/envelope.md.
func docBlock(t *testing.T, fence string) []string {
	t.Helper()
	f, err := os.Open("../../docs/envelope.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		lines []string
		in    bool
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !in && line == fence:
			in = true
		case in && line == "```":
			return lines
		case in:
			lines = append(lines, line)
		}
	}
	t.Fatalf("docs/envelope.md has no block %s ... ```", fence)
	return nil
}

// TestDocWorkedExample runs the worked example of docs/envelope.md with bash
// in an empty directory (edgeanchor on PATH) and checks its envelope.
func TestDocWorkedExample(t *testing.T) {
	script := strings.Join(docBlock(t, "```sh id=\"worked-example\""), "\n") + "\n"
	for _, must := range []string{"openssl genpkey -algorithm SM2", "openssl pkeyutl -sign -rawin -digest sm3", "base64 -w0", "edgeanchor envelope verify"} {
		if !strings.Contains(script, must) {
			t.Fatalf("worked example lost %q", must)
		}
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("openssl 3 is required (.ci/run installs it): %v", err)
	}
	dir := t.TempDir()
	bin := testbin.Path(t, "./cmd/edgeanchor")
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("worked example failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Signature Verified Successfully") || !strings.Contains(string(out), "valid did=did:ea:") {
		t.Fatalf("worked example output:\n%s", out)
	}

	env, err := os.ReadFile(filepath.Join(dir, "envelope.json"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := device.ReadPublicKeyFile(filepath.Join(dir, "device.pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	o, err := device.Verify(env, pub, 0)
	if err != nil {
		t.Fatalf("device.Verify of the worked example: %v", err)
	}
	if o.Body.DID != device.DIDFromPublicKey(pub) || o.Body.Seq != 1 || o.Body.Kind != device.KindDust {
		t.Fatalf("worked example body %+v", o.Body)
	}
	// The DID the shell printed first is the one our code derives.
	if first, _, _ := strings.Cut(string(out), "\n"); first != string(o.Body.DID) {
		t.Fatalf("shell DID %q, ours %s", first, o.Body.DID)
	}
	st, err := os.Stat(filepath.Join(dir, "device.pem"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("device.pem: %v %v", st.Mode(), err)
	}
}

// TestDocExampleBodies checks that docs/envelope.md shows one valid body per
// kind, each the body of the golden envelope of that kind.
func TestDocExampleBodies(t *testing.T) {
	lines := docBlock(t, "```json id=\"example-bodies\"")
	var kinds []string
	for _, line := range lines {
		var b device.Body
		if err := device.ParseBody([]byte(line), &b); err != nil {
			t.Fatalf("example body %s: %v", line, err)
		}
		if err := device.ValidateData(b.Kind, b.Data); err != nil {
			t.Fatalf("example body %s: %v", line, err)
		}
		var c bytes.Buffer
		if err := json.Compact(&c, []byte(line)); err != nil || c.String() != line {
			t.Fatalf("example body is not compact JSON: %s", line)
		}
		golden, err := os.ReadFile("../../device/testdata/golden/valid-" + b.Kind + ".env.json")
		if err != nil {
			t.Fatal(err)
		}
		if got := devBodyOf(t, golden); string(got) != line {
			t.Fatalf("doc body for %s\n%s\ndiffers from the golden body\n%s", b.Kind, line, got)
		}
		kinds = append(kinds, b.Kind)
	}
	slices.Sort(kinds)
	if !slices.Equal(kinds, device.Kinds()) {
		t.Fatalf("example bodies cover %v, kinds are %v", kinds, device.Kinds())
	}
}
