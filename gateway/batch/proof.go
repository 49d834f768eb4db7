package batch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// ProofLedger is what the proof API needs of the ledger client
// (*ledgerclient.Client implements it).
type ProofLedger interface {
	ProveAnchor(ctx context.Context, tx []byte) (*evidence.AnchorProof, error)
	ProveTxHash(ctx context.Context, txHash string) (*evidence.AnchorProof, error)
	Device(ctx context.Context, did device.DID) (*anchor.DeviceRecord, error)
}

var _ ProofLedger = (*ledgerclient.Client)(nil)

// Errors of Proofs.
var (
	// ErrNotAnchored means the record is stored but its batch is not yet
	// committed on the ledger: ask again in a few seconds.
	ErrNotAnchored = errors.New("gateway: record not anchored yet")
)

// Proofs assembles the proof bundle of a record (docs/proof-bundle.md)
// from the store, the batch log and the ledger, keeping the ledger's
// proofs and the Merkle trees of recent batches in small caches; package
// gateway/httpapi serves them.
type Proofs struct {
	store  *store.Store
	blog   *Log
	ledger ProofLedger
	gw     device.DID
	gwPub  []byte
	log    *slog.Logger

	mu      sync.Mutex
	devices map[device.DID]*deviceProof // registration proofs, per device
	anchors map[uint64]*evidence.AnchorProof
	trees   map[uint64]*anchor.Tree // batch seq → its Merkle tree
	firsts  map[device.DID]uint64   // key rotation: first batch of each key's run (rotation.go)
}

type deviceProof struct {
	tx    []byte
	proof *evidence.AnchorProof
}

// maxCachedAnchors bounds the anchor proofs kept in memory, and
// maxCachedTrees the batches whose Merkle trees are kept (~64 bytes a
// record, every level: 16 batches of 10,000 records are 10 MB).
const (
	maxCachedAnchors = 256
	maxCachedTrees   = 16
)

// NewProofs proves the records in st, batched in blog, with proofs fetched
// from ledger. signer is the gateway's key.
func NewProofs(st *store.Store, blog *Log, ledger ProofLedger, signer device.Signer, log *slog.Logger) (*Proofs, error) {
	der, err := device.MarshalPublicKeyDER(signer.Public())
	if err != nil {
		return nil, err
	}
	return &Proofs{
		store: st, blog: blog, ledger: ledger, gw: signer.DID(), gwPub: der, log: log,
		devices: map[device.DID]*deviceProof{}, anchors: map[uint64]*evidence.AnchorProof{},
		trees: map[uint64]*anchor.Tree{},
	}, nil
}

// Bundle assembles the proof bundle of record gseq (a *store.ArchivedError
// when the record was archived).
func (p *Proofs) Bundle(ctx context.Context, gseq uint64) (*evidence.Bundle, error) {
	if a := p.store.ArchiveOf(gseq); a != nil {
		return nil, &store.ArchivedError{GSeq: gseq, Archive: *a}
	}
	rec, err := p.store.Get(gseq)
	if err != nil {
		return nil, err
	}
	sb, err := p.blog.ByGSeq(gseq)
	if errors.Is(err, ErrNotFound) || (err == nil && sb.Anchor == nil) {
		return nil, fmt.Errorf("%w: gseq %d", ErrNotAnchored, gseq)
	}
	if err != nil {
		return nil, err
	}
	// The batch's leaves (the store) and the two ledger proofs are
	// independent: a first request for an old record waits for the
	// slowest of them, not their sum.
	var (
		tree *anchor.Tree
		dev  *deviceProof
		ap   *evidence.AnchorProof
		errs [3]error
		wg   sync.WaitGroup
	)
	wg.Go(func() { dev, errs[1] = p.deviceProof(ctx, rec.DID) })
	wg.Go(func() { ap, errs[2] = p.anchorProof(ctx, sb) })
	tree, errs[0] = p.batchTree(sb)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	path, err := tree.Path(gseq - sb.First)
	if err != nil {
		return nil, err
	}
	b := &evidence.Bundle{
		Type: evidence.BundleType, V: evidence.BundleVersion,
		Record:   evidence.BundleRecord{Gateway: p.gw, GSeq: rec.GSeq, DID: rec.DID, Seq: rec.Seq},
		Envelope: rec.Envelope,
		Device:   evidence.BundleDevice{Tx: dev.tx, Proof: dev.proof},
		Receipt:  evidence.BundleReceipt{Body: rec.Receipt, Group: rec.Group, Path: rec.Path, Sig: rec.ReceiptSig},
		Salt:     rec.Salt,
		Merkle:   evidence.BundleMerkle{Index: gseq - sb.First, Size: tree.Size(), Path: path},
		Batch:    evidence.BundleSigned{Body: sb.Header, Sig: sb.Sig},
		Gateway:  evidence.BundleGateway{DID: p.gw, Pub: p.gwPub},
		Anchor:   ap,
	}
	if err := p.bundleKeys(ctx, b, sb, rec); err != nil { // key rotation (rotation.go)
		return nil, err
	}
	return b, nil
}

// batchTree returns the Merkle tree of sb's records, checked against the
// header's root: from a small cache, the batch log's kept leaves, or the
// records themselves (a batch cut before leaves were kept, or whose kept
// leaves are damaged: they are kept again).
func (p *Proofs) batchTree(sb *Batch) (*anchor.Tree, error) {
	p.mu.Lock()
	tree, ok := p.trees[sb.Seq]
	p.mu.Unlock()
	if ok {
		return tree, nil
	}
	tree, ok, err := p.blog.Tree(sb)
	if err != nil {
		return nil, err
	}
	if !ok {
		if tree, err = p.recordTree(sb); err != nil {
			return nil, err
		}
		if err := p.blog.KeepLeaves(sb.Seq, tree.Leaves()); err != nil {
			p.log.Warn("keeping a batch's leaf hashes", "batch", sb.Seq, "err", err)
		}
	}
	putBounded(&p.mu, p.trees, maxCachedTrees, sb.Seq, tree)
	return tree, nil
}

// recordTree builds the tree over sb's records and checks it against sb's
// root.
func (p *Proofs) recordTree(sb *Batch) (*anchor.Tree, error) {
	leaves := make([]anchor.Hash, 0, sb.Last-sb.First+1)
	if err := p.store.Range(sb.First, sb.Last, func(r *store.Record) error {
		leaves = append(leaves, anchor.LeafHash(r.Salt, r.Receipt))
		return nil
	}); err != nil {
		return nil, err
	}
	if uint64(len(leaves)) != sb.Last-sb.First+1 {
		return nil, fmt.Errorf("gateway: batch %d: %d of its %d records are stored", sb.Seq, len(leaves), sb.Last-sb.First+1)
	}
	h, err := sb.ParsedHeader()
	if err != nil {
		return nil, err
	}
	tree, err := anchor.NewTree(leaves)
	if err != nil {
		return nil, fmt.Errorf("gateway: batch %d: %w", sb.Seq, err)
	}
	if root := tree.Root(); root != h.Root {
		return nil, fmt.Errorf("gateway: batch %d: stored records hash to %s, the header says %s", sb.Seq, root, h.Root)
	}
	return tree, nil
}

func (p *Proofs) deviceProof(ctx context.Context, did device.DID) (*deviceProof, error) {
	p.mu.Lock()
	d, ok := p.devices[did]
	p.mu.Unlock()
	if ok {
		return d, nil
	}
	rec, err := p.ledger.Device(ctx, did)
	if err != nil {
		return nil, fmt.Errorf("gateway: device %s on the ledger: %w", did, err)
	}
	ap, err := p.ledger.ProveTxHash(ctx, rec.Tx)
	if err != nil {
		return nil, fmt.Errorf("gateway: registration of %s: %w", did, err)
	}
	d = &deviceProof{tx: ap.Tx, proof: ap}
	p.mu.Lock()
	p.devices[did] = d
	p.mu.Unlock()
	return d, nil
}

func (p *Proofs) anchorProof(ctx context.Context, sb *Batch) (*evidence.AnchorProof, error) {
	p.mu.Lock()
	ap, ok := p.anchors[sb.Seq]
	p.mu.Unlock()
	if ok {
		return ap, nil
	}
	ap, err := p.ledger.ProveAnchor(ctx, sb.Tx)
	if err != nil {
		return nil, fmt.Errorf("gateway: anchor proof of batch %d: %w", sb.Seq, err)
	}
	putBounded(&p.mu, p.anchors, maxCachedAnchors, sb.Seq, ap)
	return ap, nil
}

// putBounded sets m[k] = v under mu, emptying m first when it holds limit
// entries: the proofs' caches are cheap to fill again and never grow
// without bound.
func putBounded[K comparable, V any](mu *sync.Mutex, m map[K]V, limit int, k K, v V) {
	mu.Lock()
	defer mu.Unlock()
	if len(m) >= limit {
		clear(m)
	}
	m[k] = v
}
