package broker

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
	"github.com/edgeanchor/edgeanchor/device/refusal"
)

// session is what the broker knows of one connected client.
type session struct {
	device   bool
	dev      DeviceInfo // devices
	up       string
	receipt  string
	account  *Account // applications
	refusals atomic.Int32
	counted  atomic.Bool  // counted in devices_connected
	state    atomic.Int32 // sessionAdmitted → sessionLive (OnDisconnect will follow) or sessionAbandoned
	acks     *ackQueue    // QoS 1 publishes awaiting their write, in order (devices)
	ids      packetIDs    // the client's packet identifiers moved out of the server's way
}

func (b *Broker) session(cl *mqtt.Client) *session {
	v, ok := b.sessions.Load(cl)
	if !ok {
		return nil
	}
	return v.(*session)
}

// kick disconnects a client: MQTT 5 clients get a DISCONNECT with "not
// authorized", MQTT 3.1.1 ones have their connection closed.
func (b *Broker) kick(cl *mqtt.Client) {
	if cl.Properties.ProtocolVersion == 5 {
		_ = b.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		return
	}
	cl.Stop(packets.ErrNotAuthorized)
}

// Session states: authenticated at CONNECT, then established, or abandoned
// by the sweep when its connection closed before that.
const (
	sessionAdmitted int32 = iota
	sessionLive
	sessionAbandoned
)

// hook is the mochi hook that does all of edgeanchor's broker work.
type hook struct {
	mqtt.HookBase
	b *Broker
}

func (h *hook) ID() string { return "edgeanchor" }

func (h *hook) Provides(x byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSessionEstablished,
		mqtt.OnDisconnect, mqtt.OnPublish, mqtt.OnPublishDropped, mqtt.OnPacketRead, mqtt.OnPacketEncode,
	}, []byte{x})
}

// OnConnect authenticates the client. It runs here rather than in
// OnConnectAuthenticate so that the refusal is CONNACK "not authorized"
// (v5 0x87, v3 return code 5) as docs/protocol.md promises; mochi would
// answer "bad username or password".
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	b := h.b
	// A will is published without any check: a device could forge records
	// with one. Nobody here needs wills, so they are dropped.
	cl.Properties.Will = mqtt.Will{}
	if err := b.admitConnect(cl); err != nil {
		return err
	}
	s, err := b.authenticate(cl, pk)
	if errors.Is(err, errClosing) {
		return err // not the device's fault: no refusal counted
	}
	if err != nil {
		reason := refusal.Malformed
		var ae *AuthError
		if errors.As(err, &ae) {
			reason = ae.Reason
		}
		b.metrics.AuthFailures.WithLabelValues(reason).Inc()
		b.authFailed(cl)
		b.log.Info("connect refused", "client", cl.ID, "remote", cl.Net.Remote, "listener", cl.Net.Listener,
			"reason", reason, "error", err)
		b.refuseConnect(cl, packets.ErrNotAuthorized, connectRefusalString(err))
		return err
	}
	b.sessions.Store(cl, s)
	b.awaitCleanup(cl)
	return nil
}

// cleanupWait bounds how long a connect waits for the cleanup of the
// previous session with the same client ID (normally microseconds).
const cleanupWait = 2 * time.Second

// awaitCleanup makes an authenticated connect wait until the previous
// clean session with the same client ID has been cleaned up. mochi (v2.7.9
// attachClient) cleans a clean session up after it ends, by client ID: it
// checks "taken over", then unsubscribes and deletes the ID from its client
// list. A device whose new connection was added in between (it reconnected
// while the old one was ending, or took over a connection that was ending
// by itself) lost its new connection from the list: no receipt reached it
// for the whole session. So a previous connection still open is taken over
// here, as mochi would a moment later (inheritClientSession), and a clean
// one is waited for until its cleanup is done; a persistent session is
// left to mochi's takeover, which keeps it.
func (b *Broker) awaitCleanup(cl *mqtt.Client) {
	old, ok := b.srv.Clients.Get(cl.ID)
	if !ok || old == cl {
		return
	}
	if !old.Closed() {
		_ = b.srv.DisconnectClient(old, packets.ErrSessionTakenOver)
	}
	// Read once old is closed, and only these fields: mochi's last writes
	// to them (a v5 DISCONNECT's session expiry) happen before it closes;
	// it still writes others (the will) after.
	v, expiry, clean := old.Properties.ProtocolVersion, old.Properties.Props.SessionExpiryInterval, old.Properties.Clean
	if !(v == 5 && expiry == 0) && !(v < 5 && clean) {
		return // a persistent session is kept, not deleted: nothing to wait for
	}
	deadline := time.Now().Add(cleanupWait)
	for time.Now().Before(deadline) {
		if cur, ok := b.srv.Clients.Get(cl.ID); !ok || cur != old {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.log.Warn("previous session not cleaned up in time; connecting anyway", "client", cl.ID)
}

// OnConnectAuthenticate admits exactly the clients OnConnect authenticated.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	return h.b.session(cl) != nil
}

func (h *hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	b := h.b
	s := b.session(cl)
	if s == nil {
		return
	}
	// The sweep abandons an admitted session whose connection closed before
	// it was established; one of the two wins, so a session is either
	// abandoned before it gets its acknowledger or closed by OnDisconnect.
	if !s.state.CompareAndSwap(sessionAdmitted, sessionLive) {
		return
	}
	if b.ctx.Err() != nil {
		// Admitted while the broker closes: mochi closed the clients it
		// listed before this one was listed, and its Close waits for
		// this connection to end. End it.
		_ = b.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
	}
	b.metrics.Connects.Inc()
	if s.device && s.counted.CompareAndSwap(false, true) {
		b.metrics.DevicesConnected.Inc()
	}
	if s.device && s.acks == nil {
		// Called on the client's own goroutine before it reads any packet;
		// its acknowledger runs while publishes wait (ackqueue.go).
		s.acks = newAckQueue()
	}
	if s.device {
		b.log.Debug("device connected", "did", s.dev.DID, "remote", cl.Net.Remote, "listener", cl.Net.Listener,
			"protocol", cl.Properties.ProtocolVersion)
	} else {
		b.log.Info("application connected", "username", s.account.Username, "remote", cl.Net.Remote)
	}
}

func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	b := h.b
	v, ok := b.sessions.LoadAndDelete(cl)
	if !ok {
		return
	}
	s := v.(*session)
	if s.counted.CompareAndSwap(true, false) {
		b.metrics.DevicesConnected.Dec()
	}
	if errors.Is(err, packets.ErrPacketTooLarge) {
		b.tooLarge(cl, s)
	}
}

func (b *Broker) authenticate(cl *mqtt.Client, pk packets.Packet) (*session, error) {
	user := string(pk.Connect.Username)
	pw := string(pk.Connect.Password)
	if !strings.HasPrefix(user, device.DIDPrefix) {
		return b.authenticateAccount(user, pw)
	}
	did, err := device.ParseDID(user)
	if err != nil {
		return nil, authErr(refusal.Malformed, "username: %v", err)
	}
	if cl.ID != user {
		return nil, authErr(refusal.ClientIDMismatch, "client id %q is not the username", cl.ID)
	}
	var info DeviceInfo
	if strings.HasPrefix(pw, credential.EnrollPrefix) {
		info, err = b.enroll(cl, did, pw)
	} else {
		info, err = b.checkCredential(did, pw)
	}
	if err != nil {
		return nil, err
	}
	return &session{device: true, dev: info, up: UpTopic(did), receipt: ReceiptTopic(did)}, nil
}

func (b *Broker) checkCredential(did device.DID, pw string) (DeviceInfo, error) {
	cred, err := credential.ParseConnect(pw)
	if err != nil {
		return DeviceInfo{}, authErr(refusal.Malformed, "credential: %v", err)
	}
	info, ok := b.reg().Lookup(did)
	if !ok || info.Pub == nil {
		return info, authErr(refusal.UnknownDevice, "not registered")
	}
	if info.Site != b.opts.Site {
		return info, authErr(refusal.UnknownDevice, "registered for site %q", info.Site)
	}
	if info.Revoked {
		return info, authErr(refusal.Revoked, "revoked on the ledger")
	}
	now := b.opts.Now()
	if d := now.Sub(time.Unix(cred.Unix, 0)); d > b.opts.CredentialWindow || d < -b.opts.CredentialWindow {
		return info, staleCredential(cred.Unix, now, b.opts.CredentialWindow)
	}
	var valid bool
	if err := b.onWorker(func() {
		valid = device.VerifySignature(info.Pub, credential.ConnectMessage(did, cred.Unix, cred.Nonce), cred.Sig)
	}); err != nil {
		return info, err // the broker stops
	}
	if !valid {
		return info, authErr(refusal.BadSignature, "credential signature does not verify")
	}
	if !b.nonces.use(did, cred.Nonce, now, b.opts.CredentialWindow) {
		return info, authErr(refusal.Replayed, "nonce already used")
	}
	return info, nil
}

func (b *Broker) enroll(cl *mqtt.Client, did device.DID, pw string) (DeviceInfo, error) {
	b.mu.RLock()
	enroller := b.enroller
	b.mu.RUnlock()
	if enroller == nil {
		b.metrics.Enrollments.WithLabelValues(refusal.EnrollmentDisabled).Inc()
		return DeviceInfo{}, authErr(refusal.EnrollmentDisabled, "this gateway does not enroll devices")
	}
	info, err := enroller(b.ctx, EnrollRequest{DID: did, Password: pw, Remote: cl.Net.Remote})
	if err != nil {
		var ae *AuthError
		if !errors.As(err, &ae) {
			ae = &AuthError{Reason: refusal.EnrollError, Err: err}
		}
		b.metrics.Enrollments.WithLabelValues(ae.Reason).Inc()
		return DeviceInfo{}, ae
	}
	if info.DID != did || info.Pub == nil || info.Site != b.opts.Site {
		b.metrics.Enrollments.WithLabelValues(refusal.EnrollError).Inc()
		return DeviceInfo{}, authErr(refusal.EnrollError, "enroller returned device %s of site %q", info.DID, info.Site)
	}
	b.metrics.Enrollments.WithLabelValues("ok").Inc()
	b.log.Info("device enrolled", "did", did, "kind", info.Kind, "remote", cl.Net.Remote)
	return info, nil
}

func (b *Broker) authenticateAccount(user, pw string) (*session, error) {
	a, ok := b.accounts[user]
	if !ok {
		return nil, authErr(refusal.UnknownAccount, "no account %q", user)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(a.PasswordHash), []byte(pw)); err != nil {
		return nil, authErr(refusal.BadPassword, "account %q", user)
	}
	return &session{account: a}, nil
}

// OnACLCheck: a device publishes only to its up topic and reads only its
// receipt topic; an application reads only within its patterns and never
// publishes. Inline (gateway) publishes are not checked by mochi.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	b := h.b
	s := b.session(cl)
	if s == nil {
		return !write && b.offlineRead(cl, topic)
	}
	if s.device {
		if write {
			if topic == s.up {
				return true
			}
			b.metrics.Received.Inc()
			b.metrics.Refused.WithLabelValues(refusal.ForeignTopic, "").Inc()
			b.log.Info("publish refused", "did", s.dev.DID, "reason", refusal.ForeignTopic, "topic", topic)
			return false
		}
		return topic == s.receipt
	}
	if write {
		b.metrics.Refused.WithLabelValues(refusal.ForeignTopic, "").Inc()
		b.log.Info("publish refused", "username", s.account.Username, "reason", refusal.ForeignTopic, "topic", topic)
		return false
	}
	for _, p := range s.account.Topics {
		if filterWithin(topic, p) {
			return true
		}
	}
	return false
}

// pendingAck is one QoS 1 publish of a device waiting for its outcome, in
// the order the publishes arrived.
type pendingAck struct {
	packetID uint16
	start    time.Time
	wait     func() (Accepted, error) // nil when refused before the write
	ref      *Refusal
}

// ackWindow is how many QoS 1 publishes of one device may wait for their
// durable write at once; a device that sends more is simply not read until
// the oldest is answered (TCP back-pressure).
const ackWindow = 64

// OnPublish runs in the publishing client's goroutine before mochi would
// write the PUBACK/PUBREC (server.go processPublish). The checks and the
// signature verification run here, on the client's goroutine (so on all
// cores); the durable write is queued, and:
//
//   - QoS 1: the publish is handed to the session's acknowledger, which
//     waits for the writes in arrival order and only then writes each
//     PUBACK itself; mochi is told to do nothing (ErrRejectPacket). So one
//     device can have several records in the group commit at once, and a
//     PUBACK still never precedes the fsync of its record.
//   - QoS 0 and 2: OnPublish waits for the write itself and mochi sends the
//     PUBREC after it returns; QoS 2's PUBREL/PUBCOMP stay mochi's.
//
// The device's own publish is never delivered to subscribers.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	b := h.b
	s := b.session(cl)
	if s == nil || !s.device {
		return pk, packets.ErrRejectPacket
	}
	start := time.Now()
	b.metrics.Received.Inc()
	if pk.FixedHeader.Qos == 1 {
		pk.PacketID = s.ids.publish(pk.PacketID) // the client's own (conformance.go)
	}
	wait, ref := b.begin(s, pk)
	if pk.FixedHeader.Qos == 1 && s.acks != nil {
		b.pushAck(cl, s, pendingAck{packetID: pk.PacketID, start: start, wait: wait, ref: ref})
		return pk, packets.ErrRejectPacket
	}
	var acc Accepted
	if ref == nil {
		acc, ref = b.finish(wait)
	}
	if ref != nil {
		b.refuse(cl, s, pk.FixedHeader.Qos, pk.PacketID, ref)
		return pk, packets.ErrRejectPacket
	}
	b.accepted(s, acc, start)
	pk.Ignore = true // acknowledged by mochi, delivered to nobody
	return pk, nil
}

func (b *Broker) accepted(s *session, acc Accepted, start time.Time) {
	if acc.Duplicate {
		b.metrics.Duplicates.Inc()
		b.deliver(ReceiptTopic(s.dev.DID), acc.Receipt, b.metrics.ReceiptsDropped)
		return
	}
	b.metrics.Accepted.WithLabelValues(acc.Kind).Inc()
	b.metrics.IngestLatency.Observe(time.Since(start).Seconds())
	b.deliver(ReceiptTopic(s.dev.DID), acc.Receipt, b.metrics.ReceiptsDropped)
	b.deliver(RecordsTopic(b.opts.Site, acc.Kind), acc.Record, b.metrics.RepublishDropped)
}

// begin runs the broker's checks and the Ingester up to the queued write.
// On success it holds one in-flight slot, released by finish.
func (b *Broker) begin(s *session, pk packets.Packet) (func() (Accepted, error), *Refusal) {
	if pk.TopicName != s.up { // the ACL already refuses this; belt and braces
		return nil, &Refusal{Reason: refusal.ForeignTopic}
	}
	dev := s.dev
	if info, ok := b.reg().Lookup(dev.DID); ok {
		dev = info
	}
	if dev.Revoked {
		return nil, &Refusal{Reason: refusal.Revoked}
	}
	if dev.Pub == nil {
		return nil, &Refusal{Reason: refusal.UnknownDevice, Err: errors.New("registry holds no key")}
	}
	if !b.limiter.allow(dev.DID, time.Now()) {
		return nil, &Refusal{Reason: refusal.RateLimited}
	}
	if len(pk.Payload) > b.opts.MaxPayload {
		return nil, &Refusal{Reason: refusal.TooLarge, Err: errors.New("payload over limits.max_payload")}
	}
	n := b.inflight.Add(1)
	if b.opts.MaxInFlight > 0 && n > int64(b.opts.MaxInFlight) {
		b.inflight.Add(-1)
		return nil, &Refusal{Reason: refusal.InFlightExceeded}
	}
	b.metrics.InFlight.Set(float64(n))
	wait, err := b.opts.Ingester.Ingest(b.ctx, dev, pk.Payload)
	if err != nil {
		b.inflight.Add(-1)
		return nil, asRefusal(err)
	}
	return wait, nil
}

// finish waits for a queued write and releases its in-flight slot.
func (b *Broker) finish(wait func() (Accepted, error)) (Accepted, *Refusal) {
	defer b.inflight.Add(-1)
	acc, err := wait()
	if err != nil {
		return Accepted{}, asRefusal(err)
	}
	return acc, nil
}

func asRefusal(err error) *Refusal {
	var ref *Refusal
	if !errors.As(err, &ref) {
		ref = &Refusal{Reason: refusal.StoreError, Err: err}
	}
	return ref
}

// refuse counts and logs a refused publish and answers it: MQTT 5 gets a
// PUBACK (QoS 1) or PUBREC (QoS 2) with the reason code and the reason as
// reason string; an MQTT 3.1.1 client is disconnected at the configured
// number of refusals.
func (b *Broker) refuse(cl *mqtt.Client, s *session, qos byte, packetID uint16, ref *Refusal) {
	b.metrics.Refused.WithLabelValues(ref.Reason, ref.Kind).Inc()
	level := slogInfo
	if ref.Reason == refusal.RateLimited || ref.Reason == refusal.InFlightExceeded {
		level = slogDebug
	}
	if ref.Reason == refusal.DiskFull { // the store logs the state once
		level = slogDebug
	}
	b.log.Log(b.ctx, level, "publish refused", "did", s.dev.DID, "reason", ref.Reason, "kind", ref.Kind,
		"error", ref.Err)
	if cl.Properties.ProtocolVersion == 5 {
		if qos > 0 {
			ackType := packets.Puback
			if qos == 2 {
				ackType = packets.Pubrec // mochi would answer a QoS 2 refusal with a PUBACK
			}
			_ = cl.WritePacket(packets.Packet{
				FixedHeader: packets.FixedHeader{Type: ackType},
				PacketID:    packetID,
				ReasonCode:  refusal.Code(refusal.Publish, ref.Reason),
				Properties:  packets.Properties{ReasonString: ref.Reason},
			})
		}
		return
	}
	if int(s.refusals.Add(1)) >= b.opts.V3RefusalsBeforeDisconnect {
		if !cl.Closed() {
			b.metrics.V3Disconnects.Inc()
			b.log.Info("device disconnected", "did", s.dev.DID, "reason", "v3_refusals", "refusals", s.refusals.Load())
		}
		cl.Stop(packets.ErrNotAuthorized)
	}
}

// deliver publishes from the gateway, best effort. mochi drops a QoS 1
// message to a subscriber whose unacknowledged queue is full (Capabilities.
// MaximumInflight, 8,192 by default) without telling any hook, so those
// drops are counted here beforehand; drops for a full outbound buffer come
// through OnPublishDropped.
func (b *Broker) deliver(topic string, build func() []byte, dropped interface{ Add(float64) }) {
	if build == nil {
		return
	}
	subs := b.srv.Topics.Subscribers(topic)
	if len(subs.Subscriptions) == 0 && len(subs.Shared) == 0 && len(subs.InlineSubscriptions) == 0 {
		return // nobody listens: do not even build the message
	}
	payload := build()
	if payload == nil {
		return
	}
	limit := int(b.srv.Options.Capabilities.MaximumInflight)
	for id, sub := range subs.Subscriptions {
		if sub.Qos == 0 {
			continue
		}
		if cl, ok := b.srv.Clients.Get(id); ok && cl.State.Inflight.Len() >= limit {
			dropped.Add(1)
		}
	}
	if err := b.srv.Publish(topic, payload, false, 1); err != nil {
		dropped.Add(1)
		b.log.Warn("gateway publish failed", "topic", topic, "error", err)
	}
}

// OnPublishDropped counts gateway messages mochi could not queue for a slow
// client.
func (h *hook) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	switch {
	case strings.HasPrefix(pk.TopicName, sitePrefix):
		h.b.metrics.RepublishDropped.Inc()
	case strings.HasSuffix(pk.TopicName, "/receipt"):
		h.b.metrics.ReceiptsDropped.Inc()
	}
}

// rateLimiter is a token bucket per device DID.
type rateLimiter struct {
	rate, burst float64
	buckets     sync.Map // device.DID -> *bucket
}

type bucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst)}
}

func (l *rateLimiter) allow(did device.DID, now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	v, ok := l.buckets.Load(did)
	if !ok {
		v, _ = l.buckets.LoadOrStore(did, &bucket{tokens: l.burst, last: now})
	}
	bk := v.(*bucket)
	bk.mu.Lock()
	defer bk.mu.Unlock()
	bk.tokens = min(l.burst, bk.tokens+now.Sub(bk.last).Seconds()*l.rate)
	bk.last = now
	if bk.tokens < 1 {
		return false
	}
	bk.tokens--
	return true
}

const (
	slogInfo  = slog.LevelInfo
	slogDebug = slog.LevelDebug
)
