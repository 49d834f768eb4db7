package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
	"github.com/edgeanchor/edgeanchor/sim/profile"
)

// UpTopic is the topic a device publishes its envelopes on.
func UpTopic(did device.DID) string { return "ea/v1/dev/" + string(did) + "/up" }

// ReceiptTopic is the topic the gateway answers a device's records on.
func ReceiptTopic(did device.DID) string { return "ea/v1/dev/" + string(did) + "/receipt" }

type simDevice struct {
	f     *Fleet
	id    *identity
	gen   profile.Generator
	spool *Spool
	wake  chan struct{}
	log   interface {
		Info(string, ...any)
		Warn(string, ...any)
		Debug(string, ...any)
	}
	pending *profile.Reading // generated but not taken yet

	missSeq uint64 // head reading that went unacknowledged
	misses  int    // how many times in a row
}

func (f *Fleet) newDevice(id *identity) (*simDevice, error) {
	gc := profile.GenConfig{
		Kind: id.state.Kind, Seed: f.state.Seed, Index: id.state.Index,
		Site: id.state.Site, Salt: f.salt, Start: f.state.Start,
	}
	if f.state.Arrears != nil {
		gc.Arrears = *f.state.Arrears
	}
	gen, err := profile.NewGenerator(gc)
	if err != nil {
		return nil, err
	}
	sp, err := OpenSpool(filepath.Join(id.dir, "spool"), f.cfg.SpoolMax)
	if err != nil {
		return nil, err
	}
	if last := sp.Last(); last > id.seq {
		return nil, fmt.Errorf("%w: %s: spool holds seq %d beyond the counter %d", ErrState, id.dir, last, id.seq)
	}
	// Replay the generator past the readings already taken.
	for range id.seq {
		gen.Next()
	}
	return &simDevice{
		f: f, id: id, gen: gen, spool: sp, wake: make(chan struct{}, 1),
		log: f.cfg.Logger.With("device", id.state.Name, "did", string(id.signer.DID())),
	}, nil
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// takeLoop takes readings: one every 1/Rate seconds while the device's
// simulated clock is behind the wall clock, never one from the future.
func (d *simDevice) takeLoop(ctx context.Context) error {
	cfg := &d.f.cfg
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	// Spread the fleet over the interval.
	next := time.Now().Add(time.Duration(rand.Int64N(int64(interval) + 1)))
	for {
		if d.pending == nil {
			r := d.gen.Next()
			d.pending = &r
		}
		wait := time.Until(next)
		if ahead := d.pending.At.Sub(cfg.Now()); ahead > wait {
			wait = ahead
		}
		if err := sleep(ctx, wait); err != nil {
			return nil
		}
		if err := d.take(*d.pending); err != nil {
			d.log.Warn("reading not stored", "error", err)
			return err
		}
		d.pending = nil
		next = next.Add(interval)
		if now := time.Now(); next.Before(now.Add(-interval)) {
			next = now // do not burst to make up for a stall
		}
	}
}

// take signs r with the next sequence number and spools it.
func (d *simDevice) take(r profile.Reading) error {
	seq, err := d.id.nextSeq()
	if err != nil {
		return err
	}
	body, err := device.NewBody(d.id.signer.DID(), seq, r.At, r.Kind, r.Data)
	if err != nil {
		return err
	}
	env, err := device.Seal(d.id.signer, body)
	if err != nil {
		return err
	}
	dropped, err := d.spool.Put(seq, env)
	if err != nil {
		return err
	}
	if dropped > 0 {
		d.log.Warn("spool full, oldest readings dropped", "dropped", dropped, "dropped_total", d.spool.Dropped())
	}
	d.f.taken.Add(1)
	if cb := d.f.cfg.OnTaken; cb != nil {
		cb(Taken{Device: d.id.signer.DID(), Seq: seq, At: r.At.UTC(), Kind: r.Kind})
	}
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return nil
}

// errLost means the connection went away.
var errLost = errors.New("sim: connection lost")

// connect makes one connection attempt: the enrollment credential until the
// device has enrolled, then the ea1 credential, with a fresh nonce each time.
func (d *simDevice) connect() (mqtt.Client, <-chan struct{}, bool, error) {
	cfg := &d.f.cfg
	did := string(d.id.signer.DID())
	enrolling := !d.id.enrolled()
	lost := make(chan struct{})
	var once sync.Once
	opts := mqtt.NewClientOptions().
		AddBroker(cfg.Broker).
		SetClientID(did).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(true).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetWriteTimeout(10 * time.Second).
		SetCredentialsProvider(func() (string, string) {
			var pw string
			var err error
			if enrolling {
				pw, err = credential.MakeEnroll(d.id.signer, d.id.state.Token, d.id.state.Kind, d.id.state.Site, cfg.Now())
			} else {
				pw, err = credential.MakeConnect(d.id.signer, cfg.Now())
			}
			if err != nil {
				d.log.Warn("credential not made", "error", err)
			}
			return did, pw
		}).
		SetConnectionLostHandler(func(mqtt.Client, error) { once.Do(func() { close(lost) }) })
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(cfg.ConnectTimeout + time.Second) {
		c.Disconnect(0)
		return nil, nil, enrolling, errors.New("sim: connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, nil, enrolling, err
	}
	return c, lost, enrolling, nil
}

// sendLoop keeps a connection up (reconnecting with exponential backoff and
// full jitter, Backoff) and sends the spool in order over it.
func (d *simDevice) sendLoop(ctx context.Context) {
	cfg := &d.f.cfg
	backoff := Backoff{Min: cfg.BackoffMin, Max: cfg.BackoffMax}
	failures := 0
	for ctx.Err() == nil {
		c, lost, enrolling, err := d.connect()
		if err != nil {
			d.f.connFail.Add(1)
			failures++
			// The first failure and every 20th in a row are worth a warning
			// (a refused token or credential never heals by itself).
			if failures == 1 || failures%20 == 0 {
				d.log.Warn("connect failed", "error", err, "enrolling", enrolling, "failures", failures)
			}
			if sleep(ctx, backoff.Next()) != nil {
				return
			}
			continue
		}
		backoff.Reset()
		failures = 0
		d.f.connects.Add(1)
		if enrolling {
			if err := d.id.setEnrolled(); err != nil {
				d.log.Warn("enrollment not recorded", "error", err)
			}
			d.log.Info("device enrolled")
		}
		d.f.online.Add(1)
		err = d.drain(ctx, c, lost)
		d.f.online.Add(-1)
		c.Disconnect(100)
		if err != nil && ctx.Err() == nil {
			d.log.Debug("connection ended", "error", err)
		}
		if d.misses > 0 {
			// The head reading went unacknowledged: an MQTT 3.1.1 gateway
			// that refuses a publish (rate_limited, say) disconnects without
			// saying why. Resending at once would meet the same refusal and
			// give the reading up after AckRetries tries; pausing (BackoffMin,
			// doubling with each miss in a row, with jitter) lets a rate
			// limit refill first.
			pause := min(cfg.BackoffMin<<(d.misses-1), cfg.BackoffMax)
			if sleep(ctx, pause/2+time.Duration(rand.Int64N(int64(pause/2)+1))) != nil {
				return
			}
		} else if sleep(ctx, backoff.Next()) != nil {
			// A lost connection is usually every device's at once (the
			// gateway restarted): the first attempt waits a jittered delay
			// too, so that they do not all CONNECT in the same instant.
			return
		}
	}
}

type inflight struct {
	seq uint64
	tok mqtt.Token
}

// drain publishes spooled readings in order, at most Window unacknowledged,
// deleting each after its PUBACK, until the connection is lost or ctx ends.
func (d *simDevice) drain(ctx context.Context, c mqtt.Client, lost <-chan struct{}) error {
	cfg := &d.f.cfg
	topic := UpTopic(d.id.signer.DID())
	var (
		window []inflight
		after  uint64
	)
	for {
		if len(window) < cfg.Window {
			for _, seq := range d.spool.Pending(after, cfg.Window-len(window)) {
				env, err := d.spool.Get(seq)
				after = seq
				if errors.Is(err, ErrSpoolEmpty) {
					continue // dropped meanwhile
				}
				if err != nil {
					return err
				}
				window = append(window, inflight{seq: seq, tok: c.Publish(topic, 1, false, env)})
			}
		}
		if len(window) == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-lost:
				return errLost
			case <-d.wake:
				continue
			}
		}
		head := window[0]
		timer := time.NewTimer(cfg.AckTimeout)
		select {
		case <-ctx.Done():
			timer.Stop()
			d.settle(window)
			return ctx.Err()
		case <-lost:
			timer.Stop()
			// A gateway that refuses a publish from an MQTT 3.1.1 client
			// (an invalid reading) disconnects it. A resent reading it
			// stored before the PUBACK was lost is acknowledged again
			// (docs/protocol.md, resends are idempotent): the spool
			// resends the very bytes it sent.
			d.missedAck(head.seq)
			return errLost
		case <-timer.C:
			d.missedAck(head.seq)
			return fmt.Errorf("sim: no PUBACK for seq %d within %s", head.seq, cfg.AckTimeout)
		case <-head.tok.Done():
			timer.Stop()
		}
		if err := head.tok.Error(); err != nil {
			d.missedAck(head.seq)
			return err
		}
		d.misses = 0
		if err := d.spool.Delete(head.seq); err != nil {
			return err
		}
		window = window[1:]
		d.f.acked.Add(1)
		if cb := cfg.OnAcked; cb != nil {
			cb(Taken{Device: d.id.signer.DID(), Seq: head.seq})
		}
	}
}

// settleTimeout bounds how long a stopping device waits for the PUBACKs of
// readings already in flight.
const settleTimeout = 2 * time.Second

// settle waits briefly for the PUBACKs of the readings in flight when the
// device stops, and deletes those acknowledged, so that a clean stop does
// not leave stored readings to be sent (and acknowledged as resends) again.
func (d *simDevice) settle(window []inflight) {
	deadline := time.Now().Add(settleTimeout)
	for _, in := range window {
		if !in.tok.WaitTimeout(time.Until(deadline)) || in.tok.Error() != nil {
			return
		}
		if err := d.spool.Delete(in.seq); err != nil {
			return
		}
		d.f.acked.Add(1)
		if cb := d.f.cfg.OnAcked; cb != nil {
			cb(Taken{Device: d.id.signer.DID(), Seq: in.seq})
		}
	}
}

// missedAck counts a head reading that went unacknowledged on a live
// connection (no PUBACK in time, or the connection dropped while it was in
// flight). After AckRetries misses in a row it is given up as refused by the
// gateway, so that it cannot block the readings behind it: MQTT 3.1.1 has
// no negative PUBACK, and a gateway disconnects a device whose publish it
// refuses. (A resent reading the gateway already stored before the PUBACK
// was lost is acknowledged, not refused, so it never gets here; the
// give-up remains for readings the gateway refuses.)
func (d *simDevice) missedAck(seq uint64) {
	if d.missSeq != seq {
		d.missSeq, d.misses = seq, 0
	}
	d.misses++
	if d.misses < d.f.cfg.AckRetries {
		return
	}
	if err := d.spool.Delete(seq); err != nil {
		d.log.Warn("refused reading not deleted", "seq", seq, "error", err)
		return
	}
	d.misses = 0
	d.f.refused.Add(1)
	d.log.Warn("reading refused by the gateway, given up", "seq", seq)
}
