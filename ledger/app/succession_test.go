package app

import (
	"slices"
	"strings"
	"testing"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

// successionBody is an add-gateway proposal admitting next as the successor
// of prev.
func successionBody(t *testing.T, next device.Signer, site string, prev device.DID) []byte {
	t.Helper()
	act, err := anchor.NewGatewayAction(next.Public(), site, "rotated "+site)
	if err != nil {
		t.Fatal(err)
	}
	act.Succeeds = prev
	b, err := anchor.NewProposalBody(anchor.KindAddGateway, act, farDeadline, nextTS())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pass proposes body (member 0) and approves it (member 1): with a
// threshold of 2 it executes in the approval's block.
func (f *govFixture) pass(what string, body []byte) {
	f.t.Helper()
	f.want(what+": proposal", signTx(f.t, f.members[0], body, nil), CodeOK)
	f.want(what+": approval", approvalTx(f.t, f.members[1], anchor.ProposalID(body)), CodeOK)
}

// wantLog is want that also checks the refusal's reason.
func (f *govFixture) wantLog(what string, tx []byte, code Code, reason string) {
	f.t.Helper()
	f.want(what, tx, code)
	if got := f.last.TxResults[0].Log; !strings.Contains(got, reason) {
		f.t.Fatalf("%s: reason %q does not say %q", what, got, reason)
	}
}

// TestGatewaySuccession: a committee-approved successor key continues the
// old gateway's batch chain and serves (and revokes) its devices; the old
// key can no longer anchor, register or revoke; every wrong succession is
// refused with its own code; removing the old gateway later disturbs
// neither the successor's chain nor the devices.
func TestGatewaySuccession(t *testing.T) {
	f := newGovFixture(t, 3, 2)
	old := f.gw
	c := &chain{gw: old}
	for range 3 {
		h := c.next(4)
		f.want("old gateway anchors", anchorTx(t, old, h), CodeOK)
		c.advance(h)
	}
	dev1 := newKey(t)
	f.want("old gateway registers a device", registerDeviceTx(t, old, dev1, "site-a"), CodeOK)

	// Refusals, each its own code, before anything changed.
	next := newKey(t)
	other := newKey(t)
	f.pass("admit another gateway", addGatewayBody(t, other, "site-a", farDeadline))
	f.want("succeeding an unknown gateway", signTx(t, f.members[0], successionBody(t, next, "site-a", newKey(t).DID()), nil), CodePredecessorUnknown)
	f.wantLog("a successor that already exists", signTx(t, f.members[0], successionBody(t, other, "site-a", old.DID()), nil), CodeSuccessorExists, "must be a new key")
	f.wantLog("a successor at another site", signTx(t, f.members[0], successionBody(t, next, "site-b", old.DID()), nil), CodeWrongSite, "predecessor")
	f.wantLog("succeeding a gateway that anchored nothing", signTx(t, f.members[0], successionBody(t, next, "site-a", other.DID()), nil), CodePredecessorEmpty, "anchored no batch")
	f.pass("remove the other gateway", signTxBody(t, removeGatewayTx(t, f.members[0], other.DID())))
	f.wantLog("succeeding a removed gateway", signTx(t, f.members[0], successionBody(t, next, "site-a", other.DID()), nil), CodePredecessorUnknown, "removed at height")
	if code := f.query("/gateway/"+next.DID().String(), nil); code != CodeNotFound {
		t.Fatalf("a refused succession left the successor on the ledger (query code %d)", code)
	}

	// The succession: one approval short, the old key still anchors.
	body := successionBody(t, next, "site-a", old.DID())
	f.want("succession proposed", signTx(t, f.members[0], body, nil), CodeOK)
	h := c.next(2)
	f.want("old key anchors while the succession waits", anchorTx(t, old, h), CodeOK)
	c.advance(h)
	f.want("succession approved", approvalTx(t, f.members[1], anchor.ProposalID(body)), CodeOK)
	switchHeight := f.height
	var sawSucceed bool
	for _, ev := range f.last.TxResults[0].Events {
		if ev.Type == "gateway" && ev.Attributes[0].Value == old.DID().String() && ev.Attributes[1].Value == "succeed" {
			sawSucceed = true
		}
	}
	if !sawSucceed {
		t.Errorf("no gateway succeed event for %s in %v", old.DID(), f.last.TxResults[0].Events)
	}

	var og, ng anchor.GatewayRecord
	f.query("/gateway/"+old.DID().String(), &og)
	f.query("/gateway/"+next.DID().String(), &ng)
	if og.Successor != next.DID() || og.SucceededHeight != switchHeight || og.Status != StatusMember {
		t.Fatalf("old gateway record after succession: %+v", og)
	}
	if ng.Predecessor != old.DID() || ng.LastSeq != 4 || ng.LastHash != c.prev || ng.LastRecord != c.last || ng.Status != StatusMember {
		t.Fatalf("successor record: %+v, want the old chain (seq 4, last record %d)", ng, c.last)
	}
	var lb anchor.BatchRecord
	if code := f.query("/last-batch/"+next.DID().String(), &lb); code != CodeOK || lb.Gateway != old.DID() || lb.Seq != 4 {
		t.Fatalf("last batch of the successor before it anchored: code %d, %s #%d (want the old gateway's #4)", code, lb.Gateway, lb.Seq)
	}

	// The old key is out; the successor continues the chain.
	reason := "succeeded by " + next.DID().String()
	h = c.next(3)
	f.wantLog("old key anchors after succession", anchorTx(t, old, h), CodeGatewaySucceeded, reason)
	f.wantLog("old key registers a device", registerDeviceTx(t, old, newKey(t), "site-a"), CodeGatewaySucceeded, reason)
	f.wantLog("old key revokes its device", revokeDeviceTx(t, old, dev1.DID()), CodeGatewaySucceeded, reason)
	f.want("successor starting a fresh chain", anchorTx(t, next, (&chain{gw: next}).next(1)), CodeSequenceGap)
	nc := &chain{gw: next, seq: c.seq, prev: c.prev, last: c.last}
	h = nc.next(5)
	f.want("successor anchors seq 5", anchorTx(t, next, h), CodeOK)
	nc.advance(h)
	dev2 := newKey(t)
	f.want("successor registers a device", registerDeviceTx(t, next, dev2, "site-a"), CodeOK)

	var b anchor.BatchRecord
	if code := f.query("/batch/"+next.DID().String()+"/2", &b); code != CodeOK || b.Gateway != old.DID() || b.Seq != 2 {
		t.Fatalf("batch 2 through the successor: code %d, %s #%d", code, b.Gateway, b.Seq)
	}
	if code := f.query("/batch/"+next.DID().String()+"/5", &b); code != CodeOK || b.Gateway != next.DID() {
		t.Fatalf("batch 5 of the successor: code %d, %s", code, b.Gateway)
	}
	if code := f.query("/batch/"+old.DID().String()+"/5", nil); code != CodeNotFound {
		t.Fatalf("the old gateway's chain answered batch 5 (code %d)", code)
	}
	wantDevices := func(when string, want ...device.DID) {
		t.Helper()
		var devs []anchor.DeviceRecord
		if code := f.query("/gateway/"+next.DID().String()+"/devices", &devs); code != CodeOK {
			t.Fatalf("%s: devices query code %d", when, code)
		}
		got := map[device.DID]string{}
		for _, d := range devs {
			got[d.DID] = d.Status
		}
		if len(devs) != len(want) {
			t.Fatalf("%s: successor serves %v, want %v", when, got, want)
		}
		for _, d := range want {
			if _, ok := got[d]; !ok {
				t.Fatalf("%s: successor does not serve %s (serves %v)", when, d, got)
			}
		}
	}
	wantDevices("after succession", dev1.DID(), dev2.DID())

	// Paging: the line's devices, registered through both keys, come a
	// page at a time in DID order, each page after the last DID of the
	// one before, until an empty page; every device once.
	all := []device.DID{dev1.DID(), dev2.DID()}
	for range 2 {
		d := newKey(t)
		f.want("successor registers another device", registerDeviceTx(t, next, d, "site-a"), CodeOK)
		all = append(all, d.DID())
	}
	slices.Sort(all)
	for _, size := range []int{1, 2, 3, 4, 5} {
		f.app.SetDevicesPage(size)
		var got []device.DID
		path := "/gateway/" + next.DID().String() + "/devices"
		for pages := 0; ; pages++ {
			var devs []anchor.DeviceRecord
			if code := f.query(path, &devs); code != CodeOK {
				t.Fatalf("page %d of %d: %s: code %d", pages, size, path, code)
			}
			if len(devs) > size || pages > len(all) {
				t.Fatalf("page size %d: page %d holds %d devices", size, pages, len(devs))
			}
			if len(devs) == 0 {
				break
			}
			for _, d := range devs {
				got = append(got, d.DID)
			}
			path = "/gateway/" + next.DID().String() + "/devices/after/" + got[len(got)-1].String()
		}
		if !slices.Equal(got, all) {
			t.Fatalf("page size %d: pages give %v, want %v", size, got, all)
		}
	}
	f.app.SetDevicesPage(0)
	if code := f.query("/gateway/"+next.DID().String()+"/devices/after/not-a-did", nil); code != CodeBadQuery {
		t.Fatalf("a page after a malformed DID: code %d, want %d", code, CodeBadQuery)
	}
	if code := f.query("/gateway/"+newKey(t).DID().String()+"/devices/after/"+all[0].String(), nil); code != CodeNotFound {
		t.Fatalf("a page of an unknown gateway: code %d, want %d", code, CodeNotFound)
	}

	// No second succession, no rejoining; removing the old gateway leaves
	// the successor and the devices as they were.
	f.wantLog("succeeding the old gateway again", signTx(t, f.members[0], successionBody(t, newKey(t), "site-a", old.DID()), nil), CodeGatewaySucceeded, reason)
	f.pass("remove the old gateway", signTxBody(t, removeGatewayTx(t, f.members[0], old.DID())))
	f.query("/gateway/"+old.DID().String(), &og)
	if og.Status != StatusRemoved || og.Successor != next.DID() {
		t.Fatalf("old gateway after removal: %+v", og)
	}
	f.want("old gateway rejoining", signTx(t, f.members[0], addGatewayBody(t, old, "site-a", farDeadline), nil), CodeGatewaySucceeded)
	h = nc.next(1)
	f.want("successor anchors after the old gateway's removal", anchorTx(t, next, h), CodeOK)
	wantDevices("after removal", all...)
	f.want("successor revokes the old gateway's device", revokeDeviceTx(t, next, dev1.DID()), CodeOK)
	var d anchor.DeviceRecord
	if f.query("/device/"+dev1.DID().String(), &d); d.Status != StatusRevoked || d.RevokedBy != next.DID() || d.Gateway != old.DID() {
		t.Fatalf("device after revocation by the successor: %+v", d)
	}
}

// signTxBody returns the body of a signed tx (to propose it again through
// pass, which signs it itself).
func signTxBody(t *testing.T, tx []byte) []byte {
	t.Helper()
	d, err := anchor.DecodeTx(tx)
	if err != nil {
		t.Fatal(err)
	}
	return d.Body
}
