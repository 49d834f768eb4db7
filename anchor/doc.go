// Package anchor is the offline evidence format that a gateway and a
// regulator share with the consortium ledger, and its verification: ledger
// transactions and their bodies, the ledger's records, batch headers, SM3
// Merkle trees and inclusion proofs, gateway receipts, anchor proofs, trust
// files and proof bundles. A program that only verifies bundles imports this
// package alone: it links neither the ledger's RPC client (package
// anchor/ledgerclient) nor Badger. It knows nothing of MQTT.
package anchor
