package app

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/edgeanchor/edgeanchor/anchor"
)

// TestQueryAnswersMatchClient: the ledger stores and answers the record
// types of anchor (one definition of the query contract). Their JSON is the
// one docs/ledger.md documents and databases already hold: member names and
// order are pinned here, and every member survives a strict decode.
func TestQueryAnswersMatchClient(t *testing.T) {
	h := anchor.SM3([]byte("h"))
	cases := []struct {
		name string
		rec  any
		into any
		json string
	}{
		{"device", &anchor.DeviceRecord{DID: "did:ea:00112233445566778899aabbccddeeff", Pub: []byte{1}, Kind: "env", Site: "s",
			Gateway: "did:ea:ffeeddccbbaa99887766554433221100", Status: StatusRevoked, Height: 3, Tx: "ab",
			Registration: []byte{2}, DeviceSig: []byte{3}, RevokedHeight: 4, RevokedTx: "cd",
			RevokedBy: "did:ea:0000000000000000000000000000000f", RevokeReason: "lost"}, &anchor.DeviceRecord{},
			`{"did":"did:ea:00112233445566778899aabbccddeeff","pub":"AQ==","kind":"env","site":"s","gateway":"did:ea:ffeeddccbbaa99887766554433221100","status":"revoked","height":3,"tx":"ab","registration":"Ag==","device_sig":"Aw==","revoked_height":4,"revoked_tx":"cd","revoked_by":"did:ea:0000000000000000000000000000000f","revoke_reason":"lost"}`},
		{"gateway", &anchor.GatewayRecord{DID: "did:ea:00112233445566778899aabbccddeeff", Pub: []byte{1}, Site: "s", Name: "n",
			Status: StatusRemoved, Height: 2, Tx: "ab", RemovedHeight: 5, RemovedTx: "cd", LastSeq: 7, LastHash: h, LastRecord: 9},
			&anchor.GatewayRecord{},
			`{"did":"did:ea:00112233445566778899aabbccddeeff","pub":"AQ==","site":"s","name":"n","status":"removed","height":2,"tx":"ab","removed_height":5,"removed_tx":"cd","last_seq":7,"last_hash":"06c308bf6095ca98f3e9e191eef9e54dfcbb336acdbccf8d37436bc5b816b582","last_record":9}`},
		{"batch", &anchor.BatchRecord{Gateway: "did:ea:00112233445566778899aabbccddeeff", Seq: 2, Header: []byte("{}"), Sig: []byte{1},
			Hash: h, Root: h, First: 3, Last: 4, Height: 5, Tx: "ab", Index: 6}, &anchor.BatchRecord{},
			`{"gateway":"did:ea:00112233445566778899aabbccddeeff","seq":2,"header":"e30=","sig":"AQ==","hash":"06c308bf6095ca98f3e9e191eef9e54dfcbb336acdbccf8d37436bc5b816b582","root":"06c308bf6095ca98f3e9e191eef9e54dfcbb336acdbccf8d37436bc5b816b582","first":3,"last":4,"height":5,"tx":"ab","index":6}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want, _ := json.Marshal(c.rec)
			if string(want) != c.json {
				t.Fatalf("the JSON of the query answer changed:\ngot  %s\nwant %s", want, c.json)
			}
			dec := json.NewDecoder(bytes.NewReader(want))
			dec.DisallowUnknownFields()
			if err := dec.Decode(c.into); err != nil {
				t.Fatalf("a strict decode refuses the answer: %v", err)
			}
			got, _ := json.Marshal(c.into)
			if !bytes.Equal(got, want) {
				t.Fatalf("members lost on the way:\nsent %s\ngot  %s", want, got)
			}
		})
	}
}
