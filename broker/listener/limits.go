package listener

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/edgeanchor/edgeanchor/device/refusal"
)

// Scopes of a throttled CONNECT: the values of the connect_throttled_total
// "scope" label. The "limit" label says which budget ran out: attempts
// (connections opened) or auth_failures (CONNECTs refused by authentication).
const (
	ScopeSource = "source"
	ScopeGlobal = "global"

	LimitAttempts     = "attempts"
	LimitAuthFailures = "auth_failures"
)

// RateLimit is a token bucket: Rate tokens per second, up to Burst. A zero
// Rate turns the limit off.
type RateLimit struct {
	Rate  float64
	Burst int
}

// tokenBucket is one bucket; the caller holds the lock that guards it.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

func (t *tokenBucket) refill(l RateLimit, now time.Time) {
	if d := now.Sub(t.last); d > 0 {
		t.tokens = min(float64(l.Burst), t.tokens+d.Seconds()*l.Rate)
	}
	t.last = now
}

// maxSources bounds the per-source buckets kept at once; past it (after a
// sweep of the idle ones) new sources share one bucket, so a flood from
// very many addresses costs bounded memory.
const maxSources = 100_000

// overflowSource is the bucket shared by sources beyond maxSources.
const overflowSource = "*"

// sourceLimiter keeps a token bucket per source address and one global
// bucket. The per-source bucket is always consulted first, so one source
// can take at most its own budget out of the global one: a flood from one
// address cannot exhaust the global budget that other addresses need.
type sourceLimiter struct {
	source, global RateLimit

	mu        sync.Mutex
	all       tokenBucket
	sources   map[string]*tokenBucket
	lastSweep time.Time
}

func newSourceLimiter(source, global RateLimit, now time.Time) *sourceLimiter {
	return &sourceLimiter{source: source, global: global, sources: map[string]*tokenBucket{},
		all: tokenBucket{tokens: float64(global.Burst), last: now}, lastSweep: now}
}

// bucket returns src's bucket refilled to now; create says whether a
// missing one is made (a missing bucket is a full one). Caller holds mu.
func (l *sourceLimiter) bucket(src string, now time.Time, create bool) *tokenBucket {
	// Sweep now and then, and at most once a second while the map is full
	// (a sweep walks every bucket).
	if since := now.Sub(l.lastSweep); since > 30*time.Second || len(l.sources) >= maxSources && since > time.Second {
		l.sweep(now)
	}
	bk, ok := l.sources[src]
	if !ok {
		if !create {
			return nil
		}
		if len(l.sources) >= maxSources {
			src = overflowSource
			if bk, ok = l.sources[src]; ok {
				bk.refill(l.source, now)
				return bk
			}
		}
		bk = &tokenBucket{tokens: float64(l.source.Burst), last: now}
		l.sources[src] = bk
		return bk
	}
	bk.refill(l.source, now)
	return bk
}

// sweep forgets the buckets that have refilled: a full bucket is the same
// as none. Caller holds mu.
func (l *sourceLimiter) sweep(now time.Time) {
	for k, bk := range l.sources {
		bk.refill(l.source, now)
		if bk.tokens >= float64(l.source.Burst) {
			delete(l.sources, k)
		}
	}
	l.lastSweep = now
}

// take spends one token of src and one of the global budget. It returns ""
// when allowed, else the scope that ran out; a refusal spends nothing.
func (l *sourceLimiter) take(src string, now time.Time) string {
	if l == nil {
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var bk *tokenBucket
	if l.source.Rate > 0 {
		bk = l.bucket(src, now, true)
		if bk.tokens < 1 {
			return ScopeSource
		}
	}
	if l.global.Rate > 0 {
		l.all.refill(l.global, now)
		if l.all.tokens < 1 {
			return ScopeGlobal
		}
		l.all.tokens--
	}
	if bk != nil {
		bk.tokens--
	}
	return ""
}

// check tells whether src may try to authenticate, without spending: it is
// refused when its own failure budget is spent, or when the global one is
// and src has failed recently (a source without recent failures is never
// held back by the others' failures).
func (l *sourceLimiter) check(src string, now time.Time) string {
	if l == nil {
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var bk *tokenBucket
	if l.source.Rate > 0 {
		bk = l.bucket(src, now, false)
		if bk != nil && bk.tokens < 1 {
			return ScopeSource
		}
	}
	if l.global.Rate > 0 {
		l.all.refill(l.global, now)
		if l.all.tokens < 1 && bk != nil && bk.tokens < float64(l.source.Burst) {
			return ScopeGlobal
		}
	}
	return ""
}

// failed spends one token of src's failure budget and, only while src
// still had budget, one of the global one.
func (l *sourceLimiter) failed(src string, now time.Time) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.source.Rate > 0 {
		bk := l.bucket(src, now, true)
		if bk.tokens < 1 {
			return
		}
		bk.tokens--
	}
	if l.global.Rate > 0 {
		l.all.refill(l.global, now)
		l.all.tokens = max(0, l.all.tokens-1)
	}
}

// Admit decides, before a CONNECT is authenticated and without spending
// any work on its credential, whether it is refused: refusal.MaxConnections
// when its connection (conn, of client at remote) is over the connection
// limit, refusal.ConnectThrottled when its source's failed-authentication
// budget is spent; "" admits it. A refusal is counted and logged (sampled).
func (g *Guard) Admit(conn net.Conn, client, remote string, now time.Time) string {
	if tc := trackedOf(conn); tc != nil && tc.over {
		g.metrics.Refused.WithLabelValues(refusal.MaxConnections).Inc()
		g.sample.log(g.log, slog.LevelWarn, "refused/busy", "connect refused", now,
			"client", client, "remote", remote, "reason", refusal.MaxConnections, "limit", g.max)
		return refusal.MaxConnections
	}
	if scope := g.failures.check(sourceOfRemote(remote), now); scope != "" {
		g.metrics.Throttled.WithLabelValues(scope, LimitAuthFailures).Inc()
		g.sample.log(g.log, slog.LevelInfo, "throttle-auth/"+scope, "connect refused", now,
			"client", client, "remote", remote, "reason", refusal.ConnectThrottled, "scope", scope, "limit", LimitAuthFailures)
		return refusal.ConnectThrottled
	}
	return ""
}

// AuthFailed spends one token of the failed-authentication budget of the
// source of remote (mochi's "host:port").
func (g *Guard) AuthFailed(remote string, now time.Time) {
	g.failures.failed(sourceOfRemote(remote), now)
}

// sourceOf is the address a connection comes from, without its port.
func sourceOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// sourceOfRemote is sourceOf for mochi's cl.Net.Remote ("host:port").
func sourceOfRemote(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return remote
	}
	return host
}

// sampledLog logs one message at most once per interval, with the number
// of occurrences since the last line: a flood must not flood the log.
type sampledLog struct {
	interval time.Duration

	mu     sync.Mutex
	last   map[string]time.Time
	missed map[string]int
}

func newSampledLog(interval time.Duration) *sampledLog {
	return &sampledLog{interval: interval, last: map[string]time.Time{}, missed: map[string]int{}}
}

// log writes msg (keyed by key) unless it was written less than interval
// ago; the line carries "suppressed", the occurrences not logged since.
func (s *sampledLog) log(log *slog.Logger, level slog.Level, key, msg string, now time.Time, args ...any) {
	s.mu.Lock()
	if last, ok := s.last[key]; ok && now.Sub(last) < s.interval {
		s.missed[key]++
		s.mu.Unlock()
		return
	}
	if len(s.last) > 1024 {
		clear(s.last)
		clear(s.missed)
	}
	missed := s.missed[key]
	s.last[key] = now
	s.missed[key] = 0
	s.mu.Unlock()
	log.Log(context.Background(), level, msg, append(args, "suppressed", missed)...)
}
