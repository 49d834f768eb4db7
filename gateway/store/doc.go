// Package store is the gateway's durable record store: Badger on disk with
// one writer that commits records in groups (each group's receipts signed
// once, receipt.go), device sequence state with open gaps and late fills
// (seqstate.go), the free-space floor (disk.go, with package
// gateway/store/diskfloor), the checks that name a damaged file at open
// (damage.go) and the offline repair (repair.go), both with package
// gateway/store/badgerfile for Badger's files.
//
// Other owners keep their own key prefix in the store's database (DB); the
// store hears of them only through a RecordClaims at Open and a
// ClaimsRepair at Repair (the batch log's, package gateway/batch), and
// imports nothing of the gateway above it.
package store
