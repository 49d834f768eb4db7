package app

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"testing"

	abci "github.com/cometbft/cometbft/abci/types"
	cmted "github.com/cometbft/cometbft/crypto/ed25519"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

// govFixture is an application over goleveldb whose genesis names a
// committee of n members with threshold k, a regulator, and two validators.
type govFixture struct {
	*appFixture
	members []*device.KeySigner
	vals    [][]byte // ed25519 public keys of the genesis validators
	last    *abci.ResponseFinalizeBlock
}

func newGovFixture(t *testing.T, n, k int) *govFixture {
	t.Helper()
	f := &govFixture{appFixture: &appFixture{t: t, dir: t.TempDir(), regul: newKey(t), gw: newKey(t)}}
	var ders [][]byte
	for range n {
		m := newKey(t)
		f.members = append(f.members, m)
		der, _ := device.MarshalPublicKeyDER(m.Public())
		ders = append(ders, der)
	}
	f.committee = f.members[0]
	rder, _ := device.MarshalPublicKeyDER(f.regul.Public())
	gg, err := genesisGateway(f.gw.Public(), "site-a", "A")
	if err != nil {
		t.Fatal(err)
	}
	f.appState, _ = json.Marshal(anchor.GenesisState{Committee: anchor.Committee{Members: ders, Threshold: k},
		Regulators: [][]byte{rder}, Gateways: []anchor.GenesisGateway{gg}})
	var vals []abci.ValidatorUpdate
	for range 2 {
		pub, _, _ := ed25519.GenerateKey(nil)
		f.vals = append(f.vals, pub)
		vals = append(vals, abci.Ed25519ValidatorUpdate(pub, 10))
	}
	f.open()
	if _, err := f.app.InitChain(context.Background(), &abci.RequestInitChain{AppStateBytes: f.appState, Validators: vals}); err != nil {
		t.Fatal(err)
	}
	return f
}

// run commits one block of txs and returns the codes.
func (f *govFixture) run(txs ...[]byte) []Code {
	f.t.Helper()
	f.height++
	ctx := context.Background()
	res, err := f.app.FinalizeBlock(ctx, &abci.RequestFinalizeBlock{Height: f.height, Txs: txs})
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.app.Commit(ctx, &abci.RequestCommit{}); err != nil {
		f.t.Fatal(err)
	}
	f.last = res
	out := make([]Code, len(res.TxResults))
	for i, r := range res.TxResults {
		out[i] = Code(r.Code)
	}
	return out
}

func (f *govFixture) want(what string, tx []byte, code Code) {
	f.t.Helper()
	if got := f.run(tx); got[0] != code {
		f.t.Fatalf("%s: code %d (%s) %q, want %d (%s)", what, got[0], got[0].Name(), f.last.TxResults[0].Log, code, code.Name())
	}
}

func (f *govFixture) query(path string, v any) Code {
	f.t.Helper()
	res, err := f.app.Query(context.Background(), &abci.RequestQuery{Path: path})
	if err != nil {
		f.t.Fatal(err)
	}
	if res.Code == 0 && v != nil {
		if err := json.Unmarshal(res.Value, v); err != nil {
			f.t.Fatalf("%s: %v", path, err)
		}
	}
	return Code(res.Code)
}

func (f *govFixture) isMember(gw device.DID) bool {
	var g anchor.GatewayRecord
	return f.query("/gateway/"+gw.String(), &g) == CodeOK && g.Status == StatusMember
}

// TestCommitteeThreshold: with a committee of 5 and threshold 3, the
// proposer's approval and a second one do not admit a gateway; the third
// does, in its own block, and the gateway then anchors. Each refused
// approval gets its own code.
func TestCommitteeThreshold(t *testing.T) {
	f := newGovFixture(t, 5, 3)
	m := f.members
	gw := newKey(t)
	body := addGatewayBody(t, gw, "site-g", 20)
	id := anchor.ProposalID(body)
	f.want("proposal by member 0", signTx(t, m[0], body, nil), CodeOK)
	c := &chain{gw: gw}
	h1 := c.next(1)
	f.want("anchor before admission", anchorTx(t, gw, h1), CodeNotMember)
	f.want("approval by member 1", approvalTx(t, m[1], id), CodeOK)
	if f.isMember(gw.DID()) {
		t.Fatal("two approvals of five (threshold 3) admitted the gateway")
	}
	f.want("anchor after two approvals", anchorTx(t, gw, h1), CodeNotMember)

	// Refusals, each with its own code, before the third approval.
	stranger := newKey(t)
	f.want("approval by a non-member", approvalTx(t, stranger, id), CodeNotCommittee)
	f.want("approval by a regulator", approvalTx(t, f.regul, id), CodeNotCommittee)
	f.want("second approval by member 1", approvalTx(t, m[1], id), CodeAlreadyApproved)
	f.want("approval by the proposer", approvalTx(t, m[0], id), CodeAlreadyApproved)
	f.want("approval of an unknown proposal", approvalTx(t, m[2], anchor.SM3([]byte("nothing"))), CodeProposalUnknown)
	third := approvalTx(t, m[2], id)
	if f.isMember(gw.DID()) {
		t.Fatal("refused approvals admitted the gateway")
	}

	f.want("third approval", third, CodeOK)
	if !f.isMember(gw.DID()) {
		t.Fatal("the third approval did not admit the gateway")
	}
	var sawEvent bool
	for _, ev := range f.last.TxResults[0].Events {
		if ev.Type == "gateway" && ev.Attributes[0].Value == gw.DID().String() {
			sawEvent = true
		}
	}
	if !sawEvent {
		t.Fatalf("no gateway event in the executing block: %+v", f.last.TxResults[0].Events)
	}
	var p anchor.ProposalRecord
	if f.query("/proposal/"+id.String(), &p) != CodeOK || p.Status != ProposalExecuted || len(p.Approvals) != 3 || p.ExecutedHeight != f.height {
		t.Fatalf("proposal after execution: %+v", p)
	}
	f.want("replayed third approval", third, CodeDuplicate)
	f.want("approval of an executed proposal", approvalTx(t, m[3], id), CodeProposalExecuted)
	f.want("anchor after admission", anchorTx(t, gw, h1), CodeOK)

	// No single key admits a gateway: a member's proposal alone, and a
	// regulator's proposal (which is no approval), stay open.
	solo := newKey(t)
	soloBody := addGatewayBody(t, solo, "site-s", 100)
	f.want("solo proposal", signTx(t, m[4], soloBody, nil), CodeOK)
	regBody, err := anchor.NewProposalBody(anchor.KindRemoveGateway, &anchor.GatewayRefAction{DID: gw.DID()}, 100, nextTS())
	if err != nil {
		t.Fatal(err)
	}
	f.want("regulator proposal", signTx(t, f.regul, regBody, nil), CodeOK)
	f.want("proposal by a stranger", signTx(t, stranger, addGatewayBody(t, stranger, "x", 100), nil), CodeWrongSigner)
	if f.isMember(solo.DID()) || !f.isMember(gw.DID()) {
		t.Fatal("one key changed membership")
	}
	if f.query("/proposal/"+anchor.ProposalID(regBody).String(), &p) != CodeOK || len(p.Approvals) != 0 || p.Status != ProposalOpen {
		t.Fatalf("regulator proposal: %+v", p)
	}
}

// TestProposalExpires: a proposal whose approvals do not reach the
// threshold by its deadline height does nothing; a later approval is
// refused, and a proposal with a deadline below its block is refused.
func TestProposalExpires(t *testing.T) {
	f := newGovFixture(t, 3, 2)
	m := f.members
	gw := newKey(t)
	body := addGatewayBody(t, gw, "site-g", 3)
	id := anchor.ProposalID(body)
	f.want("proposal at height 1", signTx(t, m[0], body, nil), CodeOK)
	f.run()
	f.run() // height 3: the deadline, the last block an approval counts in
	var p anchor.ProposalRecord
	if f.query("/proposal/"+id.String(), &p); p.Status != ProposalOpen {
		t.Fatalf("at the deadline the proposal is %q", p.Status)
	}
	f.run() // height 4
	if f.query("/proposal/"+id.String(), &p); p.Status != ProposalExpired {
		t.Fatalf("past the deadline the proposal is %q", p.Status)
	}
	f.want("approval past the deadline", approvalTx(t, m[1], id), CodeProposalExpired)
	if f.isMember(gw.DID()) {
		t.Fatal("an expired proposal admitted the gateway")
	}
	f.want("proposal already expired", signTx(t, m[0], addGatewayBody(t, gw, "site-g", 4), nil), CodeProposalExpired)
	// The same change proposed again with a live deadline works.
	body2 := addGatewayBody(t, gw, "site-g", 10)
	f.want("new proposal", signTx(t, m[0], body2, nil), CodeOK)
	f.want("its approval", approvalTx(t, m[2], anchor.ProposalID(body2)), CodeOK)
	if !f.isMember(gw.DID()) {
		t.Fatal("a live proposal with 2 of 3 approvals did not admit the gateway")
	}
}

// TestValidatorProposals: executed validator proposals become
// ValidatorUpdates of their block; the ledger refuses changes CometBFT
// would refuse (unknown key, existing key, empty set).
func TestValidatorProposals(t *testing.T) {
	f := newGovFixture(t, 1, 1)
	m := f.committee
	newPub, _, _ := ed25519.GenerateKey(nil)
	prop := func(kind string, act any) []byte {
		b, err := anchor.NewProposalBody(kind, act, farDeadline, nextTS())
		return signTx(t, m, b, err)
	}
	f.want("add validator", prop(anchor.KindAddValidator, &anchor.ValidatorAction{Pub: newPub, Power: 7, Name: "org5"}), CodeOK)
	want := abci.Ed25519ValidatorUpdate(newPub, 7)
	if len(f.last.ValidatorUpdates) != 1 || f.last.ValidatorUpdates[0].String() != want.String() {
		t.Fatalf("validator updates %v, want %v", f.last.ValidatorUpdates, want)
	}
	var vals []anchor.ValidatorRecord
	if f.query("/validators", &vals); len(vals) != 3 {
		t.Fatalf("validators %+v", vals)
	}
	f.want("add it again", prop(anchor.KindAddValidator, &anchor.ValidatorAction{Pub: newPub, Power: 7}), CodeValidatorExists)
	stranger, _, _ := ed25519.GenerateKey(nil)
	f.want("power of a stranger", prop(anchor.KindSetValidatorPower, &anchor.ValidatorAction{Pub: stranger, Power: 3}), CodeValidatorUnknown)
	f.want("remove a stranger", prop(anchor.KindRemoveValidator, &anchor.ValidatorRefAction{Pub: stranger}), CodeValidatorUnknown)

	// Two changes of one key in one block: one update, the last.
	codes := f.run(prop(anchor.KindSetValidatorPower, &anchor.ValidatorAction{Pub: newPub, Power: 3}),
		prop(anchor.KindSetValidatorPower, &anchor.ValidatorAction{Pub: newPub, Power: 4}))
	want = abci.Ed25519ValidatorUpdate(newPub, 4)
	if !codesEqual(codes, []Code{CodeOK, CodeOK}) || len(f.last.ValidatorUpdates) != 1 || f.last.ValidatorUpdates[0].String() != want.String() {
		t.Fatalf("codes %v, updates %v", codes, f.last.ValidatorUpdates)
	}
	f.want("remove genesis validator 0", prop(anchor.KindRemoveValidator, &anchor.ValidatorRefAction{Pub: f.vals[0]}), CodeOK)
	want = abci.Ed25519ValidatorUpdate(f.vals[0], 0)
	if len(f.last.ValidatorUpdates) != 1 || f.last.ValidatorUpdates[0].String() != want.String() {
		t.Fatalf("removal updates %v", f.last.ValidatorUpdates)
	}
	f.want("remove validator 1", prop(anchor.KindRemoveValidator, &anchor.ValidatorRefAction{Pub: f.vals[1]}), CodeOK)
	f.want("remove the last validator", prop(anchor.KindRemoveValidator, &anchor.ValidatorRefAction{Pub: newPub}), CodeValidatorSetEmpty)
	if f.query("/validators", &vals); len(vals) != 1 || string(vals[0].Pub) != string(newPub) || vals[0].Power != 4 || vals[0].Name != "org5" ||
		vals[0].Address != cmted.PubKey(newPub).Address().String() {
		t.Fatalf("validators after the changes: %+v", vals)
	}
	// The set survives a restart of the application.
	f.app = nil
	f.db.Close()
	f.open()
	if f.query("/validators", &vals); len(vals) != 1 {
		t.Fatalf("validators after reopen: %+v", vals)
	}
}

// TestSetCommitteeAndRegulators: the committee and the regulators change
// only by proposal; a replaced member's approvals stop counting and it can
// no longer approve; a new regulator may revoke at once.
func TestSetCommitteeAndRegulators(t *testing.T) {
	f := newGovFixture(t, 2, 2)
	m := f.members
	n1, n2, reg2 := newKey(t), newKey(t), newKey(t)
	der := func(s *device.KeySigner) []byte { d, _ := device.MarshalPublicKeyDER(s.Public()); return d }
	// A pending proposal approved by m[1] (who is about to leave).
	gw := newKey(t)
	pending := addGatewayBody(t, gw, "site-g", farDeadline)
	f.want("pending proposal by m1", signTx(t, m[1], pending, nil), CodeOK)

	setC, err := anchor.NewProposalBody(anchor.KindSetCommittee, &anchor.Committee{Members: [][]byte{der(m[0]), der(n1), der(n2)}, Threshold: 2}, farDeadline, nextTS())
	f.want("set-committee proposal", signTx(t, m[0], setC, err), CodeOK)
	f.want("its approval", approvalTx(t, m[1], anchor.ProposalID(setC)), CodeOK)
	var c anchor.CommitteeRecord
	if f.query("/committee", &c); c.Threshold != 2 || len(c.Members) != 3 || c.Members[1].DID != n1.DID() {
		t.Fatalf("committee after set-committee: %+v", c)
	}
	f.want("approval by a removed member", approvalTx(t, m[1], anchor.ProposalID(pending)), CodeNotCommittee)
	// m[1]'s earlier approval no longer counts: one more is not enough.
	f.want("approval by n1", approvalTx(t, n1, anchor.ProposalID(pending)), CodeOK)
	if f.isMember(gw.DID()) {
		t.Fatal("a removed member's approval counted")
	}
	f.want("approval by n2", approvalTx(t, n2, anchor.ProposalID(pending)), CodeOK)
	if !f.isMember(gw.DID()) {
		t.Fatal("two current members' approvals did not admit the gateway")
	}

	// Regulators.
	dev := newKey(t)
	f.want("device", registerDeviceTx(t, f.gw, dev, "site-a"), CodeOK)
	f.want("revoke by a future regulator", revokeDeviceTx(t, reg2, dev.DID()), CodeWrongSigner)
	setR, err := anchor.NewProposalBody(anchor.KindSetRegulators, &anchor.RegulatorsAction{Regulators: [][]byte{der(reg2)}}, farDeadline, nextTS())
	f.want("set-regulators", signTx(t, n1, setR, err), CodeOK)
	f.want("its approval", approvalTx(t, n2, anchor.ProposalID(setR)), CodeOK)
	f.want("revoke by the old regulator", revokeDeviceTx(t, f.regul, dev.DID()), CodeWrongSigner)
	f.want("revoke by the new regulator", revokeDeviceTx(t, reg2, dev.DID()), CodeOK)
}
