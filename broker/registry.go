package broker

import (
	"crypto/ecdsa"
	"sync"

	"github.com/edgeanchor/edgeanchor/device"
)

// DeviceInfo is what the gateway knows of a registered device. Pub is parsed
// once per device and kept: the SM2 library caches per key pointer, so the
// same pointer must be handed out for every lookup of a device.
type DeviceInfo struct {
	DID     device.DID
	Pub     *ecdsa.PublicKey
	Kind    string // device kind: payroll, survey, env
	Site    string
	Revoked bool
}

// Registry answers who a device is. Lookup is called at every CONNECT and
// every publish, from many goroutines at once: it must be safe for
// concurrent use, fast (no I/O), and must return the same Pub pointer for a
// device every time. The ledger-following identity cache implements it in
// production; StaticRegistry serves tests and fixed deployments.
type Registry interface {
	Lookup(did device.DID) (DeviceInfo, bool)
}

// StaticRegistry is an in-memory Registry filled by its owner (tests, or a
// config-driven deployment without a ledger).
type StaticRegistry struct {
	mu sync.RWMutex
	m  map[device.DID]DeviceInfo
}

var _ Registry = (*StaticRegistry)(nil)

// NewStaticRegistry returns a registry holding devs.
func NewStaticRegistry(devs ...DeviceInfo) *StaticRegistry {
	r := &StaticRegistry{m: make(map[device.DID]DeviceInfo, len(devs))}
	for _, d := range devs {
		r.m[d.DID] = d
	}
	return r
}

// Put adds or replaces a device.
func (r *StaticRegistry) Put(d DeviceInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[d.DID] = d
}

// Revoke marks a device revoked; it reports whether the device was known.
func (r *StaticRegistry) Revoke(did device.DID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.m[did]
	if ok {
		d.Revoked = true
		r.m[did] = d
	}
	return ok
}

// Lookup implements Registry.
func (r *StaticRegistry) Lookup(did device.DID) (DeviceInfo, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, ok := r.m[did]
	return d, ok
}
