package app

import (
	"crypto/ecdsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/crypto/ed25519"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

// Committee governance (docs/ledger.md): membership, the validator set, the
// committee and the regulators change only through a Proposal that K
// distinct committee members approved at or before its deadline height.

// Proposal status values (expired is computed in query answers).
const (
	ProposalOpen     = "open"
	ProposalExecuted = "executed"
	ProposalExpired  = "expired"
)

// Keys of the governance state.
const (
	keyCommittee  = "committee"  // anchor.Committee
	keyRegulators = "regulators" // [][]byte, SPKI DER
)

func keyProposal(id anchor.Hash) string { return "p/" + id.String() }
func keyValidator(pub []byte) string    { return "v/" + hex.EncodeToString(pub) }

// keySet is a committee or regulator list, parsed.
type keySet struct {
	keys      map[device.DID]*ecdsa.PublicKey
	threshold int
}

func (a *App) readKeys(st reader, key string) *keySet {
	var ders [][]byte
	ks := &keySet{keys: map[device.DID]*ecdsa.PublicKey{}}
	switch key {
	case keyCommittee:
		var c anchor.Committee
		if _, err := st.getJSON(key, &c); err != nil {
			panic(err)
		}
		ders, ks.threshold = c.Members, c.Threshold
	default:
		if _, err := st.getJSON(key, &ders); err != nil {
			panic(err)
		}
	}
	for _, der := range ders {
		pub, err := a.parseKey(der)
		if err != nil {
			panic(fmt.Errorf("ledger: stored %s key: %w", key, err))
		}
		ks.keys[device.DIDFromPublicKey(pub)] = pub
	}
	return ks
}

func (a *App) committee(st reader) *keySet  { return a.readKeys(st, keyCommittee) }
func (a *App) regulators(st reader) *keySet { return a.readKeys(st, keyRegulators) }

// initGovernance stages genesis' committee, regulators and validators.
func initGovernance(st *overlay, g *anchor.GenesisState, vals []abci.ValidatorUpdate) error {
	st.setJSON(keyCommittee, &anchor.Committee{Members: g.Committee.Members, Threshold: g.Committee.Threshold})
	regs := g.Regulators
	if regs == nil {
		regs = [][]byte{}
	}
	st.setJSON(keyRegulators, &regs)
	for _, v := range vals {
		pk := v.PubKey.GetEd25519()
		if len(pk) != ed25519.PubKeySize {
			return fmt.Errorf("genesis validator key is not ed25519 (%s)", v.PubKey.String())
		}
		st.setJSON(keyValidator(pk), &anchor.ValidatorRecord{
			Pub: pk, Address: ed25519.PubKey(pk).Address().String(), Power: v.Power,
		})
	}
	return nil
}

// propose records a proposal. The proposer must be a committee member or a
// regulator; a member's proposal counts as its first approval, so with
// K = 1 a member's proposal takes effect in its own block.
func (a *App) propose(st *overlay, tx *anchor.Tx, b *anchor.ProposalBody, id anchor.Hash, pos position, check checkFunc) (*outcome, *refusal) {
	com := a.committee(st)
	pub := com.keys[tx.Signer]
	if pub == nil {
		pub = a.regulators(st).keys[tx.Signer]
	}
	if pub == nil {
		return nil, refuse(CodeWrongSigner, string(tx.Signer)+" is neither a committee member nor a regulator")
	}
	if r := check(pub); r != nil {
		return nil, r
	}
	if pos.height > b.Deadline {
		return nil, refuse(CodeProposalExpired, fmt.Sprintf("deadline %d, block %d", b.Deadline, pos.height))
	}
	// The change must apply now; it is checked again when it executes.
	if r := a.applyAction(st, b.Kind, b.DecodedAction(), pos, true); r != nil {
		return nil, r
	}
	rec := &anchor.ProposalRecord{
		ID: id, Kind: b.Kind, Action: b.Action, Deadline: b.Deadline, Proposer: tx.Signer,
		Height: pos.height, Tx: pos.tx, Approvals: []device.DID{}, Status: ProposalOpen,
	}
	if com.keys[tx.Signer] != nil {
		rec.Approvals = append(rec.Approvals, tx.Signer)
	}
	out := &outcome{typ: anchor.TypeProposal, events: []abci.Event{proposalEvent(rec, "propose", tx.Signer)}}
	return a.maybeExecute(st, rec, com, b.DecodedAction(), pos, out)
}

// approve adds a committee member's approval; the K-th distinct one
// executes the proposal in this block.
func (a *App) approve(st *overlay, tx *anchor.Tx, b *anchor.ApprovalBody, pos position, check checkFunc) (*outcome, *refusal) {
	com := a.committee(st)
	pub := com.keys[tx.Signer]
	if pub == nil {
		return nil, refuse(CodeNotCommittee, string(tx.Signer))
	}
	if r := check(pub); r != nil {
		return nil, r
	}
	var rec anchor.ProposalRecord
	found, err := st.getJSON(keyProposal(b.Proposal), &rec)
	if err != nil {
		panic(err)
	}
	if !found {
		return nil, refuse(CodeProposalUnknown, b.Proposal.String())
	}
	if rec.Status == ProposalExecuted {
		return nil, refuse(CodeProposalExecuted, fmt.Sprintf("%s at height %d", rec.ID, rec.ExecutedHeight))
	}
	if pos.height > rec.Deadline {
		return nil, refuse(CodeProposalExpired, fmt.Sprintf("%s: deadline %d, block %d", rec.ID, rec.Deadline, pos.height))
	}
	for _, d := range rec.Approvals {
		if d == tx.Signer {
			return nil, refuse(CodeAlreadyApproved, string(tx.Signer)+" approved "+rec.ID.String())
		}
	}
	act, err := anchor.DecodeAction(rec.Kind, rec.Action)
	if err != nil {
		panic(fmt.Errorf("ledger: stored proposal %s: %w", rec.ID, err))
	}
	rec.Approvals = append(append([]device.DID{}, rec.Approvals...), tx.Signer)
	out := &outcome{typ: anchor.TypeApproval, events: []abci.Event{proposalEvent(&rec, "approve", tx.Signer)}}
	return a.maybeExecute(st, &rec, com, act, pos, out)
}

// maybeExecute stores rec, executing it first if the approvals of current
// committee members reach the threshold. A change that no longer applies
// (the gateway joined meanwhile…) refuses the tx with the change's code and
// leaves the proposal open.
func (a *App) maybeExecute(st *overlay, rec *anchor.ProposalRecord, com *keySet, act any, pos position, out *outcome) (*outcome, *refusal) {
	n := 0
	for _, d := range rec.Approvals {
		if com.keys[d] != nil {
			n++
		}
	}
	if n >= com.threshold {
		if r := a.applyAction(st, rec.Kind, act, pos, false); r != nil {
			return nil, r
		}
		rec.Status, rec.ExecutedHeight, rec.ExecutedTx = ProposalExecuted, pos.height, pos.tx
		out.events = append(out.events, proposalEvent(rec, "execute", ""))
		out.events = append(out.events, actionEvents(rec.Kind, act)...)
		if vu := validatorUpdate(rec.Kind, act); vu != nil {
			out.valUpdates = append(out.valUpdates, *vu)
		}
	}
	st.setJSON(keyProposal(rec.ID), rec)
	return out, nil
}

// applyAction checks that the change applies to st and, unless dryRun,
// applies it.
func (a *App) applyAction(st *overlay, kind string, act any, pos position, dryRun bool) *refusal {
	switch v := act.(type) {
	case *anchor.GatewayAction:
		if v.Succeeds != "" {
			return a.applySuccession(st, v, pos, dryRun)
		}
		var rec anchor.GatewayRecord
		found, err := st.getJSON(keyGateway(v.DID), &rec)
		if err != nil {
			panic(err)
		}
		if found && rec.Status == StatusMember {
			return refuse(CodeGatewayExists, string(v.DID))
		}
		if found && rec.Successor != "" { // rejoining would fork its successor's chain
			return succeeded(&rec)
		}
		if dryRun {
			return nil
		}
		// A removed gateway that rejoins keeps its batch chain.
		rec.DID, rec.Pub, rec.Site, rec.Name, rec.Status = v.DID, v.Pub, v.Site, v.Name, StatusMember
		rec.Height, rec.Tx, rec.RemovedHeight, rec.RemovedTx = pos.height, pos.tx, 0, ""
		st.setJSON(keyGateway(v.DID), &rec)
	case *anchor.GatewayRefAction:
		var rec anchor.GatewayRecord
		found, err := st.getJSON(keyGateway(v.DID), &rec)
		if err != nil {
			panic(err)
		}
		if !found || rec.Status != StatusMember {
			return refuse(CodeGatewayUnknown, string(v.DID))
		}
		if dryRun {
			return nil
		}
		rec.Status, rec.RemovedHeight, rec.RemovedTx = StatusRemoved, pos.height, pos.tx
		st.setJSON(keyGateway(v.DID), &rec)
	case *anchor.ValidatorAction:
		var rec anchor.ValidatorRecord
		found, err := st.getJSON(keyValidator(v.Pub), &rec)
		if err != nil {
			panic(err)
		}
		if kind == anchor.KindAddValidator && found {
			return refuse(CodeValidatorExists, rec.Address)
		}
		if kind == anchor.KindSetValidatorPower && !found {
			return refuse(CodeValidatorUnknown, ed25519.PubKey(v.Pub).Address().String())
		}
		if dryRun {
			return nil
		}
		name := rec.Name
		if kind == anchor.KindAddValidator {
			name = v.Name
		}
		st.setJSON(keyValidator(v.Pub), &anchor.ValidatorRecord{
			Pub: v.Pub, Address: ed25519.PubKey(v.Pub).Address().String(), Power: v.Power, Name: name, Height: pos.height,
		})
	case *anchor.ValidatorRefAction:
		found, err := st.get(keyValidator(v.Pub))
		if err != nil {
			panic(err)
		}
		if found == nil {
			return refuse(CodeValidatorUnknown, ed25519.PubKey(v.Pub).Address().String())
		}
		if len(a.validators(st)) <= 1 {
			return refuse(CodeValidatorSetEmpty, ed25519.PubKey(v.Pub).Address().String())
		}
		if dryRun {
			return nil
		}
		st.del(keyValidator(v.Pub))
	case *anchor.Committee:
		if !dryRun {
			st.setJSON(keyCommittee, v)
		}
	case *anchor.RegulatorsAction:
		if !dryRun {
			regs := v.Regulators
			st.setJSON(keyRegulators, &regs)
		}
	default:
		panic(fmt.Sprintf("ledger: action %T", act))
	}
	return nil
}

// validators lists the application's validator set, by key.
func (a *App) validators(st *overlay) []anchor.ValidatorRecord {
	prefix := "v/"
	seen := map[string]bool{}
	var out []anchor.ValidatorRecord
	// Staged writes first (they shadow the database), then the database.
	for k, e := range st.allWrites(prefix) {
		seen[k] = true
		if e == nil {
			continue
		}
		var r anchor.ValidatorRecord
		if err := json.Unmarshal(e, &r); err != nil {
			panic(err)
		}
		out = append(out, r)
	}
	it, err := a.db.Iterator([]byte(prefix), prefixEnd([]byte(prefix)))
	if err != nil {
		panic(err)
	}
	defer it.Close()
	for ; it.Valid(); it.Next() {
		if seen[string(it.Key())] {
			continue
		}
		var r anchor.ValidatorRecord
		if err := json.Unmarshal(it.Value(), &r); err != nil {
			panic(fmt.Errorf("ledger: corrupt validator record: %w", err))
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return hex.EncodeToString(out[i].Pub) < hex.EncodeToString(out[j].Pub) })
	return out
}

func validatorUpdate(kind string, act any) *abci.ValidatorUpdate {
	switch v := act.(type) {
	case *anchor.ValidatorAction:
		u := abci.Ed25519ValidatorUpdate(v.Pub, v.Power)
		return &u
	case *anchor.ValidatorRefAction:
		u := abci.Ed25519ValidatorUpdate(v.Pub, 0)
		return &u
	}
	return nil
}

func proposalEvent(rec *anchor.ProposalRecord, action string, signer device.DID) abci.Event {
	attrs := []abci.EventAttribute{
		{Key: "id", Value: rec.ID.String(), Index: true},
		{Key: "kind", Value: rec.Kind, Index: true},
		{Key: "action", Value: action, Index: true},
	}
	if signer != "" {
		attrs = append(attrs, abci.EventAttribute{Key: "signer", Value: string(signer), Index: true})
	}
	return abci.Event{Type: "proposal", Attributes: attrs}
}

// actionEvents are the events of an executed change (a gateway's
// membership events keep their pre-governance form).
func actionEvents(kind string, act any) []abci.Event {
	switch v := act.(type) {
	case *anchor.GatewayAction:
		if v.Succeeds != "" {
			return successionEvents(v)
		}
		return []abci.Event{gatewayEvent(v.DID, "register")}
	case *anchor.GatewayRefAction:
		return []abci.Event{gatewayEvent(v.DID, "remove")}
	case *anchor.ValidatorAction:
		return []abci.Event{validatorEvent(v.Pub, v.Power)}
	case *anchor.ValidatorRefAction:
		return []abci.Event{validatorEvent(v.Pub, 0)}
	}
	return []abci.Event{{Type: "committee", Attributes: []abci.EventAttribute{{Key: "action", Value: kind, Index: true}}}}
}

// gatewayEvent is a membership change's indexed event (the same as before
// governance: gateway.did, gateway.action).
func gatewayEvent(did device.DID, action string) abci.Event {
	return abci.Event{Type: "gateway", Attributes: []abci.EventAttribute{
		{Key: "did", Value: string(did), Index: true},
		{Key: "action", Value: action, Index: true},
	}}
}

func validatorEvent(pub []byte, power int64) abci.Event {
	return abci.Event{Type: "validator", Attributes: []abci.EventAttribute{
		{Key: "address", Value: ed25519.PubKey(pub).Address().String(), Index: true},
		{Key: "power", Value: fmt.Sprint(power), Index: true},
	}}
}

// mergeValidatorUpdates keeps the last update of each key, in the order of
// first appearance: CometBFT refuses a list that names a key twice.
func mergeValidatorUpdates(in []abci.ValidatorUpdate) []abci.ValidatorUpdate {
	idx := map[string]int{}
	var out []abci.ValidatorUpdate
	for _, u := range in {
		k := u.PubKey.String()
		if i, ok := idx[k]; ok {
			out[i] = u
			continue
		}
		idx[k] = len(out)
		out = append(out, u)
	}
	return out
}

// queryGovernance answers /committee, /proposal/{id}, /proposals and
// /validators.
func (a *App) queryGovernance(st *overlay, parts []string) ([]byte, *refusal, bool) {
	switch {
	case len(parts) == 1 && parts[0] == "committee":
		var c anchor.Committee
		if _, err := st.getJSON(keyCommittee, &c); err != nil {
			panic(err)
		}
		var regs [][]byte
		if _, err := st.getJSON(keyRegulators, &regs); err != nil {
			panic(err)
		}
		b, _ := json.Marshal(&anchor.CommitteeRecord{Members: keyEntries(c.Members), Threshold: c.Threshold, Regulators: keyEntries(regs)})
		return b, nil, true
	case len(parts) == 2 && parts[0] == "proposal":
		id, err := anchor.ParseHash(parts[1])
		if err != nil {
			return nil, refuse(CodeBadQuery, err.Error()), true
		}
		var rec anchor.ProposalRecord
		found, err := st.getJSON(keyProposal(id), &rec)
		if err != nil {
			panic(err)
		}
		if !found {
			return nil, refuse(CodeNotFound, "proposal "+id.String()), true
		}
		a.answerStatus(&rec)
		b, _ := json.Marshal(&rec)
		return b, nil, true
	case len(parts) == 1 && parts[0] == "proposals":
		out := []anchor.ProposalRecord{}
		prefix := []byte("p/")
		it, err := a.db.Iterator(prefix, prefixEnd(prefix))
		if err != nil {
			panic(err)
		}
		defer it.Close()
		for ; it.Valid() && len(out) < maxListed; it.Next() {
			var rec anchor.ProposalRecord
			if err := json.Unmarshal(it.Value(), &rec); err != nil {
				panic(fmt.Errorf("ledger: corrupt proposal: %w", err))
			}
			a.answerStatus(&rec)
			out = append(out, rec)
		}
		sort.SliceStable(out, func(i, j int) bool { return out[i].Height < out[j].Height })
		b, _ := json.Marshal(out)
		return b, nil, true
	case len(parts) == 1 && parts[0] == "validators":
		out := a.validators(st)
		if out == nil {
			out = []anchor.ValidatorRecord{}
		}
		b, _ := json.Marshal(out)
		return b, nil, true
	case len(parts) == 1 && parts[0] == "gateways":
		out := []json.RawMessage{}
		prefix := []byte("g/")
		it, err := a.db.Iterator(prefix, prefixEnd(prefix))
		if err != nil {
			panic(err)
		}
		defer it.Close()
		for ; it.Valid() && len(out) < maxListed; it.Next() {
			out = append(out, append(json.RawMessage(nil), it.Value()...))
		}
		b, _ := json.Marshal(out)
		return b, nil, true
	}
	return nil, nil, false
}

func (a *App) answerStatus(rec *anchor.ProposalRecord) {
	if rec.Status == ProposalOpen && a.height > rec.Deadline {
		rec.Status = ProposalExpired
	}
}

func keyEntries(ders [][]byte) []anchor.KeyEntry {
	out := []anchor.KeyEntry{}
	for _, der := range ders {
		pub, err := device.ParsePublicKeyDER(der)
		if err != nil {
			continue
		}
		out = append(out, anchor.KeyEntry{DID: device.DIDFromPublicKey(pub), Pub: der})
	}
	return out
}
