package broker

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeanchor/edgeanchor/device/refusal"
)

// device/refusal names its MQTT 5 codes as bytes (it imports nothing); they
// are mochi's codes of the same meaning.
func TestRefusalCodesAreMQTTCodes(t *testing.T) {
	for _, tc := range []struct {
		got  byte
		want packets.Code
	}{
		{refusal.CodeUnspecified, packets.ErrUnspecifiedError},
		{refusal.CodeImplementationSpecific, packets.ErrImplementationSpecificError},
		{refusal.CodeNotAuthorized, packets.ErrNotAuthorized},
		{refusal.CodeServerBusy, packets.ErrServerBusy},
		{refusal.CodeQuotaExceeded, packets.ErrQuotaExceeded},
		{refusal.CodePayloadFormatInvalid, packets.ErrPayloadFormatInvalid},
		{refusal.CodeConnectionRateExceeded, packets.ErrConnectionRateExceeded},
	} {
		if tc.got != tc.want.Code {
			t.Errorf("refusal code %#x, mochi's %q is %#x", tc.got, tc.want.Reason, tc.want.Code)
		}
	}
}
