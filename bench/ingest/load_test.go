package ingest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeanchor/edgeanchor/bench/internal/benchkit"
)

// loadDevice is one simulated device: how it connects and what it publishes.
type loadDevice struct {
	id    string
	user  string
	pass  func() (string, error) // fresh credential per connect
	topic string
	envs  [][]byte // pre-signed payloads, in order
}

// loadSpec is one run of the load generator.
type loadSpec struct {
	addr    string
	devices []*loadDevice
	window  int     // unacknowledged QoS 1 publishes per device
	rate    float64 // total offered msgs/s; 0 = as fast as the windows allow
	limit   time.Duration
}

// loadResult is what a run measured. Latencies are publish → PUBACK; in a
// fixed-rate run they start at the publish's scheduled time, so a stalled
// sender is not hidden (no coordinated omission).
type loadResult struct {
	Devices   int     `json:"devices"`
	Published int64   `json:"published"`
	Acked     int64   `json:"acked"`
	Failed    int64   `json:"failed"`
	Seconds   float64 `json:"seconds"`
	MsgsPerS  float64 `json:"acked_msgs_per_s"`
	OfferedPS float64 `json:"offered_msgs_per_s,omitempty"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	ConnectS  float64 `json:"connect_seconds"`
}

// connectAll connects every device (64 at a time).
func connectAll(ctx context.Context, spec loadSpec) ([]*benchkit.RawConn, error) {
	conns := make([]*benchkit.RawConn, len(spec.devices))
	sem := make(chan struct{}, 64)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for i, d := range spec.devices {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if ctx.Err() != nil {
				return
			}
			pw, err := d.pass()
			if err == nil {
				conns[i], err = benchkit.RawConnect(spec.addr, d.id, d.user, pw, 60*time.Second)
			}
			if err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("device %s: %w", d.id, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	if first != nil {
		closeAll(conns)
		return nil, first
	}
	return conns, nil
}

func closeAll(conns []*benchkit.RawConn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// runLoad connects the devices, then publishes every envelope of every
// device at QoS 1 with at most spec.window unacknowledged per device, and
// measures until the last PUBACK or spec.limit. The PUBLISH frames are
// encoded before the clock starts.
func runLoad(ctx context.Context, spec loadSpec) (loadResult, error) {
	ctx, cancel := context.WithTimeout(ctx, spec.limit)
	defer cancel()
	frames := make([][][]byte, len(spec.devices))
	for i, d := range spec.devices {
		frames[i] = make([][]byte, len(d.envs))
		for k, env := range d.envs {
			frames[i][k] = benchkit.PublishFrame(d.topic, benchkit.PacketID(k), env)
		}
	}
	t := time.Now()
	conns, err := connectAll(ctx, spec)
	if err != nil {
		return loadResult{}, err
	}
	defer closeAll(conns)
	res := loadResult{Devices: len(spec.devices), ConnectS: time.Since(t).Seconds(), OfferedPS: spec.rate}
	stop := context.AfterFunc(ctx, func() { closeAll(conns) })
	defer stop()

	var published, acked, failed atomic.Int64
	lats := make([][]time.Duration, len(spec.devices))
	n := len(spec.devices)
	start := time.Now().Add(50 * time.Millisecond)
	var wg sync.WaitGroup
	for i := range spec.devices {
		c, fr := conns[i], frames[i]
		var sent [64]atomic.Int64 // send time by packet id mod 64 (window < 64)
		sem := make(chan struct{}, spec.window)
		dead := make(chan struct{})
		wg.Add(2)
		go func() { // reader: PUBACKs
			defer wg.Done()
			defer close(dead)
			lat := make([]time.Duration, 0, len(fr))
			defer func() { lats[i] = lat }()
			for got := 0; got < len(fr); got++ {
				id, err := c.ReadPuback()
				if err != nil {
					return
				}
				lat = append(lat, time.Duration(time.Now().UnixNano()-sent[id%64].Load()))
				acked.Add(1)
				<-sem
			}
		}()
		go func() { // sender
			defer wg.Done()
			for k, f := range fr {
				t0 := time.Now()
				if spec.rate > 0 {
					t0 = start.Add(time.Duration(float64(k*n+i) / spec.rate * float64(time.Second)))
					if w := time.Until(t0); w > 0 {
						select {
						case <-time.After(w):
						case <-dead:
							return
						}
					}
				}
				select {
				case sem <- struct{}{}:
				case <-dead:
					return
				}
				if spec.rate == 0 {
					t0 = time.Now()
				}
				sent[benchkit.PacketID(k)%64].Store(t0.UnixNano())
				if _, err := c.C.Write(f); err != nil {
					return
				}
				published.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lats...)
	slices.Sort(all)
	res.Published, res.Acked = published.Load(), acked.Load()
	failed.Store(res.Published - res.Acked)
	res.Failed = failed.Load()
	res.Seconds = elapsed.Seconds()
	res.MsgsPerS = float64(res.Acked) / elapsed.Seconds()
	res.P50ms, res.P99ms, res.MaxMs = pct(all, 0.50), pct(all, 0.99), pct(all, 1)
	if res.Acked < int64(totalEnvs(spec)) {
		return res, fmt.Errorf("%d of %d publishes acknowledged (limit %s; %v)", res.Acked, totalEnvs(spec), spec.limit, ctx.Err())
	}
	return res, nil
}

func totalEnvs(spec loadSpec) int {
	n := 0
	for _, d := range spec.devices {
		n += len(d.envs)
	}
	return n
}

func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return float64(sorted[i].Microseconds()) / 1000
}
