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

// goldenProofFile is the golden anchor proof (see inclusion_test.go).
const goldenProofFile = "testdata/anchorproof/proof.json"

// TestLightRulesAgreeWithCometBFT checks verifyAdjacent against CometBFT's
// own light client (imported by this test only) on the golden anchor
// proof's block and the header after it, each case changing one thing:
// both must accept the same inputs and refuse the same inputs.
func TestLightRulesAgreeWithCometBFT(t *testing.T) {
	raw, err := os.ReadFile(goldenProofFile)
	if err != nil {
		t.Fatal(err)
	}
	fresh := func(t *testing.T) *AnchorProof {
		t.Helper()
		var p AnchorProof
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		return &p
	}
	p0 := fresh(t)
	now := p0.NextHeader.Time.Add(time.Hour)
	foreign := types.NewValidatorSet([]*types.Validator{types.NewValidator(ed25519.GenPrivKey().PubKey(), 10)})

	type inputs struct {
		p        *AnchorProof
		nextVals *types.ValidatorSet
		now      time.Time
		period   time.Duration
	}
	for _, tc := range []struct {
		name   string
		change func(in *inputs)
		refuse bool // what both must answer (so that the test can fail)
	}{
		{"as made", func(*inputs) {}, false},
		{"trusting period over", func(in *inputs) { in.now = in.p.Header.Time.Add(in.period) }, true},
		{"short trusting period", func(in *inputs) { in.period = time.Millisecond }, true},
		{"header from the future", func(in *inputs) { in.now = in.p.NextHeader.Time.Add(-DefaultMaxClockDrift - time.Second) }, true},
		{"next header not later", func(in *inputs) { in.p.NextHeader.Time = in.p.Header.Time }, true},
		{"next header not adjacent", func(in *inputs) { in.p.NextHeader.Height = in.p.Header.Height }, true},
		{"next commit signature", func(in *inputs) { in.p.NextHeader.Commit.Signatures[0].Signature[0] ^= 1 }, true},
		{"next validator power", func(in *inputs) { in.nextVals.Validators[0].VotingPower++ }, true},
		{"next validators hash", func(in *inputs) { in.p.Header.NextValidatorsHash[0] ^= 1 }, true},
		{"next header's validators", func(in *inputs) { in.nextVals = foreign }, true},
		{"chain id", func(in *inputs) { in.p.NextHeader.ChainID = "other-chain" }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := fresh(t)
			in := &inputs{p: p, nextVals: p.NextValidators, now: now, period: DefaultTrustingPeriod}
			if in.nextVals == nil {
				in.nextVals = p.Validators
			}
			tc.change(in)
			ours := verifyAdjacent(in.p.Header, in.p.NextHeader, in.nextVals, in.period, in.now)
			theirs := light.VerifyAdjacent(in.p.Header, in.p.NextHeader, in.nextVals, in.period, in.now, DefaultMaxClockDrift)
			if (ours != nil) != tc.refuse || (theirs != nil) != tc.refuse {
				t.Fatalf("ours: %v; CometBFT's: %v; want refused = %v", ours, theirs, tc.refuse)
			}
		})
	}
}
