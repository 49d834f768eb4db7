package evidence

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cometbft/cometbft/crypto/ed25519"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	cmtversion "github.com/cometbft/cometbft/proto/tendermint/version"
	"github.com/cometbft/cometbft/types"
	"github.com/cometbft/cometbft/version"
)

// testChain makes signed headers of a made-up chain for checkpoint rules:
// each key signs with its own ed25519 key.
type testChain struct {
	t     *testing.T
	id    string
	start time.Time
}

func testValSet(keys ...ed25519.PrivKey) *types.ValidatorSet {
	vals := make([]*types.Validator, len(keys))
	for i, k := range keys {
		vals[i] = types.NewValidator(k.PubKey(), 10)
	}
	return types.NewValidatorSet(vals)
}

// header is the signed header at height whose set is vals, signed by
// signers (who need not be in vals: their signatures then count only for
// a set that holds them).
func (c *testChain) header(height int64, vals *types.ValidatorSet, signers ...ed25519.PrivKey) *types.SignedHeader {
	c.t.Helper()
	return c.headerAt(height, c.start.Add(time.Duration(height)*time.Second), vals, signers...)
}

// headerAt is header with the given time.
func (c *testChain) headerAt(height int64, tm time.Time, vals *types.ValidatorSet, signers ...ed25519.PrivKey) *types.SignedHeader {
	c.t.Helper()
	h := &types.Header{
		Version: cmtversion.Consensus{Block: version.BlockProtocol}, ChainID: c.id, Height: height, Time: tm,
		ValidatorsHash: vals.Hash(), NextValidatorsHash: vals.Hash(), ProposerAddress: vals.Validators[0].Address,
	}
	bid := types.BlockID{Hash: h.Hash(), PartSetHeader: types.PartSetHeader{Total: 1, Hash: make([]byte, 32)}}
	commit := &types.Commit{Height: height, BlockID: bid}
	for _, k := range signers {
		v := &types.Vote{Type: cmtproto.PrecommitType, Height: height, BlockID: bid, Timestamp: h.Time, ValidatorAddress: k.PubKey().Address()}
		sig, err := k.Sign(types.VoteSignBytes(c.id, v.ToProto()))
		if err != nil {
			c.t.Fatal(err)
		}
		commit.Signatures = append(commit.Signatures, types.CommitSig{BlockIDFlag: types.BlockIDFlagCommit,
			ValidatorAddress: v.ValidatorAddress, Timestamp: h.Time, Signature: sig})
	}
	// A commit lists the signatures in the order of the set it is for.
	sorted := make([]types.CommitSig, 0, len(commit.Signatures))
	for _, v := range vals.Validators {
		for _, s := range commit.Signatures {
			if string(s.ValidatorAddress) == string(v.Address) {
				sorted = append(sorted, s)
			}
		}
	}
	for len(sorted) < vals.Size() {
		sorted = append(sorted, types.NewCommitSigAbsent())
	}
	commit.Signatures = sorted
	return &types.SignedHeader{Header: h, Commit: commit}
}

// TestCheckpointRules: a genesis trust of {a} follows the chain to {a,b}
// and then {b,c}, each step signed by +1/3 of the set before it and +2/3
// of its own; periodAt picks the set of each height; the file form keeps
// the checkpoints; a step from a set not handed over by the one before,
// a step down in height or back in time, and an edited set are refused.
func TestCheckpointRules(t *testing.T) {
	a, b, c, d := ed25519.GenPrivKey(), ed25519.GenPrivKey(), ed25519.GenPrivKey(), ed25519.GenPrivKey()
	ch := &testChain{t: t, id: "cp-test", start: time.Now().Add(-time.Hour).UTC().Truncate(time.Second)}
	s0, s1, s2 := testValSet(a), testValSet(a, b), testValSet(b, c)
	base := Trust{Version: TrustVersion, Mode: TrustModeGenesis, ChainID: ch.id, Validators: s0, TrustingPeriod: DefaultTrustingPeriod}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	tr := base
	if err := tr.AppendCheckpoint(ch.header(5, s1, a, b), s1); err != nil {
		t.Fatalf("checkpoint {a,b} signed by a and b: %v", err)
	}
	refuse := func(name string, sh *types.SignedHeader, vals *types.ValidatorSet, want string) {
		t.Helper()
		before := len(tr.Checkpoints)
		err := tr.AppendCheckpoint(sh, vals)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: err = %v, want one saying %q", name, err, want)
		}
		if len(tr.Checkpoints) != before {
			t.Fatalf("%s: a refused checkpoint was appended", name)
		}
	}
	refuse("a set not handed over", ch.header(9, testValSet(c, d), c, d), testValSet(c, d),
		"not signed by +1/3 of the validator set before it (checkpoint 1, height 5)")
	refuse("below the last checkpoint", ch.header(4, s2, b, c), s2, "checkpoints go up in height")
	refuse("an edited set", ch.header(9, s2, b, c), testValSet(b, c, d), "is not the set its header names")
	refuse("not signed by its own set", ch.header(9, s2, b), s2, "not signed by +2/3 of its validator set")
	refuse("back in time", ch.headerAt(9, ch.start, s2, b, c), s2, "is not after the time of height 5")
	if err := tr.AppendCheckpoint(ch.header(9, s2, b, c), s2); err != nil {
		t.Fatalf("checkpoint {b,c} signed by b and c: %v", err)
	}

	for _, tc := range []struct {
		height int64
		want   *types.ValidatorSet
	}{{1, s0}, {4, s0}, {5, s1}, {8, s1}, {9, s2}, {1000, s2}} {
		if got := tr.periodAt(tc.height).Validators; string(got.Hash()) != string(tc.want.Hash()) {
			t.Errorf("set at height %d is not the one of its range", tc.height)
		}
	}
	if tr.LastHeight() != 9 || string(tr.LastValidators().Hash()) != string(s2.Hash()) {
		t.Fatalf("last = %d", tr.LastHeight())
	}

	// The file form keeps them, and reading it checks them again.
	raw, err := json.Marshal(&tr)
	if err != nil {
		t.Fatal(err)
	}
	var back2 Trust
	if err := json.Unmarshal(raw, &back2); err != nil {
		t.Fatal(err)
	}
	if err := back2.Validate(); err != nil || len(back2.Checkpoints) != 2 {
		t.Fatalf("round trip: %d checkpoints, %v", len(back2.Checkpoints), err)
	}
	// Checkpoint 2 without checkpoint 1: {b,c} was not handed over by {a}.
	skipped := base
	skipped.Checkpoints = []Checkpoint{back2.Checkpoints[1]}
	if err := skipped.Validate(); err == nil || !strings.Contains(err.Error(), "checkpoint 1 (height 9)") ||
		!strings.Contains(err.Error(), "the genesis set") {
		t.Fatalf("checkpoint of {b,c} straight after {a}: %v", err)
	}
}
