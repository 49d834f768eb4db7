package app

import (
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	abci "github.com/cometbft/cometbft/abci/types"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

// Gateway key rotation (docs/ledger.md, "Gateway key rotation"). An
// add-gateway proposal that names a predecessor (succeeds) admits a new key
// of an existing gateway. When it executes, the successor's record starts
// where the predecessor's chain stands (LastSeq, LastHash, LastRecord), so
// its next AnchorBatch continues that chain; the predecessor keeps its
// batches and its membership (a later remove-gateway ends that) but may no
// longer anchor, register devices or revoke them; the devices it registered
// are served and revoked by its successor. A line of successors follows
// Predecessor links back, never in a cycle: a successor is always a key the
// ledger has never seen, and a gateway is succeeded at most once.

// maxLine bounds how far a query follows Predecessor links (one per key
// rotation of one gateway).
const maxLine = 256

// succeeded refuses a gateway whose key was succeeded.
func succeeded(rec *anchor.GatewayRecord) *refusal {
	if rec.Successor == "" {
		return nil
	}
	return refuse(CodeGatewaySucceeded, fmt.Sprintf("%s succeeded by %s at height %d", rec.DID, rec.Successor, rec.SucceededHeight))
}

// applySuccession checks (and unless dryRun applies) the add-gateway of v,
// which names the predecessor in v.Succeeds.
func (a *App) applySuccession(st *overlay, v *anchor.GatewayAction, pos position, dryRun bool) *refusal {
	var next anchor.GatewayRecord
	found, err := st.getJSON(keyGateway(v.DID), &next)
	if err != nil {
		panic(err)
	}
	if found {
		return refuse(CodeSuccessorExists, fmt.Sprintf("%s is already known to the ledger (%s, registered at height %d); a successor must be a new key", v.DID, next.Status, next.Height))
	}
	var prev anchor.GatewayRecord
	found, err = st.getJSON(keyGateway(v.Succeeds), &prev)
	if err != nil {
		panic(err)
	}
	switch {
	case !found:
		return refuse(CodePredecessorUnknown, string(v.Succeeds)+" was never a member")
	case prev.Successor != "":
		return succeeded(&prev)
	case prev.Status != StatusMember:
		return refuse(CodePredecessorUnknown, fmt.Sprintf("%s was removed at height %d", prev.DID, prev.RemovedHeight))
	case prev.LastSeq == 0:
		// The successor's first header would start a chain of its own (seq
		// 1, zero prev): nothing would prove offline that it took over this
		// gateway's devices (docs/proof-bundle.md, "Key rotation").
		return refuse(CodePredecessorEmpty, fmt.Sprintf("%s has anchored no batch; admit the new key as a new gateway", prev.DID))
	case prev.Site != v.Site:
		return refuse(CodeWrongSite, fmt.Sprintf("successor site %q, predecessor %s site %q", v.Site, prev.DID, prev.Site))
	}
	if dryRun {
		return nil
	}
	st.setJSON(keyGateway(v.DID), &anchor.GatewayRecord{
		DID: v.DID, Pub: v.Pub, Site: v.Site, Name: v.Name, Status: StatusMember,
		Height: pos.height, Tx: pos.tx,
		LastSeq: prev.LastSeq, LastHash: prev.LastHash, LastRecord: prev.LastRecord,
		Predecessor: prev.DID,
	})
	prev.Successor, prev.SucceededHeight, prev.SucceededTx = v.DID, pos.height, pos.tx
	st.setJSON(keyGateway(prev.DID), &prev)
	return nil
}

// successionEvents are the events of an executed succession: the new
// gateway's registration and the predecessor's "succeed" event.
func successionEvents(v *anchor.GatewayAction) []abci.Event {
	ev := gatewayEvent(v.Succeeds, "succeed")
	ev.Attributes = append(ev.Attributes, abci.EventAttribute{Key: "successor", Value: string(v.DID), Index: true})
	return []abci.Event{gatewayEvent(v.DID, "register"), ev}
}

// currentHolder follows Successor links from did to the gateway that holds
// its line now, and returns it with its key.
func (a *App) currentHolder(st reader, did device.DID) (*anchor.GatewayRecord, *ecdsa.PublicKey) {
	var rec anchor.GatewayRecord
	for range maxLine {
		found, err := st.getJSON(keyGateway(did), &rec)
		if err != nil || !found {
			panic(fmt.Errorf("ledger: gateway line of %s: record missing (%v)", did, err))
		}
		if rec.Successor == "" {
			break
		}
		did = rec.Successor
	}
	pub, err := a.parseKey(rec.Pub)
	if err != nil {
		panic(fmt.Errorf("ledger: stored gateway key: %w", err))
	}
	return &rec, pub
}

// line returns did and its predecessors, newest first.
func line(st reader, did device.DID) []device.DID {
	out := []device.DID{did}
	for len(out) < maxLine {
		var rec anchor.GatewayRecord
		found, err := st.getJSON(keyGateway(did), &rec)
		if err != nil {
			panic(err)
		}
		if !found || rec.Predecessor == "" {
			break
		}
		did = rec.Predecessor
		out = append(out, did)
	}
	return out
}

// lineBatch answers /batch/{gw}/{seq} for a successor: the batch of that
// seq under the newest gateway of its line that holds it (a successor's
// chain continues its predecessor's, so its early seqs are the
// predecessor's batches).
func (a *App) lineBatch(st *overlay, gw device.DID, seq uint64) []byte {
	for _, d := range line(st, gw) {
		v, err := st.get(keyBatch(d, seq))
		if err != nil {
			panic(err)
		}
		if v != nil {
			return v
		}
	}
	return nil
}

// lineDevices lists the devices registered through gw and through its
// predecessors, by DID: the first devicesPage of them whose DID sorts after
// after ("" for the first page). A client asks again after the last DID it
// got until a page comes back empty (anchor/ledgerclient GatewayDevices).
func (a *App) lineDevices(st *overlay, gw, after device.DID) []byte {
	type dev struct {
		did device.DID
		raw json.RawMessage
	}
	page := a.devicesPage()
	var out []dev
	for _, g := range line(st, gw) {
		// Each member of the line gives its first page after after; the
		// page of the whole line is the first page of their union.
		prefix := []byte(keyGatewayDevice(g, ""))
		start := prefix
		if after != "" {
			start = append([]byte(keyGatewayDevice(g, after)), 0)
		}
		it, err := a.db.Iterator(start, prefixEnd(prefix))
		if err != nil {
			panic(err)
		}
		for n := 0; it.Valid() && n < page; it.Next() {
			d := device.DID(strings.TrimPrefix(string(it.Key()), string(prefix)))
			v, err := st.get(keyDevice(d))
			if err != nil {
				it.Close()
				panic(err)
			}
			if v != nil {
				out = append(out, dev{d, v})
				n++
			}
		}
		it.Close()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].did < out[j].did })
	out = out[:min(len(out), page)]
	raws := make([]json.RawMessage, len(out))
	for i := range out {
		raws[i] = out[i].raw
	}
	b, _ := json.Marshal(raws)
	return b
}

// devicesPage is how many devices one /gateway/{did}/devices answer holds
// (SetDevicesPage; maxListed by default).
func (a *App) devicesPage() int {
	if n := a.listPage.Load(); n > 0 {
		return int(n)
	}
	return maxListed
}

// SetDevicesPage sets how many devices one /gateway/{did}/devices answer
// holds (0: maxListed, 10,000): tests of the paging use a small page.
func (a *App) SetDevicesPage(n int) { a.listPage.Store(int64(n)) }

// inLine reports whether did is holder or one of its predecessors.
func inLine(st reader, holder, did device.DID) bool {
	for _, d := range line(st, holder) {
		if d == did {
			return true
		}
	}
	return false
}
