package evidence_test

import (
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
)

// roundTrip copies v through its JSON form (as a proof travels in a bundle).
func roundTrip[T any](t *testing.T, v *T) *T {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, b)
	}
	return &out
}

func wantStep(t *testing.T, err error, step string) {
	t.Helper()
	var ve *evidence.VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want *VerifyError at %s", err, step)
	}
	if ve.Step != step {
		t.Fatalf("failed at step %q (%v), want %q", ve.Step, ve.Err, step)
	}
	if !errors.Is(err, evidence.ErrInvalidAnchorProof) {
		t.Fatalf("errors.Is(%v, ErrInvalidAnchorProof) = false", err)
	}
}

// Golden files: a real anchor proof and the trust exported before it, made
// against a single-validator ledger by the ledger client's test
// (`EDGEANCHOR_UPDATE_GOLDEN=1 go test -run TestAnchorProof ./anchor/ledgerclient`
// writes anchor/ledgerclient/testdata/anchorproof); this is a copy, which
// that package's TestGoldenCopies keeps identical. They let the proof format
// be checked offline, forever.
const (
	goldenProof = "testdata/anchorproof/proof.json"
	goldenTrust = "testdata/anchorproof/trust.json"
)

func readGolden(t testing.TB) ([]byte, *evidence.Trust) {
	t.Helper()
	b, err := os.ReadFile(goldenProof)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := evidence.ReadTrustFile(goldenTrust)
	if err != nil {
		t.Fatal(err)
	}
	return b, tr
}

// TestAnchorProofGolden verifies the committed proof offline, and refuses it
// once one byte of its tx changes.
func TestAnchorProofGolden(t *testing.T) {
	b, tr := readGolden(t)
	var p evidence.AnchorProof
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(tr); err != nil {
		t.Fatal(err)
	}
	if _, err := anchor.DecodeTx(p.Tx); err != nil {
		t.Fatalf("golden proof tx: %v", err)
	}
	p.Tx[len(p.Tx)-3] ^= 0x01
	wantStep(t, p.Verify(tr), evidence.StepTxProof)
}

// FuzzAnchorProof: decoding and verifying arbitrary bytes never panics, and
// nothing but the golden proof itself verifies.
func FuzzAnchorProof(f *testing.F) {
	b, tr := readGolden(f)
	f.Add(b)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"height":"1","validators":{"validators":[{"voting_power":"-1"}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var p evidence.AnchorProof
		if err := json.Unmarshal(data, &p); err != nil {
			return
		}
		if err := p.Verify(tr); err == nil {
			var golden evidence.AnchorProof
			if json.Unmarshal(b, &golden) != nil {
				t.Fatal("golden proof does not decode")
			}
			if string(golden.Tx) != string(p.Tx) || golden.Height != p.Height {
				t.Fatalf("a different proof verifies: tx %q at %d", p.Tx, p.Height)
			}
		}
	})
}

// FuzzTrust: decoding and validating arbitrary trust files never panics;
// whatever validates keeps validating after a JSON round trip.
func FuzzTrust(f *testing.F) {
	b, err := os.ReadFile(goldenTrust)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"version":1,"mode":"genesis","chain_id":"x","trusting_period":"1h","validators":{"validators":[]}}`))
	f.Add([]byte(`{"version":1,"mode":"header","height":1,"header_hash":"zz"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var tr evidence.Trust
		if err := json.Unmarshal(data, &tr); err != nil {
			return
		}
		if tr.Validate() != nil {
			return
		}
		again := roundTrip(t, &tr)
		if err := again.Validate(); err != nil {
			t.Fatalf("valid trust invalid after round trip: %v", err)
		}
	})
}
