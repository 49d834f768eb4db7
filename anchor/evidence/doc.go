// Package evidence is the offline evidence a regulator checks, and its
// verification: anchor proofs (a transaction's inclusion in a block signed
// by the trusted validators, by CometBFT's light client rules), trust files
// and their checkpoints, and proof bundles. A program that only verifies
// bundles imports this package alone: it links neither the ledger's RPC
// client (package anchor/ledgerclient) nor Badger.
package evidence
