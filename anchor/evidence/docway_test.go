package evidence_test

// This test checks the golden bundles the way docs/proof-bundle.md
// ("Checking the AnchorProof without CometBFT") tells an independent
// verifier to: its JSON read with encoding/json into plain maps, protobuf
// written by hand, SHA-256 and Ed25519 from the standard library, SM3 for
// the result data. It uses nothing of this module or of CometBFT, so a
// wrong sentence in the doc (a field number, an omitted zero, the order of
// the header's leaves, the sign bytes) fails it.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math/bits"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm3"
)

// Protobuf, as the doc describes it: a field is its key (field number << 3
// | wire type) as a varint, then a varint (type 0), 8 little-endian bytes
// (type 1), or a varint length and the bytes (type 2). Zero numbers and
// empty byte strings are left out.
type pb []byte

func (b pb) varint(v uint64) pb { return binary.AppendUvarint(b, v) }
func (b pb) key(n, wt int) pb   { return b.varint(uint64(n)<<3 | uint64(wt)) }
func (b pb) num(n int, v uint64) pb {
	if v == 0 {
		return b
	}
	return b.key(n, 0).varint(v)
}
func (b pb) fixed64(n int, v int64) pb {
	if v == 0 {
		return b
	}
	return binary.LittleEndian.AppendUint64(b.key(n, 1), uint64(v))
}
func (b pb) bytes(n int, v []byte) pb {
	if len(v) == 0 {
		return b
	}
	return append(b.key(n, 2).varint(uint64(len(v))), v...)
}

// msg writes an embedded message even when it is empty (the doc says which
// ones are always written).
func (b pb) msg(n int, v []byte) pb { return append(b.key(n, 2).varint(uint64(len(v))), v...) }

// timestamp is google.protobuf.Timestamp: seconds (1), nanos (2).
func timestamp(t time.Time) []byte {
	return pb(nil).num(1, uint64(t.Unix())).num(2, uint64(t.Nanosecond()))
}

// RFC 6962 with SHA-256.
func leafHash(b []byte) []byte {
	h := sha256.Sum256(append([]byte{0}, b...))
	return h[:]
}
func innerHash(l, r []byte) []byte {
	h := sha256.Sum256(append(append([]byte{1}, l...), r...))
	return h[:]
}
func split(n int) int { return 1 << (bits.Len(uint(n-1)) - 1) } // largest power of 2 < n
func merkleRoot(items [][]byte) []byte {
	switch len(items) {
	case 0:
		h := sha256.Sum256(nil)
		return h[:]
	case 1:
		return leafHash(items[0])
	}
	k := split(len(items))
	return innerHash(merkleRoot(items[:k]), merkleRoot(items[k:]))
}

// rootFromAunts walks an audit path: aunts from the leaf's sibling up, the
// last aunt a child of the root.
func rootFromAunts(index, total int, leaf []byte, aunts [][]byte) []byte {
	if total == 1 {
		return leaf
	}
	k := split(total)
	last, rest := aunts[len(aunts)-1], aunts[:len(aunts)-1]
	if index < k {
		return innerHash(rootFromAunts(index, k, leaf, rest), last)
	}
	return innerHash(last, rootFromAunts(index-k, total-k, leaf, rest))
}

// JSON access.
type obj = map[string]any

func get(t *testing.T, o obj, path ...string) any {
	t.Helper()
	var v any = o
	for _, k := range path {
		m, ok := v.(obj)
		if !ok {
			t.Fatalf("%v: not an object at %q", path, k)
		}
		v = m[k]
	}
	return v
}
func str(t *testing.T, o obj, path ...string) string {
	t.Helper()
	s, ok := get(t, o, path...).(string)
	if !ok {
		t.Fatalf("%v is not a string", path)
	}
	return s
}
func hexOf(t *testing.T, o obj, path ...string) []byte {
	t.Helper()
	b, err := hex.DecodeString(str(t, o, path...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
func b64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// int64 members of CometBFT structures are decimal strings; a few (round,
// parts.total, block_id_flag) and the AnchorProof's own are JSON numbers.
func num(t *testing.T, o obj, path ...string) int64 {
	t.Helper()
	switch v := get(t, o, path...).(type) {
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	case json.Number:
		n, err := v.Int64()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	t.Fatalf("%v is not a number", path)
	return 0
}
func timeOf(t *testing.T, o obj, path ...string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, str(t, o, path...))
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// blockID is BlockID {hash (1), part_set_header (2) {total (1), hash (2)}},
// the part set header always written; CanonicalBlockID is the same bytes.
func blockID(t *testing.T, o obj) []byte {
	parts := pb(nil).num(1, uint64(num(t, o, "parts", "total"))).bytes(2, hexOf(t, o, "parts", "hash"))
	return pb(nil).bytes(1, hexOf(t, o, "hash")).msg(2, parts)
}

// headerHash is the doc's "header hash": the RFC 6962 root of 14 leaves.
func headerHash(t *testing.T, h obj) []byte {
	wrapBytes := func(name string) []byte { return pb(nil).bytes(1, hexOf(t, h, name)) } // BytesValue
	leaves := [][]byte{
		pb(nil).num(1, uint64(num(t, h, "version", "block"))).num(2, uint64(num(t, h, "version", "app"))),
		pb(nil).bytes(1, []byte(str(t, h, "chain_id"))), // StringValue
		pb(nil).num(1, uint64(num(t, h, "height"))),     // Int64Value
		timestamp(timeOf(t, h, "time")),
		blockID(t, get(t, h, "last_block_id").(obj)),
	}
	for _, name := range []string{"last_commit_hash", "data_hash", "validators_hash", "next_validators_hash",
		"consensus_hash", "app_hash", "last_results_hash", "evidence_hash", "proposer_address"} {
		leaves = append(leaves, wrapBytes(name))
	}
	return merkleRoot(leaves)
}

// validatorSetHash is the root over SimpleValidator {pub_key (1) {ed25519
// (1)}, voting_power (2)} in the order listed.
func validatorSetHash(t *testing.T, vs obj) []byte {
	var leaves [][]byte
	for _, v := range get(t, vs, "validators").([]any) {
		v := v.(obj)
		if str(t, v, "pub_key", "type") != "tendermint/PubKeyEd25519" {
			t.Fatalf("key type %s", str(t, v, "pub_key", "type"))
		}
		pk := pb(nil).bytes(1, b64(t, str(t, v, "pub_key", "value")))
		leaves = append(leaves, pb(nil).msg(1, pk).num(2, uint64(num(t, v, "voting_power"))))
	}
	return merkleRoot(leaves)
}

// checkCommit verifies the doc's +2/3 rule with the sign bytes it gives:
// the length-delimited CanonicalVote of each block_id_flag 2 signature.
func checkCommit(t *testing.T, chainID string, sh, vs obj, wantBlockHash []byte) {
	commit := get(t, sh, "commit").(obj)
	if !bytes.Equal(hexOf(t, commit, "block_id", "hash"), wantBlockHash) {
		t.Fatalf("commit is for block %X, the header hashes to %X", hexOf(t, commit, "block_id", "hash"), wantBlockHash)
	}
	power := map[string]int64{}
	keys := map[string][]byte{}
	var total int64
	for _, v := range get(t, vs, "validators").([]any) {
		v := v.(obj)
		power[str(t, v, "address")] = num(t, v, "voting_power")
		keys[str(t, v, "address")] = b64(t, str(t, v, "pub_key", "value"))
		total += num(t, v, "voting_power")
		// address = first 20 bytes of SHA-256 of the key
		sum := sha256.Sum256(keys[str(t, v, "address")])
		if hex.EncodeToString(sum[:20]) != string(bytes.ToLower([]byte(str(t, v, "address")))) {
			t.Fatalf("address %s is not the key's", str(t, v, "address"))
		}
	}
	var signed int64
	for _, s := range get(t, commit, "signatures").([]any) {
		s := s.(obj)
		if num(t, s, "block_id_flag") != 2 {
			continue
		}
		vote := pb(nil).num(1, 2). // SIGNED_MSG_TYPE_PRECOMMIT
						fixed64(2, num(t, commit, "height")).
						fixed64(3, num(t, commit, "round")).
						msg(4, blockID(t, get(t, commit, "block_id").(obj))).
						msg(5, timestamp(timeOf(t, s, "timestamp"))).
						bytes(6, []byte(chainID))
		signBytes := binary.AppendUvarint(nil, uint64(len(vote)))
		signBytes = append(signBytes, vote...)
		addr := str(t, s, "validator_address")
		if !ed25519.Verify(keys[addr], signBytes, b64(t, str(t, s, "signature"))) {
			t.Fatalf("signature of %s does not verify over the doc's sign bytes", addr)
		}
		signed += power[addr]
	}
	if 3*signed <= 2*total {
		t.Fatalf("signed power %d of %d is not more than 2/3", signed, total)
	}
}

func TestAnchorProofTheDocsWay(t *testing.T) {
	for _, name := range []string{"bundle.json", "bundle-other-device.json", "bundle-per-record.json"} {
		raw, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var bundle obj
		if err := dec.Decode(&bundle); err != nil {
			t.Fatal(err)
		}
		for _, where := range [][]string{{"device", "proof"}, {"anchor"}} {
			p := get(t, bundle, where...).(obj)
			chainID := str(t, p, "chain_id")
			sh := get(t, p, "signed_header").(obj)
			h := get(t, sh, "header").(obj)
			next := get(t, p, "next_signed_header").(obj)
			nh := get(t, next, "header").(obj)
			vs := get(t, p, "validators").(obj)

			// The validator set hash and the header hash.
			if got := validatorSetHash(t, vs); !bytes.Equal(got, hexOf(t, h, "validators_hash")) {
				t.Fatalf("%s %v: validator set hash %X, header says %X", name, where, got, hexOf(t, h, "validators_hash"))
			}
			hh := headerHash(t, h)
			checkCommit(t, chainID, sh, vs, hh)
			if !bytes.Equal(hexOf(t, nh, "last_block_id", "hash"), hh) {
				t.Fatalf("%s %v: next header's last_block_id is not the header hash %X", name, where, hh)
			}
			nextVals := vs
			if nv, ok := p["next_validators"].(obj); ok {
				nextVals = nv
			}
			if !bytes.Equal(validatorSetHash(t, nextVals), hexOf(t, nh, "validators_hash")) ||
				!bytes.Equal(hexOf(t, h, "next_validators_hash"), hexOf(t, nh, "validators_hash")) {
				t.Fatalf("%s %v: next validator set", name, where)
			}
			checkCommit(t, chainID, next, nextVals, headerHash(t, nh))

			// The tx leaf: SHA-256 of the tx, then the RFC 6962 leaf.
			tx := b64(t, str(t, p, "tx"))
			txHash := sha256.Sum256(tx)
			txp := get(t, p, "tx_proof").(obj)
			if !bytes.Equal(leafHash(txHash[:]), b64(t, str(t, txp, "leaf_hash"))) {
				t.Fatalf("%s %v: tx leaf hash", name, where)
			}
			var aunts [][]byte
			if a, ok := txp["aunts"].([]any); ok {
				for _, x := range a {
					aunts = append(aunts, b64(t, x.(string)))
				}
			}
			if root := rootFromAunts(int(num(t, txp, "index")), int(num(t, txp, "total")), leafHash(txHash[:]), aunts); !bytes.Equal(root, hexOf(t, h, "data_hash")) {
				t.Fatalf("%s %v: tx proof reaches %X, data_hash %X", name, where, root, hexOf(t, h, "data_hash"))
			}

			// The result leaf: ExecTxResult {code (1), data (2),
			// gas_wanted (5), gas_used (6)}.
			res := get(t, p, "result").(obj)
			var data []byte
			if d, ok := res["data"].(string); ok {
				data = b64(t, d)
			}
			leaf := pb(nil).num(1, uint64(num(t, res, "code"))).bytes(2, data).
				num(5, uint64(num(t, res, "gas_wanted"))).num(6, uint64(num(t, res, "gas_used")))
			rp := get(t, p, "result_proof").(obj)
			aunts = nil
			for _, x := range get(t, rp, "aunts").([]any) {
				aunts = append(aunts, b64(t, x.(string)))
			}
			if root := rootFromAunts(int(num(t, rp, "index")), int(num(t, rp, "total")), leafHash(leaf), aunts); !bytes.Equal(root, hexOf(t, nh, "last_results_hash")) {
				t.Fatalf("%s %v: result proof reaches %X, last_results_hash %X", name, where, root, hexOf(t, nh, "last_results_hash"))
			}
			// Step 9: code 0 and data = SM3 of the tx body.
			var txj struct{ Body string }
			if err := json.Unmarshal(tx, &txj); err != nil {
				t.Fatal(err)
			}
			body := sm3.Sum(b64(t, txj.Body))
			if num(t, res, "code") != 0 || !bytes.Equal(data, body[:]) {
				t.Fatalf("%s %v: result code %d data %X, want 0 and %X", name, where, num(t, res, "code"), data, body)
			}
		}
	}
}
