package anchor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"

	"github.com/edgeanchor/edgeanchor/device"
)

// testGroup is a commit group signed by a gateway key: n receipts from
// gseq first, one statement, one signature.
type testGroup struct {
	gw     *device.KeySigner
	first  uint64
	bodies [][]byte
	group  []byte
	paths  [][]Hash
	sig    []byte
}

func receiptBody(t testing.TB, gw device.DID, gseq uint64) []byte {
	t.Helper()
	dev := device.DID(fmt.Sprintf("did:ea:%032x", gseq%3+1))
	b, err := json.Marshal(Receipt{Type: ReceiptType, V: 1, Gateway: gw, GSeq: gseq, DID: dev, Seq: gseq + 100,
		Recv: FormatTime(time.Date(2026, 11, 25, 10, 0, 0, int(gseq), time.UTC)), Env: SM3(fmt.Appendf(nil, "envelope %d", gseq))})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func signGroup(t testing.TB, gw *device.KeySigner, first uint64, n int) *testGroup {
	t.Helper()
	g := &testGroup{gw: gw, first: first}
	for i := range n {
		g.bodies = append(g.bodies, receiptBody(t, gw.DID(), first+uint64(i)))
	}
	var root Hash
	root, g.paths = ReceiptGroupTree(g.bodies)
	g.group = NewReceiptGroup(gw.DID(), first, uint64(n), root)
	var err error
	if g.sig, err = gw.Sign(g.group); err != nil {
		t.Fatal(err)
	}
	return g
}

// TestReceiptGroupTreeIsRFC6962: the root and every path equal what the
// one-leaf-at-a-time functions compute and what transparency-dev/merkle
// verifies, for every tree size up to 70.
func TestReceiptGroupTreeIsRFC6962(t *testing.T) {
	for n := 1; n <= 70; n++ {
		bodies := make([][]byte, n)
		leaves := make([]Hash, n)
		for i := range bodies {
			bodies[i] = fmt.Appendf(nil, "receipt %d of %d", i, n)
			leaves[i] = Hash(SM3Hasher{}.HashLeaf(bodies[i]))
		}
		root, paths := ReceiptGroupTree(bodies)
		if want := MerkleRoot(leaves); root != want {
			t.Fatalf("n=%d: root %s, want %s", n, root, want)
		}
		for i := range bodies {
			want, err := InclusionProof(leaves, uint64(i))
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(paths[i]) != fmt.Sprint(want) {
				t.Fatalf("n=%d leaf %d: path %v, want %v", n, i, paths[i], want)
			}
			p := make([][]byte, len(paths[i]))
			for j := range paths[i] {
				p[j] = paths[i][j][:]
			}
			if err := proof.VerifyInclusion(SM3Hasher{}, uint64(i), uint64(n), leaves[i][:], p, root[:]); err != nil {
				t.Fatalf("n=%d leaf %d: transparency-dev/merkle: %v", n, i, err)
			}
		}
		if n == 1 && (len(paths[0]) != 0 || root != ReceiptLeafHash(bodies[0])) {
			t.Fatalf("group of one: path %v, root %s", paths[0], root)
		}
	}
}

func TestReceiptGroupVerifies(t *testing.T) {
	gw := newSigner(t)
	for _, n := range []int{1, 2, 7, 12} {
		g := signGroup(t, gw, 40, n)
		c := &ReceiptChecker{Pub: gw.Public()}
		for i, body := range g.bodies {
			r, err := VerifyReceipt(body, g.group, g.paths[i], g.sig, gw.Public())
			if err != nil {
				t.Fatalf("group of %d, receipt %d: %v", n, i, err)
			}
			if r.GSeq != 40+uint64(i) || r.Gateway != gw.DID() {
				t.Fatalf("group of %d, receipt %d: %+v", n, i, r)
			}
			if _, err := c.Verify(body, g.group, g.paths[i], g.sig); err != nil {
				t.Fatalf("checker: %v", err)
			}
		}
		// The checker verified the statement's signature once.
		if got := c.SignaturesVerified(); got != 1 {
			t.Fatalf("group of %d: %d signature verifications, want 1", n, got)
		}
	}
}

// TestReceiptSingleChanges changes one thing of a valid receipt at a time.
func TestReceiptSingleChanges(t *testing.T) {
	gw := newSigner(t)
	g := signGroup(t, gw, 40, 7)
	other := signGroup(t, gw, 47, 7) // the next group, validly signed
	const i = 2                      // gseq 42
	resign := func(t *testing.T, f func(s *ReceiptGroup)) ([]byte, []byte) {
		s, err := ParseReceiptGroup(g.group)
		if err != nil {
			t.Fatal(err)
		}
		f(s)
		b := NewReceiptGroup(s.Gateway, s.First, s.Count, s.Root)
		sig, err := gw.Sign(b)
		if err != nil {
			t.Fatal(err)
		}
		return b, sig
	}
	type receipt struct {
		body, group []byte
		path        []Hash
		sig         []byte
	}
	cases := []struct {
		name   string
		change func(t *testing.T, r *receipt)
		want   string
	}{
		{"one byte of the body", func(t *testing.T, r *receipt) {
			r.body = mustReplace(t, r.body, `"seq":142`, `"seq":143`)
		}, "not in its group"},
		{"body of another record of the group", func(t *testing.T, r *receipt) { r.body = g.bodies[3] }, "not in its group"},
		{"path hash", func(t *testing.T, r *receipt) { r.path[1][0] ^= 1 }, "not in its group"},
		{"path one hash short", func(t *testing.T, r *receipt) { r.path = r.path[:len(r.path)-1] }, "not in its group"},
		{"path one hash long", func(t *testing.T, r *receipt) { r.path = append(r.path, r.path[0]) }, "not in its group"},
		{"no path", func(t *testing.T, r *receipt) { r.path = nil }, "not in its group"},
		{"statement count", func(t *testing.T, r *receipt) {
			r.group = mustReplace(t, r.group, `"count":7`, `"count":8`)
		}, "signature does not verify"},
		{"statement first", func(t *testing.T, r *receipt) {
			r.group = mustReplace(t, r.group, `"first":40`, `"first":39`)
		}, "not in its group"}, // the index moves: caught before the signature
		{"statement root", func(t *testing.T, r *receipt) {
			s, _ := ParseReceiptGroup(r.group)
			s.Root[5] ^= 1
			r.group = NewReceiptGroup(s.Gateway, s.First, s.Count, s.Root)
		}, "not in its group"},
		{"statement first, re-signed by the gateway", func(t *testing.T, r *receipt) {
			r.group, r.sig = resign(t, func(s *ReceiptGroup) { s.First = 41 })
		}, "not in its group"},
		{"statement root, re-signed by the gateway", func(t *testing.T, r *receipt) {
			r.group, r.sig = resign(t, func(s *ReceiptGroup) { s.Root[0] ^= 1 })
		}, "not in its group"},
		{"gseq outside the group", func(t *testing.T, r *receipt) {
			r.group, r.sig = resign(t, func(s *ReceiptGroup) { s.First = 43; s.Count = 5 })
		}, "outside the group"},
		{"gseq above the group", func(t *testing.T, r *receipt) {
			r.group, r.sig = resign(t, func(s *ReceiptGroup) { s.Count = 2 })
		}, "outside the group"},
		{"signature byte", func(t *testing.T, r *receipt) {
			r.sig = bytes.Clone(r.sig)
			r.sig[len(r.sig)-1] ^= 1
		}, "signature does not verify"},
		{"signature over the body (per-record form) with a group", func(t *testing.T, r *receipt) {
			r.sig, _ = gw.Sign(r.body)
		}, "signature does not verify"},
		{"another group's statement and signature", func(t *testing.T, r *receipt) {
			r.group, r.sig = other.group, other.sig
		}, "outside the group"},
		{"another group's statement, path and signature", func(t *testing.T, r *receipt) {
			r.group, r.path, r.sig = other.group, other.paths[i], other.sig
		}, "outside the group"},
		{"statement of another gateway", func(t *testing.T, r *receipt) {
			k := newSigner(t)
			s, _ := ParseReceiptGroup(r.group)
			r.group = NewReceiptGroup(k.DID(), s.First, s.Count, s.Root)
			r.sig, _ = k.Sign(r.group)
		}, "group statement of gateway"},
		{"statement of another type", func(t *testing.T, r *receipt) {
			r.group = mustReplace(t, r.group, `"ReceiptGroup"`, `"Receipt"`)
			r.sig, _ = gw.Sign(r.group)
		}, "type"},
		{"statement with an unknown member", func(t *testing.T, r *receipt) {
			r.group = mustReplace(t, r.group, `"v":1,`, `"v":1,"x":1,`)
			r.sig, _ = gw.Sign(r.group)
		}, "unknown field"},
		{"group removed (per-record form, signature over the statement)", func(t *testing.T, r *receipt) {
			r.group, r.path = nil, nil
		}, "receipt signature does not verify"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &receipt{body: bytes.Clone(g.bodies[i]), group: bytes.Clone(g.group),
				path: append([]Hash(nil), g.paths[i]...), sig: g.sig}
			if _, err := VerifyReceipt(r.body, r.group, r.path, r.sig, gw.Public()); err != nil {
				t.Fatalf("before the change: %v", err)
			}
			tc.change(t, r)
			_, err := VerifyReceipt(r.body, r.group, r.path, r.sig, gw.Public())
			if !errors.Is(err, ErrReceipt) {
				t.Fatalf("err = %v, want ErrReceipt", err)
			}
			if !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
	// Under another gateway's key nothing verifies.
	if _, err := VerifyReceipt(g.bodies[i], g.group, g.paths[i], g.sig, newSigner(t).Public()); !errors.Is(err, ErrReceipt) {
		t.Fatalf("another key: %v", err)
	}
}

// TestReceiptPerRecordForm: a receipt without a group statement is the older
// form, signed alone, and still verifies.
func TestReceiptPerRecordForm(t *testing.T) {
	gw := newSigner(t)
	body := receiptBody(t, gw.DID(), 9)
	sig, err := gw.Sign(body)
	if err != nil {
		t.Fatal(err)
	}
	c := &ReceiptChecker{Pub: gw.Public()}
	r, err := c.Verify(body, nil, nil, sig)
	if err != nil || r.GSeq != 9 {
		t.Fatalf("per-record receipt: %+v, %v", r, err)
	}
	bad := bytes.Clone(sig)
	bad[len(bad)-1] ^= 1
	if _, err := c.Verify(body, nil, nil, bad); !errors.Is(err, ErrReceipt) {
		t.Fatalf("changed signature: %v", err)
	}
	if _, err := c.Verify(mustReplace(t, body, `"gseq":9`, `"gseq":8`), nil, nil, sig); !errors.Is(err, ErrReceipt) {
		t.Fatalf("changed body: %v", err)
	}
	if _, err := c.Verify(body, nil, []Hash{SM3(body)}, sig); !errors.Is(err, ErrReceipt) {
		t.Fatalf("path without a group: %v", err)
	}
}

// TestReceiptCheckerCache: a statement is verified once per signature; a
// bad signature over a statement already seen still fails.
func TestReceiptCheckerCache(t *testing.T) {
	gw := newSigner(t)
	g := signGroup(t, gw, 1, 5)
	c := &ReceiptChecker{Pub: gw.Public()}
	for i := range g.bodies {
		if _, err := c.Verify(g.bodies[i], g.group, g.paths[i], g.sig); err != nil {
			t.Fatal(err)
		}
	}
	bad := bytes.Clone(g.sig)
	bad[len(bad)-1] ^= 1
	if _, err := c.Verify(g.bodies[0], g.group, g.paths[0], bad); !errors.Is(err, ErrReceipt) {
		t.Fatalf("bad signature over a cached statement: %v", err)
	}
	// SM2 signatures are randomised: the gateway's second signature over
	// the same statement is a new pair, verified once.
	sig2, _ := gw.Sign(g.group)
	for range 2 {
		if _, err := c.Verify(g.bodies[1], g.group, g.paths[1], sig2); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.SignaturesVerified(); got != 3 {
		t.Fatalf("%d signature verifications, want 3 (statement, bad signature, second signature)", got)
	}
}

func TestParseReceiptGroupRejects(t *testing.T) {
	gw := newSigner(t)
	good := NewReceiptGroup(gw.DID(), 7, 12, SM3([]byte("x")))
	if _, err := ParseReceiptGroup(good); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"first 0":         mustReplace(t, good, `"first":7`, `"first":0`),
		"count 0":         mustReplace(t, good, `"count":12`, `"count":0`),
		"count too large": mustReplace(t, good, `"count":12`, `"count":4294967297`),
		"overflow":        mustReplace(t, good, `"first":7`, `"first":18446744073709551610`),
		"version 2":       mustReplace(t, good, `"v":1`, `"v":2`),
		"bad gateway":     mustReplace(t, good, string(gw.DID()), "did:ea:nope"),
		"duplicate count": mustReplace(t, good, `"count":12`, `"count":12,"count":1`),
		"upper-case root": bytes.ToUpper(good),
		"trailing data":   append(bytes.Clone(good), '{', '}'),
		"not json":        []byte("ReceiptGroup"),
	} {
		if _, err := ParseReceiptGroup(b); err == nil {
			t.Errorf("%s: parsed %s", name, b)
		}
	}
}

// FuzzVerifyReceipt: whatever is changed, a receipt verifies only with the
// gateway's own statement, and then names a gseq inside the group.
func FuzzVerifyReceipt(f *testing.F) {
	gw := newSigner(f)
	g := signGroup(f, gw, 3, 5)
	flat := func(p []Hash) []byte {
		var out []byte
		for _, h := range p {
			out = append(out, h[:]...)
		}
		return out
	}
	for i := range g.bodies {
		f.Add(g.bodies[i], g.group, flat(g.paths[i]), g.sig)
	}
	f.Add(g.bodies[0], []byte(nil), []byte(nil), g.sig)
	c := &ReceiptChecker{Pub: gw.Public()}
	f.Fuzz(func(t *testing.T, body, group, path, sig []byte) {
		if len(path)%32 != 0 || len(path) > 64*32 {
			return
		}
		p := make([]Hash, len(path)/32)
		for i := range p {
			copy(p[i][:], path[32*i:])
		}
		if len(group) == 0 {
			group = nil
		}
		r, err := c.Verify(body, group, p, sig)
		if err != nil {
			if !errors.Is(err, ErrReceipt) {
				t.Fatalf("error does not wrap ErrReceipt: %v", err)
			}
			return
		}
		if group == nil {
			// Only the gateway signs: no per-record receipt was made here.
			t.Fatalf("a per-record receipt verified: %s", body)
		}
		if !bytes.Equal(group, g.group) || r.GSeq < 3 || r.GSeq > 7 {
			t.Fatalf("verified gseq %d under statement %s", r.GSeq, group)
		}
	})
}

func mustReplace(t testing.TB, s []byte, old, new string) []byte {
	t.Helper()
	if !bytes.Contains(s, []byte(old)) {
		t.Fatalf("%q not found in %s", old, s)
	}
	return bytes.Replace(s, []byte(old), []byte(new), 1)
}
