package broker

import (
	"errors"
	"strings"

	"github.com/edgeanchor/edgeanchor/device"
)

// Topic namespace (docs/protocol.md).
const (
	Namespace  = "ea/v1"
	sitePrefix = Namespace + "/site/"
)

// UpTopic is where a device publishes its signed envelopes.
func UpTopic(did device.DID) string { return Namespace + "/dev/" + string(did) + "/up" }

// ReceiptTopic is where the gateway publishes a device's receipts.
func ReceiptTopic(did device.DID) string { return Namespace + "/dev/" + string(did) + "/receipt" }

// RecordsTopic is where verified records of one kind are republished.
func RecordsTopic(site, kind string) string { return sitePrefix + site + "/records/" + kind }

// ValidateAccountPattern checks an application account's topic pattern: a
// valid MQTT filter under ea/v1/site/.
func ValidateAccountPattern(p string) error {
	if !strings.HasPrefix(p, sitePrefix) || len(p) == len(sitePrefix) {
		return errors.New("pattern must lie under " + sitePrefix)
	}
	levels := strings.Split(p, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return errors.New("# must be the last level")
		case l != "#" && l != "+" && strings.ContainsAny(l, "#+"):
			return errors.New("wildcards must fill a whole level")
		}
	}
	return nil
}

// filterWithin reports whether every topic that filter f matches is also
// matched by pattern p (both MQTT filters; f may be a plain topic name).
func filterWithin(f, p string) bool {
	fl := strings.Split(f, "/")
	pl := strings.Split(p, "/")
	for i, pv := range pl {
		if pv == "#" {
			return true
		}
		if i >= len(fl) {
			return false
		}
		fv := fl[i]
		switch {
		case fv == "#":
			return false
		case pv == "+":
			// any single level, including f's own "+"
		case fv == "+":
			return false
		case fv != pv:
			return false
		}
	}
	return len(fl) == len(pl)
}
