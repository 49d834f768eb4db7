package evidence

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/types"
)

// The golden anchor proof and the trust exported before it (see
// inclusion_test.go).
const (
	goldenProofFile = "testdata/anchorproof/proof.json"
	goldenTrustFile = "testdata/anchorproof/trust.json"
)

// TestLightRulesAgreeWithCometBFT checks verifyFrom and verifyAdjacent
// against CometBFT's own light client (imported by this test only) on the
// golden anchor proof, a header-mode trust at height 2 and the proof's
// blocks 4 (reached by skipping) and 5 (adjacent to 4), each case changing
// one thing: both must accept the same inputs and refuse the same inputs.
func TestLightRulesAgreeWithCometBFT(t *testing.T) {
	raw, err := os.ReadFile(goldenProofFile)
	if err != nil {
		t.Fatal(err)
	}
	trustRaw, err := os.ReadFile(goldenTrustFile)
	if err != nil {
		t.Fatal(err)
	}
	fresh := func(t *testing.T) (*AnchorProof, *Trust) {
		t.Helper()
		var p AnchorProof
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		var tr Trust
		if err := json.Unmarshal(trustRaw, &tr); err != nil {
			t.Fatal(err)
		}
		return &p, &tr
	}
	p0, tr0 := fresh(t)
	if tr0.Mode != TrustModeHeader || p0.Height <= tr0.Height+1 {
		t.Fatalf("golden trust at %d (%s), proof at %d: want a header trust below the proof by 2 or more", tr0.Height, tr0.Mode, p0.Height)
	}
	now := p0.NextHeader.Time.Add(time.Hour)
	foreign := types.NewValidatorSet([]*types.Validator{types.NewValidator(ed25519.GenPrivKey().PubKey(), 10)})

	type inputs struct {
		p      *AnchorProof
		tr     *Trust
		now    time.Time
		period time.Duration
	}
	for _, tc := range []struct {
		name   string
		change func(in *inputs)
		refuse bool // what both must answer (so that the test can fail)
	}{
		{"as made", func(*inputs) {}, false},
		{"trusting period over", func(in *inputs) { in.now = in.tr.Header.Time.Add(in.period) }, true},
		{"short trusting period", func(in *inputs) { in.period = time.Millisecond }, true},
		{"header from the future", func(in *inputs) { in.now = in.p.NextHeader.Time.Add(-DefaultMaxClockDrift - time.Second) }, true},
		{"header older than the trusted one", func(in *inputs) { in.p.Header.Time = in.tr.Header.Time.Add(-time.Second) }, true},
		{"commit signature", func(in *inputs) { in.p.Header.Commit.Signatures[0].Signature[0] ^= 1 }, true},
		{"next commit signature", func(in *inputs) { in.p.NextHeader.Commit.Signatures[0].Signature[0] ^= 1 }, true},
		{"validator power", func(in *inputs) { in.p.Validators.Validators[0].VotingPower++ }, true},
		{"next validators hash", func(in *inputs) { in.p.Header.NextValidatorsHash[0] ^= 1 }, true},
		{"next header's validators", func(in *inputs) { in.p.NextValidators = foreign }, true},
		{"trusted by another set", func(in *inputs) { in.tr.Validators = foreign }, true},
		{"chain id", func(in *inputs) { in.p.Header.ChainID = "other-chain" }, true},
		{"header below the trusted one", func(in *inputs) { in.p.Header.Height = in.tr.Height - 1 }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, tr := fresh(t)
			in := &inputs{p: p, tr: tr, now: now, period: tr.TrustingPeriod}
			tc.change(in)
			nextVals := in.p.NextValidators
			if nextVals == nil {
				nextVals = in.p.Validators
			}
			// The header by skipping from the trusted one, then the next
			// header adjacent to it.
			ours := verifyFrom(in.tr.Header, in.tr.Validators, in.p.Header, in.p.Validators, in.period, in.now)
			if ours == nil {
				ours = verifyAdjacent(in.p.Header, in.p.NextHeader, nextVals, in.period, in.now)
			}
			theirs := light.Verify(in.tr.Header, in.tr.Validators, in.p.Header, in.p.Validators, in.period, in.now, DefaultMaxClockDrift, light.DefaultTrustLevel)
			if theirs == nil {
				theirs = light.VerifyAdjacent(in.p.Header, in.p.NextHeader, nextVals, in.period, in.now, DefaultMaxClockDrift)
			}
			if (ours != nil) != tc.refuse || (theirs != nil) != tc.refuse {
				t.Fatalf("ours: %v; CometBFT's: %v; want refused = %v", ours, theirs, tc.refuse)
			}
		})
	}
}
