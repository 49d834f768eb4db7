package evidence

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/types"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
)

// testdata/bundle.json (a record whose receipt is in a commit group of 3+
// records, with a path of 2+ hashes), bundle-other-device.json (gseq 1: the
// other device's seq 1, a commit group of one) and trust.json (the chain's
// genesis validator set) were made by the gateway's end-to-end test against
// a real single-validator CometBFT ledger; they are a copy of
// gateway/testdata/bundles, which that test writes with
//
//	EDGEANCHOR_UPDATE_GOLDEN=1 go test -run TestEndToEndBundleVerifiesOffline ./gateway
//
// and the gateway's TestGoldenBundleCopies keeps identical to this copy
// (`make golden` regenerates both).
// bundle-per-record.json and trust-per-record.json are the same test's
// output from before receipts were signed per commit group (commit
// e0fab0c): a receipt signed alone, which must still verify.

func loadGolden(t testing.TB, name string) *Bundle {
	t.Helper()
	b, err := ReadBundleFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func loadTrust(t testing.TB) *Trust {
	t.Helper()
	tr, err := ReadTrustFile("testdata/trust.json")
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestGoldenBundleVerifies(t *testing.T) {
	for _, name := range []string{"bundle.json", "bundle-other-device.json", "bundle-per-record.json"} {
		b := loadGolden(t, name)
		trust := loadTrust(t)
		if name == "bundle-per-record.json" {
			tr, err := ReadTrustFile("testdata/trust-per-record.json")
			if err != nil {
				t.Fatal(err)
			}
			trust = tr
			if b.Receipt.Group != nil || b.Receipt.Path != nil {
				t.Fatalf("%s is not a per-record receipt", name)
			}
		} else if g, err := anchor.ParseReceiptGroup(b.Receipt.Group); err != nil || (name == "bundle.json" && (g.Count < 3 || len(b.Receipt.Path) < 2)) {
			t.Fatalf("%s: receipt group %+v (%v), path %v", name, g, err, b.Receipt.Path)
		}
		var passed []string
		v, err := b.Verify(trust, func(step, detail string, err error) {
			if err != nil {
				t.Errorf("%s: step %s: %v", name, step, err)
			}
			if detail == "" {
				t.Errorf("%s: step %s has no detail", name, step)
			}
			passed = append(passed, step)
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(passed) != len(Steps)+1 || passed[0] != StepTrustFile {
			t.Fatalf("%s: ran %v, want %v", name, passed, Steps)
		}
		if v.Record != b.Record || v.AnchorHeight != b.Anchor.Height || v.Header.Count != b.Merkle.Size {
			t.Fatalf("%s: verified %+v", name, v)
		}
	}
}

// envelopeEdit re-encodes the bundle's envelope after f changed it.
func envelopeEdit(t testing.TB, b *Bundle, f func(e *device.Envelope)) {
	t.Helper()
	var e device.Envelope
	if err := json.Unmarshal(b.Envelope, &e); err != nil {
		t.Fatal(err)
	}
	f(&e)
	raw, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	b.Envelope = raw
}

func mustReplace(t testing.TB, s []byte, old, new string) []byte {
	t.Helper()
	if !bytes.Contains(s, []byte(old)) {
		t.Fatalf("%q not found in %s", old, s)
	}
	return bytes.Replace(s, []byte(old), []byte(new), 1)
}

func newKey(t testing.TB) *device.KeySigner {
	t.Helper()
	k, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return device.NewKeySigner(k)
}

func otherValidators() *types.ValidatorSet {
	return types.NewValidatorSet([]*types.Validator{types.NewValidator(ed25519.GenPrivKey().PubKey(), 10)})
}

// TestTamperedBundles changes one thing at a time and checks that verify
// fails at the step that covers it.
func TestTamperedBundles(t *testing.T) {
	trust := loadTrust(t)
	other := loadGolden(t, "bundle-other-device.json")
	cases := []struct {
		name   string
		tamper func(t *testing.T, b *Bundle)
		trust  func() *Trust
		step   string
	}{
		{"one byte of the body", func(t *testing.T, b *Bundle) {
			envelopeEdit(t, b, func(e *device.Envelope) { e.Body = mustReplace(t, e.Body, `"noise_dba":61.5`, `"noise_dba":61.6`) })
		}, nil, StepEnvelope},
		{"device signature", func(t *testing.T, b *Bundle) {
			envelopeEdit(t, b, func(e *device.Envelope) { e.Sig[len(e.Sig)-1] ^= 1 })
		}, nil, StepEnvelope},
		{"device key swapped for another registered device's", func(t *testing.T, b *Bundle) {
			b.Device = other.Device
		}, nil, StepEnvelope},
		{"device key swapped with a forged registration", func(t *testing.T, b *Bundle) {
			k := newKey(t)
			reg, err := credential.NewRegistration(k.Public(), credential.KindEnv, "site-a", time.Now(), "")
			if err != nil {
				t.Fatal(err)
			}
			rsig, _ := k.Sign(reg)
			body, err := anchor.NewRegisterDeviceBody(b.Gateway.DID, reg, rsig, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			// Only the gateway could sign it; the forger signs as the
			// gateway DID with its own key.
			sig, _ := k.Sign(body)
			b.Device.Tx = (&anchor.Tx{Body: body, Signer: b.Gateway.DID, Sig: sig}).Encode()
			envelopeEdit(t, b, func(e *device.Envelope) {
				e.Body = mustReplace(t, e.Body, string(b.Record.DID), string(k.DID()))
				e.Sig, _ = k.Sign(e.Body)
			})
			b.Record.DID = k.DID()
		}, nil, StepDeviceKey},
		{"registration tx proof of another tx", func(t *testing.T, b *Bundle) {
			b.Device.Proof = other.Anchor
		}, nil, StepDeviceKey},
		{"gateway key", func(t *testing.T, b *Bundle) {
			k := newKey(t)
			b.Gateway.Pub, _ = device.MarshalPublicKeyDER(k.Public())
			b.Gateway.DID = k.DID()
		}, nil, StepDeviceKey},
		{"receipt body", func(t *testing.T, b *Bundle) {
			b.Receipt.Body = mustReplace(t, b.Receipt.Body, fmt.Sprintf(`"gseq":%d`, b.Record.GSeq), fmt.Sprintf(`"gseq":%d`, b.Record.GSeq+1))
		}, nil, StepReceipt},
		{"receipt signature", func(t *testing.T, b *Bundle) { b.Receipt.Sig[len(b.Receipt.Sig)-1] ^= 1 }, nil, StepReceipt},
		{"receipt of another record", func(t *testing.T, b *Bundle) { b.Receipt = other.Receipt }, nil, StepReceipt},
		{"receipt path hash", func(t *testing.T, b *Bundle) { b.Receipt.Path[1][9] ^= 1 }, nil, StepReceipt},
		{"receipt path hash dropped", func(t *testing.T, b *Bundle) { b.Receipt.Path = b.Receipt.Path[1:] }, nil, StepReceipt},
		{"receipt path hash added", func(t *testing.T, b *Bundle) {
			b.Receipt.Path = append(b.Receipt.Path, b.Receipt.Path[0])
		}, nil, StepReceipt},
		{"receipt group count", func(t *testing.T, b *Bundle) {
			g, _ := anchor.ParseReceiptGroup(b.Receipt.Group)
			b.Receipt.Group = anchor.NewReceiptGroup(g.Gateway, g.First, g.Count+1, g.Root)
		}, nil, StepReceipt},
		{"receipt group first", func(t *testing.T, b *Bundle) {
			g, _ := anchor.ParseReceiptGroup(b.Receipt.Group)
			b.Receipt.Group = anchor.NewReceiptGroup(g.Gateway, g.First-1, g.Count, g.Root)
		}, nil, StepReceipt},
		{"receipt group root", func(t *testing.T, b *Bundle) {
			g, _ := anchor.ParseReceiptGroup(b.Receipt.Group)
			g.Root[31] ^= 1
			b.Receipt.Group = anchor.NewReceiptGroup(g.Gateway, g.First, g.Count, g.Root)
		}, nil, StepReceipt},
		{"receipt group of another record, signed", func(t *testing.T, b *Bundle) {
			b.Receipt.Group, b.Receipt.Sig = other.Receipt.Group, other.Receipt.Sig
		}, nil, StepReceipt},
		{"receipt group and path removed (per-record form)", func(t *testing.T, b *Bundle) {
			b.Receipt.Group, b.Receipt.Path = nil, nil
		}, nil, StepReceipt},
		{"salt length", func(t *testing.T, b *Bundle) { b.Salt = b.Salt[:8] }, nil, StepLeaf},
		{"salt byte", func(t *testing.T, b *Bundle) { b.Salt[0] ^= 1 }, nil, StepMerklePath},
		{"Merkle sibling", func(t *testing.T, b *Bundle) { b.Merkle.Path[1][7] ^= 1 }, nil, StepMerklePath},
		{"Merkle index", func(t *testing.T, b *Bundle) { b.Merkle.Index++ }, nil, StepMerklePath},
		{"Merkle size", func(t *testing.T, b *Bundle) { b.Merkle.Size++ }, nil, StepMerklePath},
		{"batch header root", func(t *testing.T, b *Bundle) {
			h, _ := anchor.ParseHeader(b.Batch.Body)
			h.Root[0] ^= 1
			b.Batch.Body = h.Encode()
		}, nil, StepMerklePath},
		{"batch header time window", func(t *testing.T, b *Bundle) {
			h, _ := anchor.ParseHeader(b.Batch.Body)
			h.To = h.To.Add(time.Second)
			b.Batch.Body = h.Encode()
		}, nil, StepHeaderSig},
		{"gateway signature", func(t *testing.T, b *Bundle) { b.Batch.Sig[len(b.Batch.Sig)-1] ^= 1 }, nil, StepHeaderSig},
		{"anchor tx byte", func(t *testing.T, b *Bundle) {
			b.Anchor.Tx = mustReplace(t, b.Anchor.Tx, `"sig":"M`, `"sig":"N`)
		}, nil, StepAnchorTx},
		{"anchor tx is another tx", func(t *testing.T, b *Bundle) { b.Anchor.Tx = other.Device.Tx }, nil, StepAnchorTx},
		{"block header", func(t *testing.T, b *Bundle) { b.Anchor.Header.AppHash[0] ^= 1 }, nil, StepAnchorBlock},
		{"block time", func(t *testing.T, b *Bundle) {
			b.Anchor.Header.Time = b.Anchor.Header.Time.Add(time.Second)
		}, nil, StepAnchorBlock},
		{"validator set", func(t *testing.T, b *Bundle) { b.Anchor.Validators = otherValidators() }, nil, StepAnchorBlock},
		{"commit signature", func(t *testing.T, b *Bundle) {
			b.Anchor.Header.Commit.Signatures[0].Signature[0] ^= 1
		}, nil, StepAnchorBlock},
		{"tx proof", func(t *testing.T, b *Bundle) { b.Anchor.TxProof.LeafHash[0] ^= 1 }, nil, StepAnchorBlock},
		{"next header", func(t *testing.T, b *Bundle) { b.Anchor.NextHeader.LastResultsHash[0] ^= 1 }, nil, StepAnchorBlock},
		{"result code", func(t *testing.T, b *Bundle) { b.Anchor.Result.Code = 7 }, nil, StepAnchorResult},
		{"result data", func(t *testing.T, b *Bundle) { b.Anchor.Result.GasUsed++ }, nil, StepAnchorResult},
		{"trust of another consortium", nil, func() *Trust {
			tr := *trust
			tr.Validators = otherValidators()
			return &tr
		}, StepTrustFile},
		{"trust with an invented validator of equal power", nil, func() *Trust {
			return trustWithInvented(t, trust)
		}, StepTrustFile},
		{"trust of another chain id", nil, func() *Trust {
			tr := *trust
			tr.ChainID = "another-chain"
			return &tr
		}, StepTrustFile},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := loadGolden(t, "bundle.json")
			tr := trust
			if tc.tamper != nil {
				tc.tamper(t, b)
			}
			if tc.trust != nil {
				tr = tc.trust()
			}
			var failed []string
			_, err := b.Verify(tr, func(step, _ string, err error) {
				if err != nil {
					failed = append(failed, step)
				}
			})
			var se *StepError
			if !errors.As(err, &se) || !errors.Is(err, ErrVerify) {
				t.Fatalf("Verify = %v, want a StepError", err)
			}
			if se.Step != tc.step {
				t.Fatalf("failed at %q (%v), want %q", se.Step, se.Err, tc.step)
			}
			if len(failed) != 1 || failed[0] != tc.step {
				t.Fatalf("report saw failures %v, want exactly [%s]", failed, tc.step)
			}
		})
	}
}

// TestBundleSurvivesJSONRoundTrip: a parsed bundle encodes to bytes that
// parse to the same bundle (stable encoding) and still verify.
func TestBundleSurvivesJSONRoundTrip(t *testing.T) {
	b := loadGolden(t, "bundle.json")
	once, err := b.Encode()
	if err != nil {
		t.Fatal(err)
	}
	b2, err := ParseBundle(once)
	if err != nil {
		t.Fatal(err)
	}
	twice, err := b2.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(once, twice) {
		t.Fatal("encoding is not stable across a parse")
	}
	if _, err := b2.Verify(loadTrust(t), nil); err != nil {
		t.Fatalf("re-parsed bundle: %v", err)
	}
}

// TestBundleReceiptJSON: "path" travels (possibly empty) with a group and
// not at all without one.
func TestBundleReceiptJSON(t *testing.T) {
	for _, tc := range []struct {
		r    BundleReceipt
		want string
	}{
		{BundleReceipt{Body: []byte("b"), Sig: []byte("s")}, `{"body":"Yg==","sig":"cw=="}`},
		{BundleReceipt{Body: []byte("b"), Group: []byte("g"), Sig: []byte("s")}, `{"body":"Yg==","group":"Zw==","path":[],"sig":"cw=="}`},
		{BundleReceipt{Body: []byte("b"), Group: []byte("g"), Path: []anchor.Hash{{0xab}}, Sig: []byte("s")},
			`{"body":"Yg==","group":"Zw==","path":["ab` + strings.Repeat("0", 62) + `"],"sig":"cw=="}`},
	} {
		got, err := json.Marshal(tc.r)
		if err != nil || string(got) != tc.want {
			t.Errorf("%s (%v), want %s", got, err, tc.want)
		}
	}
}

func TestParseBundleRejects(t *testing.T) {
	raw, err := os.ReadFile("testdata/bundle.json")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"empty":          nil,
		"not JSON":       []byte("hello"),
		"wrong type":     mustReplace(t, raw, `"type": "ProofBundle"`, `"type": "Other"`),
		"wrong version":  mustReplace(t, raw, `"v": 1,`, `"v": 2,`),
		"unknown member": mustReplace(t, raw, `"v": 1,`, `"v": 1, "extra": 1,`),
		"duplicate":      mustReplace(t, raw, `"v": 1,`, `"v": 1, "V": 1,`),
		"no anchor":      mustReplace(t, raw, `"anchor": {`, `"anchor": null, "x": {`),
		"trailing":       append(append([]byte{}, raw...), []byte("{}")...),
		"bad salt hex":   mustReplace(t, raw, `"salt": "`, `"salt": "zz`),
	} {
		if _, err := ParseBundle(data); !errors.Is(err, ErrMalformedBundle) {
			t.Errorf("%s: ParseBundle = %v, want ErrMalformedBundle", name, err)
		}
	}
}

func FuzzParseAndVerifyBundle(f *testing.F) {
	raw, err := os.ReadFile("testdata/bundle.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte(`{"type":"ProofBundle","v":1}`))
	trust := loadTrust(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBundle(data)
		if err != nil {
			if !errors.Is(err, ErrMalformedBundle) {
				t.Fatalf("ParseBundle error %v does not wrap ErrMalformedBundle", err)
			}
			return
		}
		v, err := b.Verify(trust, nil)
		if err == nil && (v.Record != b.Record || v.Header == nil) {
			t.Fatalf("verified bundle with inconsistent result %+v", v)
		}
		if err != nil && !errors.Is(err, ErrVerify) {
			t.Fatalf("Verify error %v does not wrap ErrVerify", err)
		}
	})
}

func BenchmarkVerifyBundle(b *testing.B) {
	bundle := loadGolden(b, "bundle.json")
	trust := loadTrust(b)
	for b.Loop() {
		if _, err := bundle.Verify(trust, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func TestVerifyIncompleteBundleInCode(t *testing.T) {
	trust := loadTrust(t)
	b := loadGolden(t, "bundle.json")
	b.Anchor = nil
	if _, err := b.Verify(trust, nil); !errors.Is(err, ErrVerify) {
		t.Fatalf("no anchor proof: %v", err)
	}
	b = loadGolden(t, "bundle.json")
	b.Device.Proof = nil
	var se *StepError
	if _, err := b.Verify(trust, nil); !errors.As(err, &se) || se.Step != StepDeviceKey {
		t.Fatalf("no registration proof: %v", err)
	}
	b = loadGolden(t, "bundle.json")
	if _, err := b.Verify(nil, nil); !errors.As(err, &se) || se.Step != StepTrustFile {
		t.Fatalf("no trust: %v", err)
	}
}

// trustWithInvented is trust with one more validator, invented, of the
// same power as the real one (well-formed key, address derived from it).
func trustWithInvented(t testing.TB, trust *Trust) *Trust {
	t.Helper()
	tr := *trust
	vals := trust.Validators.Copy().Validators
	vals = append(vals, types.NewValidator(ed25519.GenPrivKey().PubKey(), vals[0].VotingPower))
	tr.Validators = types.NewValidatorSet(vals)
	if err := tr.Validate(); err != nil {
		t.Fatalf("the altered trust must be well-formed: %v", err)
	}
	return &tr
}

// TestTrustWithInventedValidator: a trust file holding the chain's
// validator plus an invented one of equal power is refused before any step,
// as a trust-file problem that names the invented validator, not the
// evidence's; and no step says "signed by 2/3+ of the trusted validators".
func TestTrustWithInventedValidator(t *testing.T) {
	trust := loadTrust(t)
	bad := trustWithInvented(t, trust)
	invented := bad.Validators.Validators[0]
	if _, real := trust.Validators.GetByAddress(invented.Address); real != nil {
		invented = bad.Validators.Validators[1]
	}
	b := loadGolden(t, "bundle.json")
	var steps []string
	_, err := b.Verify(bad, func(step, _ string, _ error) { steps = append(steps, step) })
	var tm *TrustMismatchError
	if !errors.As(err, &tm) || !errors.Is(err, ErrBadTrust) {
		t.Fatalf("Verify = %v, want a TrustMismatchError", err)
	}
	if len(steps) != 1 || steps[0] != StepTrustFile {
		t.Fatalf("steps reported %v, want only %q", steps, StepTrustFile)
	}
	if want := fmt.Sprintf("validator %X (power %d) is in the trust file but not in the chain's set", invented.Address, invented.VotingPower); !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name the invented validator (%s)", err, want)
	}
	// The anchor proof alone refuses it too, at its trust step.
	var ve *VerifyError
	if err := b.Anchor.Verify(bad); !errors.As(err, &ve) || ve.Step != StepTrust {
		t.Fatalf("AnchorProof.Verify = %v, want step %q", err, StepTrust)
	}
}

// TestExpiryMessageIsRFC3339: the light client's expiry error prints times
// with %v (Go's default form, with now's monotonic clock reading); the
// proof's error uses RFC 3339.
func TestExpiryMessageIsRFC3339(t *testing.T) {
	tr := *loadTrust(t)
	tr.TrustingPeriod = time.Hour
	b := loadGolden(t, "bundle.json")
	err := b.Anchor.VerifyAt(&tr, time.Now())
	if err == nil || strings.Contains(err.Error(), "m=+") || strings.Contains(err.Error(), "+0000 UTC") || !strings.Contains(err.Error(), "expired at 2026-11-25T") {
		t.Fatalf("VerifyAt with an expired trusting period = %v", err)
	}
}

// TestGoldenBundlesAreCanonical: the golden bundles (made by the gateway)
// are in the one accepted form: each encodes back to its exact bytes.
func TestGoldenBundlesAreCanonical(t *testing.T) {
	for _, name := range []string{"bundle.json", "bundle-other-device.json", "bundle-per-record.json"} {
		raw, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ParseBundle(raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		again, err := b.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, raw) {
			t.Fatalf("%s does not encode back to its own bytes", name)
		}
	}
}

// dirtyPadding sets the unused low bits of the last base64 character of s
// (padded), a second encoding of the same bytes that encoding/base64's
// default decoder takes.
func dirtyPadding(t testing.TB, s string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	pad := len(s) - len(strings.TrimRight(s, "="))
	if pad == 0 {
		t.Fatalf("%q has no padding", s)
	}
	i := len(s) - pad - 1
	v := strings.IndexByte(alphabet, s[i])
	v |= 1<<(2*pad) - 1 // 2 unused bits for "=", 4 for "=="
	return s[:i] + string(alphabet[v]) + s[i+1:]
}

// TestBundleRefusesNonCanonicalEncodings: every value of a bundle has one
// encoding, as in the envelope; another encoding of the same value, or a
// member the format does not have, is refused with ErrMalformedBundle
// naming the member. Each edit below was accepted before.
func TestBundleRefusesNonCanonicalEncodings(t *testing.T) {
	raw, err := os.ReadFile("testdata/bundle.json")
	if err != nil {
		t.Fatal(err)
	}
	obj := func(m map[string]any, path ...string) map[string]any {
		for _, k := range path {
			m = m[k].(map[string]any)
		}
		return m
	}
	// padded finds a padded base64 string member for the padding case.
	padded := func(m map[string]any) (map[string]any, string) {
		for _, c := range []struct {
			m map[string]any
			k string
		}{{obj(m, "batch"), "sig"}, {obj(m, "receipt"), "sig"}, {m, "envelope"}, {obj(m, "batch"), "body"}, {obj(m, "receipt"), "body"}} {
			if strings.HasSuffix(c.m[c.k].(string), "=") {
				return c.m, c.k
			}
		}
		t.Fatal("no padded base64 member")
		return nil, ""
	}
	for _, tc := range []struct {
		name, where string
		edit        func(m map[string]any)
	}{
		{"line break in base64 (envelope)", "envelope", func(m map[string]any) {
			s := m["envelope"].(string)
			m["envelope"] = s[:40] + "\n" + s[40:]
		}},
		{"CR LF in base64 (anchor tx)", "tx", func(m map[string]any) {
			a := obj(m, "anchor")
			s := a["tx"].(string)
			a["tx"] = s[:60] + "\r\n" + s[60:]
		}},
		{"non-zero padding bits", "", func(m map[string]any) {
			o, k := padded(m)
			o[k] = dirtyPadding(t, o[k].(string))
		}},
		{"non-zero padding bits in a commit signature", "signature", func(m map[string]any) {
			sig := obj(m, "anchor", "signed_header", "commit")["signatures"].([]any)[0].(map[string]any)
			sig["signature"] = dirtyPadding(t, sig["signature"].(string))
		}},
		{"line break in a CometBFT base64 member", "leaf_hash", func(m map[string]any) {
			p := obj(m, "anchor", "tx_proof")
			s := p["leaf_hash"].(string)
			p["leaf_hash"] = s[:20] + "\n" + s[20:]
		}},
		{"unknown member in an AnchorProof", "extra", func(m map[string]any) { obj(m, "anchor")["extra"] = 1 }},
		{"unknown member in the device's AnchorProof", "extra", func(m map[string]any) { obj(m, "device", "proof")["extra"] = "x" }},
		{"unknown member in a CometBFT header", "extra", func(m map[string]any) {
			obj(m, "anchor", "signed_header", "header")["extra"] = "x"
		}},
		{"member name in another case", "Chain_ID", func(m map[string]any) {
			a := obj(m, "anchor")
			a["Chain_ID"] = a["chain_id"]
			delete(a, "chain_id")
		}},
		{"lower-case hex in validators_hash", "validators_hash", func(m map[string]any) {
			h := obj(m, "anchor", "signed_header", "header")
			h["validators_hash"] = strings.ToLower(h["validators_hash"].(string))
		}},
		{"lower-case hex in a validator address", "address", func(m map[string]any) {
			v := obj(m, "anchor", "validators")["validators"].([]any)[0].(map[string]any)
			v["address"] = strings.ToLower(v["address"].(string))
		}},
		{"height string with a leading zero", "signed_header", func(m map[string]any) {
			h := obj(m, "anchor", "signed_header", "header")
			h["height"] = "0" + h["height"].(string)
		}},
		{"time with a numeric offset", "time", func(m map[string]any) {
			h := obj(m, "anchor", "next_signed_header", "header")
			h["time"] = strings.TrimSuffix(h["time"].(string), "Z") + "+00:00"
		}},
		{"empty aunts written in a tx proof", "aunts", func(m map[string]any) { obj(m, "anchor", "tx_proof")["aunts"] = []any{} }},
		{"empty aunts left out of a result proof", "aunts", func(m map[string]any) { delete(obj(m, "anchor", "result_proof"), "aunts") }},
		{"minus zero", "round", func(m map[string]any) { obj(m, "anchor", "signed_header", "commit")["round"] = json.Number("-0") }},
		{"next_validators null", "next_validators", func(m map[string]any) { obj(m, "anchor")["next_validators"] = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				t.Fatal(err)
			}
			tc.edit(m)
			data, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			// The edit is only a re-encoding: the golden bundle itself,
			// re-marshalled without it, parses.
			_, err = ParseBundle(data)
			if !errors.Is(err, ErrMalformedBundle) {
				t.Fatalf("ParseBundle = %v, want ErrMalformedBundle", err)
			}
			if tc.where != "" && !strings.Contains(err.Error(), tc.where) {
				t.Fatalf("error %q does not name %q", err, tc.where)
			}
		})
	}
	// The same generic re-marshal without an edit is accepted: member
	// order and white space are not significant.
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(m)
	if _, err := ParseBundle(data); err != nil {
		t.Fatalf("the golden bundle re-marshalled: %v", err)
	}
}
