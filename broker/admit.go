package broker

import (
	"errors"
	"fmt"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeanchor/edgeanchor/device/refusal"
)

// admitConnect runs before a CONNECT is authenticated: a connection over
// the connection limit is answered "server busy", one from a source whose
// failed-authentication budget is spent "connection rate exceeded" (MQTT
// 3.1.1: "server unavailable" for both), without spending any work on its
// credential.
func (b *Broker) admitConnect(cl *mqtt.Client) error {
	switch b.guard.Admit(cl.Net.Conn, cl.ID, cl.Net.Remote, time.Now()) {
	case refusal.MaxConnections:
		b.refuseConnect(cl, packets.ErrServerBusy, refusal.MaxConnections)
		return packets.ErrServerBusy
	case refusal.ConnectThrottled:
		b.refuseConnect(cl, packets.ErrConnectionRateExceeded, refusal.ConnectThrottled)
		return packets.ErrConnectionRateExceeded
	}
	return nil
}

// authFailed spends one token of the client's source's failed-
// authentication budget.
func (b *Broker) authFailed(cl *mqtt.Client) {
	b.guard.AuthFailed(cl.Net.Remote, time.Now())
}

// refuseConnect writes a refusing CONNACK. MQTT 5 gets code and the reason
// string; MQTT 3.1.1 the closest return code (not authorized, or server
// unavailable for the others).
func (b *Broker) refuseConnect(cl *mqtt.Client, code packets.Code, reason string) {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: code.Code}
	if cl.Properties.ProtocolVersion < 5 {
		pk.ReasonCode = packets.Err3ServerUnavailable.Code
		if code == packets.ErrNotAuthorized {
			pk.ReasonCode = packets.Err3NotAuthorized.Code
		}
	} else {
		pk.Properties = packets.Properties{ReasonString: reason}
	}
	_ = cl.WritePacket(pk)
}

// connectRefusalString is the MQTT 5 reason string of a refused CONNECT:
// the error's Hint where it has one, else mochi's "not authorized".
func connectRefusalString(err error) string {
	var ae *AuthError
	if errors.As(err, &ae) && ae.Hint != "" {
		return ae.Hint
	}
	return packets.ErrNotAuthorized.Reason
}

// staleCredential refuses a credential whose time is outside the window.
// The hint, sent to MQTT 5 clients as the CONNACK reason string, gives the
// gateway's time so that the device can tell its clock is off.
func staleCredential(unix int64, now time.Time, window time.Duration) *AuthError {
	ct := time.Unix(unix, 0)
	d := now.Sub(ct)
	return &AuthError{Reason: refusal.Stale,
		Err: fmt.Errorf("credential time is %s away from the gateway's clock (window %s)", d.Round(time.Second), window),
		Hint: fmt.Sprintf("stale: credential time %s is outside the window of %s around the gateway's time %s",
			ct.UTC().Format(time.RFC3339), window, now.UTC().Format(time.RFC3339))}
}
