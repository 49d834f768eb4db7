package evidence

import (
	"bytes"
	"fmt"
	"time"

	"github.com/cometbft/cometbft/types"
)

// The light client rule by which the header after a block is accepted
// (CometBFT's light client specification, adjacent verification), written
// out here over the validator set's own commit check
// (types.ValidatorSet.VerifyCommitLight). CometBFT's light package is not
// imported: it links its RPC client and providers, which a program that only
// checks proof bundles has no use for. Every other header is checked against
// exactly one validator set the trust file names (verifyHeader), and a
// checkpoint against the set before it (Trust.checkCheckpoint); nothing
// skips ahead from a trusted header.

// verifyAdjacent checks that next (height+1, signed by nextVals) follows
// trusted: its validator set is the one trusted named as next, and +2/3 of
// that set signed it.
func verifyAdjacent(trusted, next *types.SignedHeader, nextVals *types.ValidatorSet, period time.Duration, now time.Time) error {
	if next.Height != trusted.Height+1 {
		return fmt.Errorf("header %d is not adjacent to header %d", next.Height, trusted.Height)
	}
	if err := checkNewHeader(trusted, next, nextVals, period, now); err != nil {
		return err
	}
	if !bytes.Equal(next.ValidatorsHash, trusted.NextValidatorsHash) {
		return fmt.Errorf("header %d's validators %X are not the next validators %X of header %d",
			next.Height, next.ValidatorsHash, trusted.NextValidatorsHash, trusted.Height)
	}
	if err := nextVals.VerifyCommitLight(trusted.ChainID, next.Commit.BlockID, next.Height, next.Commit); err != nil {
		return fmt.Errorf("header %d: %w", next.Height, err)
	}
	return nil
}

// checkNewHeader holds the checks on the new header h: the trusted header
// is within its trusting period; h is well formed, of the same chain, later
// in height and time, not from the future, and vals is the set it names.
func checkNewHeader(trusted, h *types.SignedHeader, vals *types.ValidatorSet, period time.Duration, now time.Time) error {
	if expires := trusted.Time.Add(period); !expires.After(now) {
		return fmt.Errorf("the trust file's trusting period expired at %s (now %s): use a trust file with a longer trusting_period",
			formatTime(expires), formatTime(now))
	}
	if err := h.ValidateBasic(trusted.ChainID); err != nil {
		return fmt.Errorf("header %d: %w", h.Height, err)
	}
	if h.Height <= trusted.Height {
		return fmt.Errorf("header %d is not above the trusted header %d", h.Height, trusted.Height)
	}
	if !h.Time.After(trusted.Time) {
		return fmt.Errorf("header %d's time %s is not after header %d's %s", h.Height, formatTime(h.Time), trusted.Height, formatTime(trusted.Time))
	}
	if h.Time.After(now.Add(DefaultMaxClockDrift)) {
		return fmt.Errorf("header %d's time %s is in the future (now %s)", h.Height, formatTime(h.Time), formatTime(now))
	}
	if !bytes.Equal(h.ValidatorsHash, vals.Hash()) {
		return fmt.Errorf("header %d names validators %X, the set given hashes to %X", h.Height, h.ValidatorsHash, vals.Hash())
	}
	return nil
}
