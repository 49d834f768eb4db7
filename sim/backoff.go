package sim

import (
	"math/rand/v2"
	"time"
)

// Backoff is a device's reconnect policy: exponential backoff with full
// jitter. Each delay is drawn uniformly from [0, ceiling]; the ceiling
// starts at Min and doubles after each delay, up to Max. Reset (after a
// connection succeeded) starts again at Min.
//
// Full jitter rather than a fixed or half-jittered delay: after a gateway
// restart every device of a site lost its connection at the same instant,
// and delays drawn from the whole window spread their CONNECTs (each an SM2
// verification for the gateway) evenly over it instead of in waves.
type Backoff struct {
	Min, Max time.Duration
	ceiling  time.Duration
}

// Next returns the delay before the next attempt and doubles the ceiling.
func (b *Backoff) Next() time.Duration {
	if b.ceiling < b.Min {
		b.ceiling = b.Min
	}
	d := time.Duration(rand.Int64N(int64(b.ceiling) + 1))
	b.ceiling = max(min(2*b.ceiling, b.Max), b.Min)
	return d
}

// Reset starts the next delay at Min again.
func (b *Backoff) Reset() { b.ceiling = 0 }
