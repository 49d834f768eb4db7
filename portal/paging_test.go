package portal

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

// testPagingCost: the Gateway page of a gateway with many batches costs
// the ledger as many requests as one with a few, on its first page and on
// a page deep in the chain (headers are fetched by seq, never listed). The
// requests are counted by a reverse proxy in front of the real node.
func testPagingCost(t *testing.T, e *env) {
	const long = 120
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for i := range long {
		tx, _ := e.lgw2.NextAnchor(t, 1)
		p, err := e.Client.Broadcast(ctx, tx)
		if err != nil {
			t.Fatalf("anchor %d: %v", i+1, err)
		}
		if i == long-1 {
			if _, err := p.Wait(ctx); err != nil {
				t.Fatalf("anchor %d: %v", i+1, err)
			}
		} else {
			p.Discard()
		}
	}
	target, err := url.Parse(e.Node.RPC)
	if err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int64
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	s := e.startPortal(t, func(c *Config) { c.LedgerRPC = proxy.URL; c.PageSize = 20 })
	cost := func(did, before string) (int64, time.Duration) {
		t.Helper()
		u := fmt.Sprintf("%s/gateway?did=%s", s.URL(), did)
		if before != "" {
			u += "&before=" + before
		}
		n0, t0 := requests.Load(), time.Now()
		body, err := testutil.HTTPGet(u)
		took := time.Since(t0)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(string(body), `class="sig ok"`) == 0 || strings.Contains(string(body), `class="sig bad"`) {
			t.Fatalf("%s: headers not all signed:\n%.3000s", u, body)
		}
		return requests.Load() - n0, took
	}
	short, tShort := cost(string(e.LGW.DID()), "")
	longFirst, tLong := cost(string(e.lgw2.DID()), "")
	longDeep, tDeep := cost(string(e.lgw2.DID()), "61")
	t.Logf("ledger requests for a Gateway page: 5 batches %d (%s), %d batches first page %d (%s), page at seq 60 %d (%s)",
		short, tShort, long, longFirst, tLong, longDeep, tDeep)
	if longFirst != longDeep || longFirst > 20+6 {
		t.Fatalf("%d batches: %d requests for the first page, %d deep: want the same, at most a page and a few", long, longFirst, longDeep)
	}
	if short > longFirst {
		t.Fatalf("5 batches cost %d requests, %d batches %d", short, long, longFirst)
	}
}
