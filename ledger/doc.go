// Package ledger hosts the consortium ledger: the in-process CometBFT node
// that runs the ABCI application of package ledger/app, ledger homes
// (single-validator and testnet), organisations' member files and genesis
// assembly (docs/ledger.md).
package ledger
