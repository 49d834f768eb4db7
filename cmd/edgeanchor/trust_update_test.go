package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cometbft/cometbft/crypto/ed25519"
	cmtjson "github.com/cometbft/cometbft/libs/json"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	"github.com/cometbft/cometbft/types"

	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

// TestTrustFollowsValidatorChanges: a record anchored before a validator
// change and one anchored after it both verify with the regulator's trust
// file once `ledger trust update` appended the checkpoint of the change
// (in genesis mode and in header mode); without the update the second is
// refused as the trust file's problem; a checkpoint edited by hand (an
// invented validator) is refused.
func TestTrustFollowsValidatorChanges(t *testing.T) {
	e := newAuditEnv(t)
	dir := t.TempDir()
	rpc := e.Node.RPC
	genTrust, hdrTrust := filepath.Join(dir, "genesis-trust.json"), filepath.Join(dir, "header-trust.json")
	devMustRun(t, dir, nil, "ledger", "export-trust", "--home", e.Node.Home, "--out", genTrust)
	devMustRun(t, dir, nil, "ledger", "export-trust", "--rpc", rpc, "--out", hdrTrust)
	oldTrust := filepath.Join(dir, "old-trust.json")
	copyFile(t, genTrust, oldTrust)

	before := e.bundle(dir, "before.json", e.add(0, 0))

	// The committee (one key, threshold 1 in this dev home) adds a
	// validator of power 1: 10 of 11 still commit without it.
	newVal := ed25519.GenPrivKey().PubKey()
	devMustRun(t, dir, nil, "consortium", "propose", "add-validator", "--rpc", rpc,
		"--key", filepath.Join(e.Node.Home, "keys", "committee.pem"),
		"--validator-pub", base64.StdEncoding.EncodeToString(newVal.Bytes()), "--power", "1", "--name", "org-e")
	cli, err := rpchttp.New(rpc, "/websocket")
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the chain's validator set has the new validator", func() error {
		res, err := cli.Validators(context.Background(), nil, nil, nil)
		if err != nil {
			return err
		}
		if res.Total != 2 {
			return fmt.Errorf("%d validators at height %d", res.Total, res.BlockHeight)
		}
		return nil
	})

	after := e.bundle(dir, "after.json", e.add(0, 0))
	if b, err := evidence.ReadBundleFile(after); err != nil {
		t.Fatal(err)
	} else if n := b.Anchor.Validators.Size(); n != 2 {
		t.Fatalf("the second record's block has %d validators, want 2", n)
	}

	// Before any update: the first verifies, the second is refused, and
	// the refusal names the trust file and the command that updates it.
	for _, tr := range []string{genTrust, hdrTrust} {
		if out, code := runCLI(t, "verify", before, "--trust", tr); code != 0 {
			t.Fatalf("verify the record from before the change with %s: exit %d\n%s", filepath.Base(tr), code, out)
		}
		out, code := runCLI(t, "verify", after, "--trust", tr)
		if code != 1 || !strings.Contains(out, "trust file") || !strings.Contains(out, "ledger trust update") ||
			!strings.Contains(out, "is missing from the trust file") {
			t.Fatalf("verify the record from after the change with the trust file not updated (%s): exit %d, want 1 naming the trust problem\n%s",
				filepath.Base(tr), code, out)
		}
	}

	// The update appends one checkpoint; both records verify.
	for _, tr := range []string{genTrust, hdrTrust} {
		out := devMustRun(t, dir, nil, "ledger", "trust", "update", "--trust", tr, "--rpc", rpc)
		if !strings.Contains(out, "checkpoint 1: from height") || !strings.Contains(out, "1 checkpoint added") {
			t.Fatalf("trust update of %s:\n%s", filepath.Base(tr), out)
		}
		got, err := evidence.ReadTrustFile(tr)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Checkpoints) != 1 || got.Checkpoints[0].Validators.Size() != 2 {
			t.Fatalf("%s after the update: %d checkpoints", filepath.Base(tr), len(got.Checkpoints))
		}
		for _, b := range []string{before, after} {
			if out, code := runCLI(t, "verify", b, "--trust", tr); code != 0 {
				t.Fatalf("verify %s with the updated %s: exit %d\n%s", filepath.Base(b), filepath.Base(tr), code, out)
			}
		}
		// Nothing more to add: the file is left as it is.
		raw, _ := os.ReadFile(tr)
		out = devMustRun(t, dir, nil, "ledger", "trust", "update", "--trust", tr, "--rpc", rpc)
		if !strings.Contains(out, "is up to date at height") {
			t.Fatalf("second update of %s:\n%s", filepath.Base(tr), out)
		}
		if again, _ := os.ReadFile(tr); !bytes.Equal(raw, again) {
			t.Fatalf("an update with nothing to add rewrote %s", filepath.Base(tr))
		}
	}
	// The trust file not updated still refuses the second record.
	if out, code := runCLI(t, "verify", after, "--trust", oldTrust); code != 1 {
		t.Fatalf("old trust file: exit %d\n%s", code, out)
	}

	// A hand-edited checkpoint: the real set plus an invented validator.
	invented := editCheckpoint(t, genTrust, filepath.Join(dir, "invented.json"), func(vs *types.ValidatorSet) *types.ValidatorSet {
		return types.NewValidatorSet(append(vs.Copy().Validators, types.NewValidator(ed25519.GenPrivKey().PubKey(), 1)))
	})
	// The real set with another power for a validator.
	repowered := editCheckpoint(t, genTrust, filepath.Join(dir, "repowered.json"), func(vs *types.ValidatorSet) *types.ValidatorSet {
		c := vs.Copy()
		c.Validators[0].VotingPower++
		return types.NewValidatorSet(c.Validators)
	})
	// A whole checkpoint forged: its header names an invented set and is
	// signed by it (+2/3 of its own set), but not by the set before it.
	forged := forgeCheckpoint(t, genTrust, filepath.Join(dir, "forged.json"))
	for _, tc := range []struct{ path, want string }{
		{invented, "is not the set its header names"},
		{repowered, "is not the set its header names"},
		{forged, "header not signed by +1/3 of the validator set before it (the genesis set)"},
	} {
		tr := tc.path
		out, code := runCLI(t, "verify", after, "--trust", tr)
		if code != 1 || !strings.Contains(out, "checkpoint 1 (height") || !strings.Contains(out, tc.want) {
			t.Fatalf("verify with %s: exit %d, want 1 naming the checkpoint and %q\n%s", filepath.Base(tr), code, tc.want, out)
		}
		if _, errOut, code := devRun(t, dir, nil, "ledger", "trust", "update", "--trust", tr, "--rpc", rpc); code != 1 ||
			!strings.Contains(errOut, "checkpoint 1 (height") {
			t.Fatalf("trust update of %s: exit %d, want 1 naming the checkpoint\n%s", filepath.Base(tr), code, errOut)
		}
	}
}

// bundle fetches the proof bundle of gseq from the gateway once its batch is
// anchored and writes it to dir/name.
func (e *auditEnv) bundle(dir, name string, gseq uint64) string {
	e.t.Helper()
	e.Cut()
	resp, err := http.Get(fmt.Sprintf("http://%s/v1/records/%d/proof", e.G.HTTPAddr(), gseq))
	if err != nil {
		e.t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("proof of %d: %s %s", gseq, resp.Status, raw)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return path
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// forgeCheckpoint writes to out the trust file at in with its first
// checkpoint replaced by one made up: the real header naming an invented
// one-validator set, and a commit that validator signed.
func forgeCheckpoint(t *testing.T, in, out string) string {
	t.Helper()
	tr, err := evidence.ReadTrustFile(in)
	if err != nil {
		t.Fatal(err)
	}
	priv := ed25519.GenPrivKey()
	vs := types.NewValidatorSet([]*types.Validator{types.NewValidator(priv.PubKey(), 10)})
	cp := tr.Checkpoints[0]
	h := *cp.Header.Header
	h.ValidatorsHash, h.NextValidatorsHash = vs.Hash(), vs.Hash()
	bid := types.BlockID{Hash: h.Hash(), PartSetHeader: cp.Header.Commit.BlockID.PartSetHeader}
	vote := &types.Vote{Type: cmtproto.PrecommitType, Height: h.Height, Round: 0, BlockID: bid, Timestamp: h.Time,
		ValidatorAddress: priv.PubKey().Address(), ValidatorIndex: 0}
	sig, err := priv.Sign(types.VoteSignBytes(tr.ChainID, vote.ToProto()))
	if err != nil {
		t.Fatal(err)
	}
	commit := &types.Commit{Height: h.Height, Round: 0, BlockID: bid, Signatures: []types.CommitSig{{
		BlockIDFlag: types.BlockIDFlagCommit, ValidatorAddress: vote.ValidatorAddress, Timestamp: vote.Timestamp, Signature: sig}}}
	sh := &types.SignedHeader{Header: &h, Commit: commit}
	if err := vs.VerifyCommitLight(tr.ChainID, bid, h.Height, commit); err != nil {
		t.Fatalf("the forged header is not signed by its own set: %v", err)
	}
	tr.Checkpoints[0] = evidence.Checkpoint{Height: h.Height, HeaderHash: sh.Hash(), Header: sh, Validators: vs}
	b, err := json.MarshalIndent(tr, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// editCheckpoint writes to out the trust file at in with its first
// checkpoint's validator set replaced by edit's, as a hand edit would.
func editCheckpoint(t *testing.T, in, out string, edit func(*types.ValidatorSet) *types.ValidatorSet) string {
	t.Helper()
	b, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var cps []map[string]json.RawMessage
	if err := json.Unmarshal(doc["checkpoints"], &cps); err != nil || len(cps) == 0 {
		t.Fatalf("checkpoints of %s: %v", in, err)
	}
	var vs types.ValidatorSet
	if err := cmtjson.Unmarshal(cps[0]["validators"], &vs); err != nil {
		t.Fatal(err)
	}
	if cps[0]["validators"], err = cmtjson.Marshal(edit(&vs)); err != nil {
		t.Fatal(err)
	}
	if doc["checkpoints"], err = json.Marshal(cps); err != nil {
		t.Fatal(err)
	}
	if b, err = json.MarshalIndent(doc, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}
