package anchor

import (
	"errors"
	"fmt"

	"github.com/emmansun/gmsm/sm3"
	"github.com/transparency-dev/merkle"
	"github.com/transparency-dev/merkle/proof"
)

// SaltSize is the length of the random salt that prefixes every leaf.
const SaltSize = 16

// MaxTreeSize bounds the number of leaves of one batch tree that a proof may
// claim, so that a hostile bundle cannot make a verifier loop for long.
const MaxTreeSize = 1 << 32

// ErrBadProof means a Merkle inclusion proof does not lead from the leaf to
// the expected root, or is malformed (wrong length, index out of range). The
// record or the batch was changed after it was anchored, or the proof is not
// for this batch.
var ErrBadProof = errors.New("anchor: Merkle inclusion proof does not verify")

// SM3Hasher is the RFC 6962 tree hasher with SM3: a leaf is SM3(0x00‖data)
// and an interior node SM3(0x01‖left‖right). It implements
// transparency-dev/merkle's LogHasher, so proof.VerifyInclusion works with it
// unchanged.
type SM3Hasher struct{}

var _ merkle.LogHasher = SM3Hasher{}

// RFC 6962 domain separation prefixes.
const (
	leafPrefix = 0x00
	nodePrefix = 0x01
)

// EmptyRoot returns SM3 of the empty string, the root of a tree with no
// leaves (a batch never has none; this exists for the interface).
func (SM3Hasher) EmptyRoot() []byte {
	h := sm3.Sum(nil)
	return h[:]
}

// HashLeaf returns SM3(0x00‖leaf).
func (SM3Hasher) HashLeaf(leaf []byte) []byte {
	d := sm3.New()
	d.Write([]byte{leafPrefix})
	d.Write(leaf)
	return d.Sum(nil)
}

// HashChildren returns SM3(0x01‖l‖r).
func (SM3Hasher) HashChildren(l, r []byte) []byte {
	d := sm3.New()
	d.Write([]byte{nodePrefix})
	d.Write(l)
	d.Write(r)
	return d.Sum(nil)
}

// Size returns 32, the SM3 digest length.
func (SM3Hasher) Size() int { return sm3.Size }

// LeafData is the Merkle leaf of one record: its 16-byte salt followed by
// the exact receipt body bytes the gateway signed.
func LeafData(salt, receiptBody []byte) []byte {
	out := make([]byte, 0, len(salt)+len(receiptBody))
	out = append(out, salt...)
	return append(out, receiptBody...)
}

// LeafHash returns the leaf hash of a record: SM3(0x00‖salt‖receipt body).
func LeafHash(salt, receiptBody []byte) Hash {
	d := sm3.New()
	d.Write([]byte{leafPrefix})
	d.Write(salt)
	d.Write(receiptBody)
	var h Hash
	d.Sum(h[:0])
	return h
}

func hashChildren(l, r Hash) Hash {
	d := sm3.New()
	d.Write([]byte{nodePrefix})
	d.Write(l[:])
	d.Write(r[:])
	var h Hash
	d.Sum(h[:0])
	return h
}

// nextLevel pairs the nodes of one level of an RFC 6962 tree. A lone last
// node is promoted unchanged, which is what RFC 6962's split at the largest
// power of two smaller than n amounts to when the tree is built bottom-up.
func nextLevel(level []Hash) []Hash {
	next := make([]Hash, 0, (len(level)+1)/2)
	for i := 0; i+1 < len(level); i += 2 {
		next = append(next, hashChildren(level[i], level[i+1]))
	}
	if len(level)%2 == 1 {
		next = append(next, level[len(level)-1])
	}
	return next
}

// MerkleRoot returns the RFC 6962 root over leaf hashes (SM3 hasher). The
// root of no leaves is SM3 of the empty string.
func MerkleRoot(leaves []Hash) Hash {
	if len(leaves) == 0 {
		return Hash(SM3Hasher{}.EmptyRoot())
	}
	levels := treeLevels(leaves)
	return levels[len(levels)-1][0]
}

// treeLevels returns every level of the RFC 6962 tree over leaves (at
// least one), the leaves first and the root's level last.
func treeLevels(leaves []Hash) [][]Hash {
	levels := [][]Hash{leaves}
	for l := leaves; len(l) > 1; l = levels[len(levels)-1] {
		levels = append(levels, nextLevel(l))
	}
	return levels
}

// appendPath appends the audit path of leaf index, bottom-up, to dst: the
// sibling on each level below the root that has one.
func appendPath(dst []Hash, levels [][]Hash, index uint64) []Hash {
	for _, level := range levels[:len(levels)-1] {
		if sib := index ^ 1; sib < uint64(len(level)) {
			dst = append(dst, level[sib])
		}
		index /= 2
	}
	return dst
}

// InclusionProof returns the RFC 6962 audit path of leaf index among leaves,
// bottom-up: the sibling hashes that proof.VerifyInclusion expects.
func InclusionProof(leaves []Hash, index uint64) ([]Hash, error) {
	if index >= uint64(len(leaves)) {
		return nil, fmt.Errorf("anchor: leaf index %d out of range for a tree of %d", index, len(leaves))
	}
	return appendPath(nil, treeLevels(leaves), index), nil
}

// Tree is an RFC 6962 tree kept whole, for many inclusion proofs of one
// batch: each Path is a walk up its levels, not a rebuild.
type Tree struct {
	levels [][]Hash
}

// NewTree builds the tree over leaves (at least one).
func NewTree(leaves []Hash) (*Tree, error) {
	if len(leaves) == 0 {
		return nil, errors.New("anchor: a tree needs at least one leaf")
	}
	return &Tree{levels: treeLevels(leaves)}, nil
}

// Size is the number of leaves.
func (t *Tree) Size() uint64 { return uint64(len(t.levels[0])) }

// Leaves are the tree's leaf hashes (not to be changed).
func (t *Tree) Leaves() []Hash { return t.levels[0] }

// Root is the tree's root, as MerkleRoot of its leaves.
func (t *Tree) Root() Hash { return t.levels[len(t.levels)-1][0] }

// Path is InclusionProof of leaf index.
func (t *Tree) Path(index uint64) ([]Hash, error) {
	if index >= t.Size() {
		return nil, fmt.Errorf("anchor: leaf index %d out of range for a tree of %d", index, t.Size())
	}
	return appendPath(nil, t.levels, index), nil
}

// VerifyInclusion checks, with transparency-dev/merkle's proof package and
// the SM3 hasher, that leaf sits at index in the tree of size leaves whose
// root is root. Failures wrap ErrBadProof.
func VerifyInclusion(leaf Hash, index, size uint64, path []Hash, root Hash) error {
	if size == 0 || size > MaxTreeSize {
		return fmt.Errorf("%w: tree size %d out of range", ErrBadProof, size)
	}
	p := make([][]byte, len(path))
	for i := range path {
		p[i] = path[i][:]
	}
	if err := proof.VerifyInclusion(SM3Hasher{}, index, size, leaf[:], p, root[:]); err != nil {
		return fmt.Errorf("%w: %v", ErrBadProof, err)
	}
	return nil
}
