package sim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeanchor/edgeanchor/device"
)

// LoadDevice is one device of a load run: its signer, its kind and site,
// and the token to enroll with (empty if it is already registered).
type LoadDevice struct {
	Signer device.Signer
	Kind   string
	Site   string
	Token  string
	// Envelopes are the pre-signed messages to publish, in order (see
	// PreSign).
	Envelopes [][]byte
}

// LoadConfig describes a load run.
type LoadConfig struct {
	Broker  string
	Devices []LoadDevice
	// Rate is the total publish rate over all devices in messages/s; 0
	// publishes as fast as the windows allow.
	Rate float64
	// Window is how many unacknowledged QoS 1 publishes a device may have
	// (default 16).
	Window int
	// ConnectTimeout bounds each connection (and enrollment); default 30 s.
	ConnectTimeout time.Duration
	// AckTimeout bounds the wait for each PUBACK; default 30 s.
	AckTimeout time.Duration
	Now        func() time.Time // wall clock for credentials (default time.Now)
}

// LoadResult reports a load run.
type LoadResult struct {
	Published uint64        // publishes written
	Acked     uint64        // PUBACKs received
	Elapsed   time.Duration // first connect done to last PUBACK
	Connect   time.Duration // time to connect (and enroll) every device
}

// Rate is acknowledged messages per second.
func (r LoadResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Acked) / r.Elapsed.Seconds()
}

// ErrLoad means a load run did not get every message acknowledged; the
// error says which device and why.
var ErrLoad = errors.New("sim: load run incomplete")

// PreSign makes n signed envelopes of realistic readings for signer's kind
// with sequence numbers first, first+1, …, from a generator seeded with
// seed and index, starting at start. Signing is done here, before the clock
// of a load run starts.
func PreSign(signer device.Signer, kind string, first uint64, n int, seed uint64, index int, start time.Time) ([][]byte, error) {
	gen, err := NewGenerator(GenConfig{Kind: kind, Seed: seed, Index: index, Site: "load", Salt: []byte("load"), Start: start})
	if err != nil {
		return nil, err
	}
	out := make([][]byte, n)
	for i := range n {
		r := gen.Next()
		body, err := device.NewBody(signer.DID(), first+uint64(i), r.At, r.Kind, r.Data)
		if err != nil {
			return nil, err
		}
		if out[i], err = device.Seal(signer, body); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Load connects every device (enrolling those with a token), then publishes
// each device's envelopes in order at cfg.Rate in total, with at most
// cfg.Window unacknowledged per device, and waits for every PUBACK. It
// returns when all are acknowledged, on the first error, or when ctx ends.
func Load(ctx context.Context, cfg LoadConfig) (LoadResult, error) {
	if cfg.Window <= 0 {
		cfg.Window = 16
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Devices) == 0 {
		return LoadResult{}, fmt.Errorf("%w: no devices", ErrConfig)
	}
	var res LoadResult
	t0 := time.Now()
	clients := make([]mqtt.Client, len(cfg.Devices))
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Disconnect(100)
			}
		}
	}()
	// Connect in parallel, a few at a time.
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, 32)
	)
	for i, d := range cfg.Devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			c, err := loadConnect(cfg, d)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%w: %s: connect: %w", ErrLoad, d.Signer.DID(), err))
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.Connect = time.Since(t0)

	var published, acked atomic.Uint64
	perDevice := 0.0
	if cfg.Rate > 0 {
		perDevice = cfg.Rate / float64(len(cfg.Devices))
	}
	start := time.Now()
	errc := make(chan error, len(cfg.Devices))
	for i, d := range cfg.Devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- loadSend(ctx, cfg, clients[i], d, perDevice, start, &published, &acked)
		}()
	}
	wg.Wait()
	close(errc)
	res.Elapsed = time.Since(start)
	res.Published, res.Acked = published.Load(), acked.Load()
	for err := range errc {
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

func loadConnect(cfg LoadConfig, d LoadDevice) (mqtt.Client, error) {
	did := string(d.Signer.DID())
	opts := mqtt.NewClientOptions().
		AddBroker(cfg.Broker).
		SetClientID(did).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetOrderMatters(true).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetWriteTimeout(10 * time.Second).
		SetMessageChannelDepth(uint(cfg.Window) + 10).
		SetCredentialsProvider(func() (string, string) {
			var pw string
			if d.Token != "" {
				pw, _ = EnrollPassword(d.Signer, d.Token, d.Kind, d.Site, cfg.Now())
			} else {
				pw, _ = ConnectPassword(d.Signer, cfg.Now())
			}
			return did, pw
		})
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(cfg.ConnectTimeout + time.Second) {
		c.Disconnect(0)
		return nil, errors.New("timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

func loadSend(ctx context.Context, cfg LoadConfig, c mqtt.Client, d LoadDevice, rate float64, start time.Time, published, acked *atomic.Uint64) error {
	topic := UpTopic(d.Signer.DID())
	window := make([]mqtt.Token, 0, cfg.Window)
	waitHead := func() error {
		tok := window[0]
		window = window[1:]
		if !tok.WaitTimeout(cfg.AckTimeout) {
			return fmt.Errorf("%w: %s: no PUBACK within %s", ErrLoad, d.Signer.DID(), cfg.AckTimeout)
		}
		if err := tok.Error(); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrLoad, d.Signer.DID(), err)
		}
		acked.Add(1)
		return nil
	}
	for i, env := range d.Envelopes {
		if err := ctx.Err(); err != nil {
			return err
		}
		if rate > 0 {
			due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if err := sleep(ctx, time.Until(due)); err != nil {
				return err
			}
		}
		if len(window) == cfg.Window {
			if err := waitHead(); err != nil {
				return err
			}
		}
		window = append(window, c.Publish(topic, 1, false, env))
		published.Add(1)
	}
	for len(window) > 0 {
		if err := waitHead(); err != nil {
			return err
		}
	}
	return nil
}
