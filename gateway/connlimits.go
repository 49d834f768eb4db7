package gateway

import (
	"fmt"

	"github.com/edgeanchor/edgeanchor/broker/listener"
)

// validateConnectLimits checks the connect and failed-authentication rate
// limits: rates not negative, a burst of at least 1 for each rate set, and
// a global bucket larger than a source's (rate and burst), so that one
// source cannot spend the whole global budget.
func (l *LimitsConfig) validateConnectLimits() error {
	type pair struct {
		name  string
		rate  float64
		burst int
	}
	for _, g := range [][2]pair{
		{{"connect_source", l.ConnectSourceRate, l.ConnectSourceBurst}, {"connect", l.ConnectRate, l.ConnectBurst}},
		{{"auth_failure_source", l.AuthFailureSourceRate, l.AuthFailureSourceBurst}, {"auth_failure", l.AuthFailureRate, l.AuthFailureBurst}},
	} {
		for _, p := range g {
			if p.rate < 0 {
				return fmt.Errorf("limits.%s_rate (%g) cannot be negative", p.name, p.rate)
			}
			if p.rate > 0 && (p.burst < 1 || p.burst > 1<<20) {
				return fmt.Errorf("limits.%s_burst (%d) must be within [1, 1048576] when %s_rate is set", p.name, p.burst, p.name)
			}
		}
		src, all := g[0], g[1]
		if src.rate > 0 && all.rate > 0 && (all.rate <= src.rate || all.burst <= src.burst) {
			return fmt.Errorf("limits.%s_rate and _burst (%g, %d) must be greater than limits.%s_rate and _burst (%g, %d): one source must not be able to spend the global budget",
				all.name, all.rate, all.burst, src.name, src.rate, src.burst)
		}
	}
	return nil
}

// connectLimits converts the limits for broker.Options.
func (l *LimitsConfig) connectLimits() (perSource, global, failPerSource, failGlobal listener.RateLimit) {
	return listener.RateLimit{Rate: l.ConnectSourceRate, Burst: l.ConnectSourceBurst},
		listener.RateLimit{Rate: l.ConnectRate, Burst: l.ConnectBurst},
		listener.RateLimit{Rate: l.AuthFailureSourceRate, Burst: l.AuthFailureSourceBurst},
		listener.RateLimit{Rate: l.AuthFailureRate, Burst: l.AuthFailureBurst}
}
