package ledger

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/edgeanchor/edgeanchor/anchor"
)

// TestQueryAnswersMatchClient: the anchor client decodes the ledger's query
// answers into its own copies of the record types (anchor cannot import
// ledger). Every member must survive the trip both ways.
func TestQueryAnswersMatchClient(t *testing.T) {
	h := anchor.SM3([]byte("h"))
	cases := []struct {
		name string
		rec  any
		into any
	}{
		{"device", &DeviceRecord{DID: "did:ea:00112233445566778899aabbccddeeff", Pub: []byte{1}, Kind: "env", Site: "s",
			Gateway: "did:ea:ffeeddccbbaa99887766554433221100", Status: StatusRevoked, Height: 3, Tx: "ab",
			Registration: []byte{2}, DeviceSig: []byte{3}, RevokedHeight: 4, RevokedTx: "cd",
			RevokedBy: "did:ea:0000000000000000000000000000000f", RevokeReason: "lost"}, &anchor.DeviceRecord{}},
		{"gateway", &GatewayRecord{DID: "did:ea:00112233445566778899aabbccddeeff", Pub: []byte{1}, Site: "s", Name: "n",
			Status: StatusRemoved, Height: 2, Tx: "ab", RemovedHeight: 5, RemovedTx: "cd", LastSeq: 7, LastHash: h, LastRecord: 9},
			&anchor.GatewayRecord{}},
		{"batch", &BatchRecord{Gateway: "did:ea:00112233445566778899aabbccddeeff", Seq: 2, Header: []byte("{}"), Sig: []byte{1},
			Hash: h, Root: h, First: 3, Last: 4, Height: 5, Tx: "ab", Index: 6}, &anchor.BatchRecord{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want, _ := json.Marshal(c.rec)
			dec := json.NewDecoder(bytes.NewReader(want))
			dec.DisallowUnknownFields()
			if err := dec.Decode(c.into); err != nil {
				t.Fatalf("client cannot decode the ledger's answer: %v", err)
			}
			got, _ := json.Marshal(c.into)
			if !bytes.Equal(got, want) {
				t.Fatalf("members lost on the way:\nledger %s\nclient %s", want, got)
			}
		})
	}
}
