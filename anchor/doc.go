// Package anchor is the format that a gateway and a regulator share with
// the consortium ledger: ledger transactions and their bodies (governance
// included), the ledger's records, batch headers, SM3 Merkle trees and
// inclusion proofs, gateway receipts and the canonical JSON encoding they
// all follow. The offline verification of that evidence (anchor proofs,
// trust files, proof bundles) is package anchor/evidence; the online client
// of a ledger node is package anchor/ledgerclient. This package links
// neither CometBFT nor Badger, and knows nothing of MQTT.
package anchor
