package gateway

import (
	"log/slog"
	"time"

	"github.com/edgeanchor/edgeanchor/gateway/batch"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// RepairReport says what RepairStore kept of the records and of the batch
// chain, and what it could not.
type RepairReport struct {
	store.RepairReport
	batch.ChainRepair
}

// RepairStore repairs the gateway's record store in dir (the gateway must
// be stopped): the records (store.Repair), then the batch chain up to its
// first unreadable batch (batch.Repairer). The gseqs the kept batches
// cover but the store lost are reported lost.
func RepairStore(dir string, now time.Time, log *slog.Logger) (*RepairReport, error) {
	br := batch.NewRepairer()
	rep, err := store.Repair(dir, now, log, br)
	if err != nil {
		return nil, err
	}
	return &RepairReport{RepairReport: *rep, ChainRepair: br.Report}, nil
}
