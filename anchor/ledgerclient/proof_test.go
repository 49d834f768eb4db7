package ledgerclient_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/types"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
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

func TestAnchorProof(t *testing.T) {
	n := ledgertest.StartSingle(t)
	c := newClient(t, n.RPC, ledgerclient.ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	gw := ledgertest.NewGateway(t, "site-a")
	submit(t, c, gw.RegisterTx(t, n.Committee))

	// A regulator exports trust before the anchor (light client forward
	// verification), from the home directory (genesis validators), and
	// after it (the anchor is older than the trusted header).
	before, err := c.ExportTrust(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	genesis, err := evidence.ExportTrustFromHome(n.Home)
	if err != nil {
		t.Fatal(err)
	}
	submit(t, c, ledgertest.NewGateway(t, "site-b").RegisterTx(t, n.Committee)) // a block in between: non-adjacent verification
	tx, hdr := gw.NextAnchor(t, 250)
	r := submit(t, c, tx)

	p, err := c.ProveAnchor(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	if p.Height != r.Height || p.Index != r.Index {
		t.Fatalf("proof at %d/%d, receipt %+v", p.Height, p.Index, r)
	}
	if os.Getenv("EDGEANCHOR_UPDATE_GOLDEN") != "" {
		writeGolden(t, p, before)
	}
	after, err := c.ExportTrust(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if after.Height <= p.Height {
		t.Fatalf("trust exported after the anchor is at %d, anchor at %d", after.Height, p.Height)
	}

	// The trust file survives its file form.
	path := filepath.Join(t.TempDir(), "trust.json")
	if err := evidence.WriteTrustFile(path, before); err != nil {
		t.Fatal(err)
	}
	fromFile, err := evidence.ReadTrustFile(path)
	if err != nil {
		t.Fatal(err)
	}

	for name, tr := range map[string]*evidence.Trust{
		"trust before (file)": fromFile, "genesis trust": roundTrip(t, genesis), "trust after": roundTrip(t, after),
	} {
		t.Run("verifies/"+name, func(t *testing.T) {
			q := roundTrip(t, p)
			if err := q.VerifyTx(tr, tx); err != nil {
				t.Fatal(err)
			}
		})
	}

	// The tx in the proof is the gateway's signed header.
	dtx, err := anchor.DecodeTx(roundTrip(t, p).Tx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := anchor.ParseHeader(dtx.Body)
	if err != nil || got.Hash() != hdr.Hash() {
		t.Fatalf("proof tx header = %v, %v", got, err)
	}

	// Another root, properly signed by the gateway: not the anchored tx.
	otherHdr := *hdr
	otherHdr.Root = anchor.SM3([]byte("another root"))
	otherTx := gw.AnchorTx(t, &otherHdr)

	otherVal := ed25519.GenPrivKey().PubKey()
	foreign := &evidence.Trust{
		Version: evidence.TrustVersion, Mode: evidence.TrustModeGenesis, ChainID: before.ChainID,
		Validators:     types.NewValidatorSet([]*types.Validator{types.NewValidator(otherVal, 10)}),
		TrustingPeriod: evidence.DefaultTrustingPeriod,
	}

	for _, tc := range []struct {
		name   string
		trust  *evidence.Trust
		tamper func(p *evidence.AnchorProof)
		step   string
	}{
		{"tx with another root", before, func(p *evidence.AnchorProof) { p.Tx = otherTx }, evidence.StepTxProof},
		{"tx byte flipped", before, func(p *evidence.AnchorProof) { p.Tx[len(p.Tx)/2] ^= 1 }, evidence.StepTxProof},
		{"tx index", before, func(p *evidence.AnchorProof) { p.Index++ }, evidence.StepTxProof},
		{"header data hash", before, func(p *evidence.AnchorProof) { h := anchor.SM3(otherTx); p.Header.DataHash = h[:] }, evidence.StepHeader},
		{"header app hash", genesis, func(p *evidence.AnchorProof) { p.Header.AppHash[0] ^= 1 }, evidence.StepHeader},
		{"header height", after, func(p *evidence.AnchorProof) { p.Header.Height++; p.Height++ }, evidence.StepHeader},
		{"validator power", before, func(p *evidence.AnchorProof) { p.Validators.Validators[0].VotingPower++ }, evidence.StepHeader},
		{"validator key", genesis, func(p *evidence.AnchorProof) {
			p.Validators = types.NewValidatorSet([]*types.Validator{types.NewValidator(otherVal, 10)})
		}, evidence.StepHeader},
		{"commit signature", before, func(p *evidence.AnchorProof) { p.Header.Commit.Signatures[0].Signature[0] ^= 1 }, evidence.StepHeader},
		{"untrusted validators", foreign, func(*evidence.AnchorProof) {}, evidence.StepTrust},
		// The real validator plus an invented one of equal power: half the
		// trusted power signed; the trusted set is not the chain's.
		{"trusted set with an invented validator", func() *evidence.Trust {
			tr := *genesis
			tr.Validators = types.NewValidatorSet(append(genesis.Validators.Copy().Validators, types.NewValidator(otherVal, genesis.Validators.Validators[0].VotingPower)))
			return &tr
		}(), func(*evidence.AnchorProof) {}, evidence.StepTrust},
		{"chain id", before, func(p *evidence.AnchorProof) { p.ChainID = "other-chain" }, evidence.StepHeader},
		{"next header results hash", before, func(p *evidence.AnchorProof) { p.NextHeader.LastResultsHash[0] ^= 1 }, evidence.StepNextHeader},
		{"next header of another height", before, func(p *evidence.AnchorProof) { p.NextHeader = p.Header }, evidence.StepNextHeader},
		{"result code", before, func(p *evidence.AnchorProof) { p.Result.Code = 6 }, evidence.StepResult},
		{"result gas", before, func(p *evidence.AnchorProof) { p.Result.GasUsed++ }, evidence.StepResult},
		{"result proof index", before, func(p *evidence.AnchorProof) { p.ResultProof.Index++ }, evidence.StepResult},
		{"trust header", func() *evidence.Trust {
			tr := roundTrip(t, before)
			tr.Header.Time = tr.Header.Time.Add(time.Second)
			return tr
		}(), func(*evidence.AnchorProof) {}, evidence.StepTrust},
	} {
		t.Run("refuses/"+tc.name, func(t *testing.T) {
			q := roundTrip(t, p)
			tc.tamper(q)
			wantStep(t, q.Verify(tc.trust), tc.step)
			// and through the JSON form too
			wantStep(t, roundTrip(t, q).Verify(tc.trust), tc.step)
		})
	}

	t.Run("refuses/other tx bytes", func(t *testing.T) {
		wantStep(t, roundTrip(t, p).VerifyTx(before, otherTx), evidence.StepTxMatch)
	})
	t.Run("missing parts", func(t *testing.T) {
		var q evidence.AnchorProof
		err := json.Unmarshal([]byte(`{"version":1,"height":3}`), &q)
		wantStep(t, err, evidence.StepDecode)
	})
	t.Run("not committed", func(t *testing.T) {
		if _, err := c.ProveAnchor(ctx, otherTx); !errors.Is(err, ledgerclient.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})
}

// Golden files: a real anchor proof and the trust exported before it, made
// by `EDGEANCHOR_UPDATE_GOLDEN=1 go test -run TestAnchorProof ./anchor/ledgerclient`
// against a single-validator ledger. Package anchor/evidence checks its copy of
// them (anchor/evidence/testdata/anchorproof) offline, forever.
const (
	goldenProof = "testdata/anchorproof/proof.json"
	goldenTrust = "testdata/anchorproof/trust.json"
)

func writeGolden(t *testing.T, p *evidence.AnchorProof, tr *evidence.Trust) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(goldenProof), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goldenProof, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := evidence.WriteTrustFile(goldenTrust, tr); err != nil {
		t.Fatal(err)
	}
}

// TestGoldenCopies: package anchor/evidence checks a copy of this package's golden
// proof offline (it cannot run a ledger); the copy must be these bytes.
// After EDGEANCHOR_UPDATE_GOLDEN=1, `make golden` copies them over.
func TestGoldenCopies(t *testing.T) {
	for _, name := range []string{goldenProof, goldenTrust} {
		ours, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		copied, err := os.ReadFile(filepath.Join("..", "evidence", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ours, copied) {
			t.Errorf("anchor/evidence/%s differs from anchor/ledgerclient/%s: run make golden (or copy it over)", name, name)
		}
	}
}
