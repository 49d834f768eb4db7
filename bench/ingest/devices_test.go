package ingest

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
)

// fleet is a set of device keys with pre-signed envelopes.
type fleet struct {
	signers []*device.KeySigner
	envs    [][][]byte
}

// newFleet makes n device keys and msgs signed env.dust envelopes per device
// (seq 1..msgs), on all cores, before any clock starts.
func newFleet(tb testing.TB, n, msgs int) *fleet {
	tb.Helper()
	f := &fleet{signers: make([]*device.KeySigner, n), envs: make([][][]byte, n)}
	data := map[string]any{"pm25_ugm3": 12.5, "pm10_ugm3": 30, "noise_dba": 55}
	ts := time.Now()
	var wg sync.WaitGroup
	work := make(chan int)
	errs := make(chan error, runtime.NumCPU())
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				priv, err := device.GenerateKey()
				if err != nil {
					errs <- err
					return
				}
				s := device.NewKeySigner(priv)
				f.signers[i] = s
				envs := make([][]byte, msgs)
				for k := range envs {
					body, err := device.NewBody(s.DID(), uint64(k+1), ts, device.KindDust, data)
					if err != nil {
						errs <- err
						return
					}
					if envs[k], err = device.Seal(s, body); err != nil {
						errs <- err
						return
					}
				}
				f.envs[i] = envs
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	return f
}

// gatewayDevices is the fleet as devices of the gateway under test: the
// connect credential is made fresh at each connect.
func (f *fleet) gatewayDevices(limit int) []*loadDevice {
	out := make([]*loadDevice, len(f.signers))
	for i, s := range f.signers {
		out[i] = &loadDevice{
			id: string(s.DID()), user: string(s.DID()), topic: broker.UpTopic(s.DID()),
			pass: func() (string, error) { return credential.MakeConnect(s, time.Now()) },
			envs: f.envs[i][:min(limit, len(f.envs[i]))],
		}
	}
	return out
}

// mochiDevices is the same load for the plain broker: same client IDs,
// topics and payloads; the password is ignored.
func (f *fleet) mochiDevices(limit int) []*loadDevice {
	out := f.gatewayDevices(limit)
	for _, d := range out {
		d.pass = func() (string, error) { return "x", nil }
	}
	return out
}
