package gateway

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/batch"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// BenchmarkIngestPipeline measures the ingest pipeline without MQTT:
// decode, schema, SM2 verify, sequence, receipt signing and the synced group
// commit, from 200 and 1,000 devices with 16 records in flight each (as the
// broker's acknowledger keeps them). Envelopes are signed before the clock
// starts. It runs on the same cores as the pipeline, like the gateway.
//
//	go test -run '^$' -bench IngestPipeline -benchtime 40000x -cpuprofile /tmp/ip.cpu ./gateway/
func BenchmarkIngestPipeline(b *testing.B) {
	for _, devices := range []int{200, 1000} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) { benchIngestPipeline(b, devices) })
	}
}

func benchIngestPipeline(b *testing.B, devices int) {
	const window = 16
	dir := b.TempDir()
	reg := prometheus.NewRegistry()
	st, err := store.Open(dir, store.Options{Signer: newSigner(b), Metrics: store.NewMetrics(reg, dir), Claims: batch.Claims()})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ing := NewIngest(st, DefaultConfig().Limits.MaxPayload)
	per := (b.N + devices - 1) / devices
	type dev struct {
		info broker.DeviceInfo
		envs [][]byte
	}
	devs := make([]dev, devices)
	data := sampleData(device.KindDust)
	for i := range devs {
		k := newSigner(b)
		devs[i].info = broker.DeviceInfo{DID: k.DID(), Pub: k.Public(), Kind: "env", Site: "site-a"}
		for seq := 1; seq <= per; seq++ {
			body, err := device.NewBody(k.DID(), uint64(seq), time.Now(), device.KindDust, data)
			if err != nil {
				b.Fatal(err)
			}
			env, err := device.Seal(k, body)
			if err != nil {
				b.Fatal(err)
			}
			devs[i].envs = append(devs[i].envs, env)
		}
	}
	ctx := context.Background()
	b.ResetTimer()
	var wg sync.WaitGroup
	for i := range devs {
		d := &devs[i]
		waits := make(chan func() (broker.Accepted, error), window)
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer close(waits)
			for _, env := range d.envs {
				w, err := ing.Ingest(ctx, d.info, env)
				if err != nil {
					b.Error(err)
					return
				}
				waits <- w
			}
		}()
		go func() {
			defer wg.Done()
			for w := range waits {
				if _, err := w(); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(devices*per)/b.Elapsed().Seconds(), "records/s")
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "edgeanchor_store_group_records" {
			h := mf.GetMetric()[0].GetHistogram()
			b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount()), "records/commit")
		}
		if mf.GetName() == "edgeanchor_store_write_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount())*1e3, "ms/commit")
		}
	}
}
