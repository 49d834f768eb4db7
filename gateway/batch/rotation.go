package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// Gateway key rotation (docs/operations.md, "Rotating a gateway key"). The
// gateway is started with its new key on the same data directory once the
// committee admitted the key as the successor of the old one. The store and
// the batch chain continue: the next batch header names the new DID and is
// signed by the new key, its seq, prev and first follow the stored chain,
// which is what the ledger expects of a successor.
//
// Batches the old key signed but the ledger never committed (the unanchored
// tail of the batch log) can no longer be anchored: the ledger refuses the
// old key after the succession. The anchorer re-signs that tail under the
// new key, once the ledger's chain is reconciled (so no batch the ledger
// already holds is re-signed) and once the ledger records the new key as a
// successor of the tail's signer. The records' receipts are unchanged
// (signed by the old key); a proof bundle carries the key line that lets a
// verifier check them (docs/proof-bundle.md).

// ErrNotSuccessor means the batch log holds unanchored batches signed by a
// key that the ledger does not record as a predecessor of this gateway's
// key: the committee has not admitted the key with --succeeds yet, or the
// gateway was started with the wrong key. Anchoring waits.
var ErrNotSuccessor = errors.New("gateway: stored batches are signed by another gateway key")

// lineLedger is the ledger query the tail adoption needs
// (*ledgerclient.Client implements it).
type lineLedger interface {
	Gateway(ctx context.Context, did device.DID) (*anchor.GatewayRecord, error)
}

// maxKeyLine bounds how many predecessors are followed.
const maxKeyLine = 64

// keyLine returns gw and its predecessors on the ledger, newest first.
func keyLine(ctx context.Context, l lineLedger, gw device.DID) ([]device.DID, error) {
	out := []device.DID{gw}
	for len(out) < maxKeyLine {
		rec, err := l.Gateway(ctx, out[len(out)-1])
		if err != nil {
			return out, err
		}
		if rec.Predecessor == "" {
			break
		}
		out = append(out, rec.Predecessor)
	}
	return out, nil
}

// adoptTail re-signs, under this gateway's key, the unanchored batches from
// the first one another key signed. It runs after reconcile.
func (a *Anchorer) adoptTail(ctx context.Context) error {
	if a.cfg.Resign == nil {
		return nil
	}
	anchored, err := a.blog.AnchoredSeq()
	if err != nil {
		return err
	}
	sb, err := a.blog.Get(anchored + 1)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	h, err := sb.ParsedHeader()
	if err != nil {
		return fmt.Errorf("gateway: stored batch %d: %w", sb.Seq, err)
	}
	if h.Gateway == a.cfg.Gateway {
		return nil
	}
	l, ok := a.ledger.(lineLedger)
	if !ok {
		return fmt.Errorf("%w: batch %d is signed by %s; the ledger client cannot tell this key's predecessors", ErrNotSuccessor, sb.Seq, h.Gateway)
	}
	line, err := keyLine(ctx, l, a.cfg.Gateway)
	if err != nil {
		return fmt.Errorf("%w: batch %d is signed by %s, and the ledger does not answer for %s: %v", ErrNotSuccessor, sb.Seq, h.Gateway, a.cfg.Gateway, err)
	}
	found := false
	for _, d := range line[1:] {
		found = found || d == h.Gateway
	}
	if !found {
		return fmt.Errorf("%w: batch %d is signed by %s, which the ledger does not record as a predecessor of %s (have the committee approve `consortium propose add-gateway --succeeds %s`, or start with that key)",
			ErrNotSuccessor, sb.Seq, h.Gateway, a.cfg.Gateway, h.Gateway)
	}
	n, err := a.cfg.Resign(sb.Seq)
	if err != nil {
		return err
	}
	a.cfg.Log.Warn("key rotation: unanchored batches re-signed under the new key", "from_seq", sb.Seq, "batches", n, "old_gateway", h.Gateway)
	return nil
}

// ResignTail re-signs the stored batches from seq on with the batcher's key:
// each header keeps its seq, records, root and times, names this gateway
// and chains to the re-signed one before it. It returns how many batches it
// re-signed. None of them may be anchored.
func (b *Batcher) ResignTail(from uint64) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	anchored, err := b.log.AnchoredSeq()
	if err != nil {
		return 0, err
	}
	if from <= anchored {
		return 0, fmt.Errorf("gateway: re-sign from batch %d: batch %d is anchored", from, anchored)
	}
	var out []*Batch
	var prev anchor.Hash
	for seq := from; seq <= b.seq; seq++ {
		sb, err := b.log.Get(seq)
		if err != nil {
			return 0, wrapErr(err, "re-sign batch %d", seq)
		}
		h, err := sb.ParsedHeader()
		if err != nil {
			return 0, fmt.Errorf("gateway: re-sign batch %d: %w", seq, err)
		}
		if seq > from {
			h.Prev = prev
		}
		h.Gateway = b.cfg.Signer.DID()
		hb := h.Encode()
		sig, err := b.cfg.Signer.Sign(hb)
		if err != nil {
			return 0, err
		}
		sb.Header, sb.Sig, sb.Hash = hb, sig, anchor.SM3(hb)
		sb.Tx = (&anchor.Tx{Body: hb, Signer: h.Gateway, Sig: sig}).Encode()
		prev = sb.Hash
		out = append(out, sb)
	}
	if len(out) == 0 {
		return 0, nil
	}
	if err := b.log.replace(out); err != nil {
		return 0, err
	}
	b.prev = prev
	return len(out), nil
}

// replace overwrites stored, unanchored batches (same seq and records) in
// one transaction.
func (l *Log) replace(bs []*Batch) error {
	return l.db.Update(func(txn *badger.Txn) error {
		for _, b := range bs {
			old, err := getBatch(txn, l.key("h/", b.Seq))
			if err != nil {
				return err
			}
			if old.Anchor != nil || old.First != b.First || old.Last != b.Last {
				return fmt.Errorf("%w: batch %d cannot be replaced (anchored, or other records)", ErrChain, b.Seq)
			}
			val, err := json.Marshal(b)
			if err != nil {
				return err
			}
			if err := txn.Set(l.key("h/", b.Seq), val); err != nil {
				return err
			}
		}
		return nil
	})
}

// bundleGateway returns the gateway that signed h, with its key: this
// gateway's, or (a batch from before a key rotation) a predecessor's from
// the ledger.
func (p *Proofs) bundleGateway(ctx context.Context, h *anchor.BatchHeader) (evidence.BundleGateway, error) {
	if h.Gateway == p.gw {
		return evidence.BundleGateway{DID: p.gw, Pub: p.gwPub}, nil
	}
	l, ok := p.ledger.(lineLedger)
	if !ok {
		return evidence.BundleGateway{}, fmt.Errorf("gateway: batch %d is signed by %s and the ledger client cannot fetch its key", h.Seq, h.Gateway)
	}
	rec, err := l.Gateway(ctx, h.Gateway)
	if err != nil {
		return evidence.BundleGateway{}, fmt.Errorf("gateway: key of %s on the ledger: %w", h.Gateway, err)
	}
	pub, err := device.ParsePublicKeyDER(rec.Pub)
	if err != nil || !h.Gateway.Matches(pub) {
		return evidence.BundleGateway{}, fmt.Errorf("gateway: the ledger's key of %s does not match its DID", h.Gateway)
	}
	return evidence.BundleGateway{DID: h.Gateway, Pub: rec.Pub}, nil
}

// keyLine builds a bundle's Line: the links from the gateway of batch sb
// back through the key rotations in the batch log until every key in need
// is covered (need: the DIDs that registered the device or signed the
// receipt; the header's own gateway needs no link).
func (p *Proofs) keyLine(ctx context.Context, sb *Batch, gw device.DID, need map[device.DID]bool) ([]evidence.BundleLink, error) {
	delete(need, gw)
	var links []evidence.BundleLink
	cur, seq := gw, sb.Seq
	for len(need) > 0 {
		if len(links) == evidence.MaxLine {
			return nil, fmt.Errorf("gateway: key line longer than %d rotations", evidence.MaxLine)
		}
		first, err := p.firstBatchOf(cur, seq)
		if err != nil {
			return nil, err
		}
		if first == 1 {
			return nil, fmt.Errorf("gateway: %v signed no batch of this gateway's chain before %s (a key that never anchored cannot be proven)", keys(need), cur)
		}
		prev, err := p.blog.Get(first - 1)
		if err != nil {
			return nil, wrapErr(err, "key line")
		}
		ph, err := prev.ParsedHeader()
		if err != nil {
			return nil, fmt.Errorf("gateway: stored batch %d: %w", prev.Seq, err)
		}
		next, err := p.blog.Get(first)
		if err != nil {
			return nil, wrapErr(err, "key line")
		}
		ap, err := p.anchorProof(ctx, next)
		if err != nil {
			return nil, err
		}
		pg, err := p.bundleGateway(ctx, ph)
		if err != nil {
			return nil, err
		}
		links = append(links, evidence.BundleLink{Gateway: pg, Last: prev.Header,
			Next: evidence.BundleSigned{Body: next.Header, Sig: next.Sig}, Anchor: ap})
		delete(need, ph.Gateway)
		cur, seq = ph.Gateway, prev.Seq
	}
	return links, nil
}

func keys(m map[device.DID]bool) []device.DID {
	var out []device.DID
	for k := range m {
		out = append(out, k)
	}
	return out
}

// firstBatchOf returns the first seq of the run of batches signed by gw
// that ends at seq (seq's batch is gw's). Runs of anchored batches do not
// change, so each is looked up once.
func (p *Proofs) firstBatchOf(gw device.DID, seq uint64) (uint64, error) {
	p.mu.Lock()
	first, ok := p.firsts[gw]
	p.mu.Unlock()
	if ok && first <= seq {
		return first, nil
	}
	first = seq
	for first > 1 {
		sb, err := p.blog.Get(first - 1)
		if err != nil {
			return 0, wrapErr(err, "key line")
		}
		h, err := sb.ParsedHeader()
		if err != nil {
			return 0, fmt.Errorf("gateway: stored batch %d: %w", sb.Seq, err)
		}
		if h.Gateway != gw {
			break
		}
		first--
	}
	p.mu.Lock()
	if p.firsts == nil {
		p.firsts = map[device.DID]uint64{}
	}
	p.firsts[gw] = first
	p.mu.Unlock()
	return first, nil
}

// bundleKeys fills b's gateway (the batch header's signer) and, after a key
// rotation, its key line.
func (p *Proofs) bundleKeys(ctx context.Context, b *evidence.Bundle, sb *Batch, rec *store.Record) error {
	h, err := sb.ParsedHeader()
	if err != nil {
		return fmt.Errorf("gateway: stored batch %d: %w", sb.Seq, err)
	}
	if b.Gateway, err = p.bundleGateway(ctx, h); err != nil {
		return err
	}
	b.Record.Gateway = h.Gateway
	need := map[device.DID]bool{}
	if tx, err := anchor.DecodeTx(b.Device.Tx); err == nil {
		need[tx.Signer] = true
	}
	if r, err := anchor.ParseReceipt(rec.Receipt); err == nil {
		need[r.Gateway] = true
	}
	b.Line, err = p.keyLine(ctx, sb, h.Gateway, need)
	return err
}
