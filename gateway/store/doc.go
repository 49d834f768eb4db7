// Package store is the gateway's durable record store: Badger on disk with
// one writer that commits records in groups (each group's receipts signed
// once, receipt.go, the message in package gateway/store/receiptmsg),
// device sequence state with open gaps and late fills (seqstate.go, with
// package gateway/store/seqstate), the free-space floor (disk.go, with
// package gateway/store/diskfloor), the checks that name a damaged file at
// open (damage.go) and the offline repair (repair.go), both with package
// gateway/store/badgerfile for Badger's files.
//
// Other owners keep their own key prefix in the store's database (DB); the
// store hears of them only through a RecordClaims at Open and a
// ClaimsRepair at Repair (the batch log's, package gateway/batch), and
// imports nothing of the gateway above it.
//
// Retention (archive.go, with package gateway/store/archived for the marks
// under a/) moves old records to archive files (package gateway/archive):
// the store keeps their list, answers which archive holds a record, and
// finishes at open a deletion a crash cut short.
package store
