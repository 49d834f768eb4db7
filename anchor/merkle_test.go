package anchor

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/transparency-dev/merkle/proof"
)

// readGolden parses testdata/sm3merkle.golden, produced by
// testdata/sm3merkle.sh with openssl and xxd only.
func readGolden(t testing.TB) map[string][]string {
	t.Helper()
	f, err := os.ReadFile("testdata/sm3merkle.golden")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(f))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			t.Fatalf("golden line %q", sc.Text())
		}
		out[name] = strings.Split(val, ",")
	}
	return out
}

func goldenHash(t testing.TB, g map[string][]string, name string) Hash {
	t.Helper()
	v, ok := g[name]
	if !ok || len(v) != 1 {
		t.Fatalf("golden %s missing", name)
	}
	h, err := ParseHash(v[0])
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestGoldenFileMatchesOpenSSL recomputes the golden vectors with the real
// openssl binary, so the file cannot drift from what OpenSSL says.
func TestGoldenFileMatchesOpenSSL(t *testing.T) {
	for _, tool := range []string{"openssl", "xxd", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required for this test: %v", tool, err)
		}
	}
	got, err := exec.Command("sh", "testdata/sm3merkle.sh").Output()
	if err != nil {
		t.Fatalf("sm3merkle.sh: %v", err)
	}
	want, err := os.ReadFile("testdata/sm3merkle.golden")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("openssl output differs from testdata/sm3merkle.golden:\n%s", got)
	}
}

func TestSM3HasherGolden(t *testing.T) {
	g := readGolden(t)
	h := SM3Hasher{}
	if got, want := SM3([]byte("abc")), goldenHash(t, g, "sm3_abc"); got != want {
		t.Errorf("SM3(abc) = %s, want %s", got, want)
	}
	tests := []struct {
		name string
		got  []byte
	}{
		{"empty_root", h.EmptyRoot()},
		{"leaf_empty", h.HashLeaf(nil)},
		{"leaf_abc", h.HashLeaf([]byte("abc"))},
		{"node_N123_N456", h.HashChildren([]byte("N123"), []byte("N456"))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := goldenHash(t, g, tc.name)
			if !bytes.Equal(tc.got, want[:]) {
				t.Errorf("got %x, want %s", tc.got, want)
			}
		})
	}
	if h.Size() != 32 {
		t.Errorf("Size() = %d, want 32", h.Size())
	}
}

func digitLeaves(n int) []Hash {
	leaves := make([]Hash, n)
	for i := range leaves {
		leaves[i] = Hash(SM3Hasher{}.HashLeaf([]byte{byte('0' + i)}))
	}
	return leaves
}

func TestMerkleRootGolden(t *testing.T) {
	g := readGolden(t)
	for n := 1; n <= 7; n++ {
		want := goldenHash(t, g, fmt.Sprintf("root_%d", n))
		if got := MerkleRoot(digitLeaves(n)); got != want {
			t.Errorf("root of %d leaves = %s, want %s", n, got, want)
		}
	}
	if got, want := MerkleRoot(nil), goldenHash(t, g, "empty_root"); got != want {
		t.Errorf("empty root = %s, want %s", got, want)
	}
}

func TestInclusionProofGolden(t *testing.T) {
	g := readGolden(t)
	leaves := digitLeaves(7)
	for _, tc := range []struct {
		name  string
		index uint64
	}{{"path_2_7", 2}, {"path_6_7", 6}} {
		got, err := InclusionProof(leaves, tc.index)
		if err != nil {
			t.Fatal(err)
		}
		var gotHex []string
		for _, h := range got {
			gotHex = append(gotHex, h.String())
		}
		if want := g[tc.name]; strings.Join(gotHex, ",") != strings.Join(want, ",") {
			t.Errorf("%s: got %v, want %v", tc.name, gotHex, want)
		}
	}
}

func TestReceiptLeafGolden(t *testing.T) {
	g := readGolden(t)
	salt, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f")
	body := []byte(`{"type":"Receipt","v":1,"gateway":"did:ea:00112233445566778899aabbccddeeff","gseq":7,"did":"did:ea:ffeeddccbbaa99887766554433221100","seq":3,"recv":"2026-11-25T10:00:00Z","env":"66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"}`)
	want := goldenHash(t, g, "receipt_leaf")
	if got := LeafHash(salt, body); got != want {
		t.Errorf("LeafHash = %s, want %s", got, want)
	}
	if got := (SM3Hasher{}).HashLeaf(LeafData(salt, body)); !bytes.Equal(got, want[:]) {
		t.Errorf("HashLeaf(LeafData) = %x, want %s", got, want)
	}
}

// refRoot is RFC 6962 §2.1 MTH written recursively, as an independent
// reference for the bottom-up builder.
func refRoot(leaves []Hash) Hash {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return hashChildren(refRoot(leaves[:k]), refRoot(leaves[k:]))
}

// refPath is RFC 6962 §2.1.1 PATH, recursively.
func refPath(m int, leaves []Hash) []Hash {
	if len(leaves) == 1 {
		return nil
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	if m < k {
		return append(refPath(m, leaves[:k]), refRoot(leaves[k:]))
	}
	return append(refPath(m-k, leaves[k:]), refRoot(leaves[:k]))
}

func TestInclusionAllSizesWithTransparencyDev(t *testing.T) {
	for n := 1; n <= 70; n++ {
		leaves := make([]Hash, n)
		for i := range leaves {
			leaves[i] = LeafHash([]byte{byte(i), byte(n)}, []byte("record"))
		}
		root := MerkleRoot(leaves)
		if ref := refRoot(leaves); root != ref {
			t.Fatalf("size %d: root %s, RFC 6962 reference %s", n, root, ref)
		}
		tree, err := NewTree(leaves)
		if err != nil || tree.Root() != root || tree.Size() != uint64(n) {
			t.Fatalf("size %d: NewTree = %v (root %v), want root %s", n, err, tree, root)
		}
		if _, err := tree.Path(uint64(n)); err == nil {
			t.Fatalf("size %d: Path(%d) of a tree of %d gave a path", n, n, n)
		}
		for i := 0; i < n; i++ {
			path, err := InclusionProof(leaves, uint64(i))
			if err != nil {
				t.Fatal(err)
			}
			if ref := refPath(i, leaves); fmt.Sprint(ref) != fmt.Sprint(path) {
				t.Fatalf("size %d index %d: path differs from RFC 6962 reference", n, i)
			}
			if tp, err := tree.Path(uint64(i)); err != nil || fmt.Sprint(tp) != fmt.Sprint(path) {
				t.Fatalf("size %d index %d: Tree.Path differs from InclusionProof (%v)", n, i, err)
			}
			raw := make([][]byte, len(path))
			for j := range path {
				raw[j] = path[j][:]
			}
			// transparency-dev/merkle's verifier, unchanged, with our hasher.
			if err := proof.VerifyInclusion(SM3Hasher{}, uint64(i), uint64(n), leaves[i][:], raw, root[:]); err != nil {
				t.Fatalf("size %d index %d: %v", n, i, err)
			}
			if err := VerifyInclusion(leaves[i], uint64(i), uint64(n), path, root); err != nil {
				t.Fatalf("size %d index %d: %v", n, i, err)
			}
		}
	}
}

func TestNewTreeRefusesNoLeaves(t *testing.T) {
	if _, err := NewTree(nil); err == nil {
		t.Fatal("NewTree of no leaves gave a tree")
	}
}

func TestVerifyInclusionRejects(t *testing.T) {
	leaves := digitLeaves(7)
	root := MerkleRoot(leaves)
	path, _ := InclusionProof(leaves, 2)
	flip := func(h Hash) Hash { h[5] ^= 1; return h }
	cases := []struct {
		name  string
		leaf  Hash
		index uint64
		size  uint64
		path  []Hash
		root  Hash
	}{
		{"sibling byte", leaves[2], 2, 7, []Hash{flip(path[0]), path[1], path[2]}, root},
		{"leaf", flip(leaves[2]), 2, 7, path, root},
		{"root", leaves[2], 2, 7, path, flip(root)},
		{"index", leaves[2], 3, 7, path, root},
		// Sizes 5..8 share this path shape: the root does not commit to the
		// size, which is why verify checks size == header count.
		{"size", leaves[2], 2, 4, path, root},
		{"short path", leaves[2], 2, 7, path[:2], root},
		{"long path", leaves[2], 2, 7, append(append([]Hash{}, path...), root), root},
		{"index past size", leaves[2], 7, 7, path, root},
		{"size zero", leaves[2], 0, 0, nil, root},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyInclusion(tc.leaf, tc.index, tc.size, tc.path, tc.root)
			if !errors.Is(err, ErrBadProof) {
				t.Fatalf("got %v, want ErrBadProof", err)
			}
		})
	}
	if _, err := InclusionProof(leaves, 7); err == nil {
		t.Error("InclusionProof past the end: no error")
	}
}

func FuzzVerifyInclusion(f *testing.F) {
	leaves := digitLeaves(7)
	root := MerkleRoot(leaves)
	path, _ := InclusionProof(leaves, 2)
	var flat []byte
	for _, h := range path {
		flat = append(flat, h[:]...)
	}
	f.Add(uint64(2), uint64(7), flat)
	f.Add(uint64(0), uint64(1), []byte{})
	f.Fuzz(func(t *testing.T, index, size uint64, raw []byte) {
		var p []Hash
		for len(raw) >= 32 && len(p) < 70 {
			p = append(p, Hash(raw[:32]))
			raw = raw[32:]
		}
		err := VerifyInclusion(leaves[2], index, size, p, root)
		if err == nil && (index != 2 || size < 3 || size > 8) {
			t.Fatalf("accepted a proof at index %d size %d", index, size)
		}
		if err != nil && !errors.Is(err, ErrBadProof) {
			t.Fatalf("error %v does not wrap ErrBadProof", err)
		}
	})
}

func BenchmarkMerkleRoot10k(b *testing.B) {
	leaves := make([]Hash, 10000)
	for i := range leaves {
		leaves[i] = LeafHash([]byte{byte(i), byte(i >> 8)}, []byte("record"))
	}
	b.ResetTimer()
	for b.Loop() {
		MerkleRoot(leaves)
	}
}
