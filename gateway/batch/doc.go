// Package batch cuts the gateway's records into signed batches (Batcher),
// keeps them in the record store's database under its own prefix (Log),
// anchors them on the ledger in order and publishes the anchored receipts
// (Anchorer), assembles proof bundles (Proofs) and repairs its part of a
// damaged store (Repairer). NewAnchoring builds them over a store; package
// gateway runs them and package gateway/httpapi serves them.
package batch
