package broker

import (
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeanchor/edgeanchor/device"
)

// Where mochi v2.7.9 departs from MQTT, and how the hook puts it right:
//
//   - It writes a DISCONNECT packet (e0 00) to MQTT 3.1.1 clients it cuts
//     off (a publish outside the ACL, a session takeover, shutdown); 3.1.1
//     has no server DISCONNECT and clients report a protocol error.
//     OnPacketEncode drops the packet, so the connection is just closed.
//   - It keeps the client's and the server's packet identifiers in one map
//     (Client.State.Inflight), while MQTT 5 §2.2.1 (3.1.1 §2.3.1) makes them
//     independent: a SUBSCRIBE or UNSUBSCRIBE whose identifier equals one
//     of the server's unacknowledged deliveries is refused with 0x91
//     "packet identifier in use", and an inbound QoS 1 PUBLISH with such an
//     identifier deletes that delivery (it is never resent). OnPacketRead
//     gives such a packet a free identifier for mochi's processing and the
//     client gets its own identifier back in the SUBACK, UNSUBACK (via
//     OnPacketEncode) or PUBACK (written by the hook itself). Inbound QoS 2
//     keeps mochi's behaviour: its PUBREL and PUBCOMP are mochi's own
//     (mochi-mqtt/server#545 reports the QoS 2 half).
//   - Its MQTT 5 CONNACK does not carry the Maximum Packet Size the broker
//     enforces (Capabilities.MaximumPacketSize); OnPacketEncode adds it.
//   - A closed connection has no session here, but a persistent session's
//     subscriptions stay with mochi, which asks OnACLCheck before queueing a
//     message for it (offlineRead).

// packetIDs moves a client's packet identifier out of the way of the
// server's own. Both slots are set by OnPacketRead and consumed on the
// client's goroutine before its next packet is read; the mutex is for the
// race detector's peace and for OnPacketEncode, which other goroutines call.
type packetIDs struct {
	mu  sync.Mutex
	sub idSwap // the SUBSCRIBE or UNSUBSCRIBE being processed
	pub idSwap // the QoS 1 PUBLISH being processed
}

// idSwap: mochi sees id, the client sent orig; zero when nothing is moved.
type idSwap struct{ id, orig uint16 }

func (p *packetIDs) set(slot *idSwap, v idSwap) {
	p.mu.Lock()
	*slot = v
	p.mu.Unlock()
}

// take returns the client's identifier for id and clears the slot if it
// holds id; else id itself.
func (p *packetIDs) take(slot *idSwap, id uint16) uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if slot.id == 0 || slot.id != id {
		return id
	}
	orig := slot.orig
	*slot = idSwap{}
	return orig
}

// publish is the client's identifier of the QoS 1 publish mochi passes to
// OnPublish with id.
func (p *packetIDs) publish(id uint16) uint16 { return p.take(&p.pub, id) }

// freeID is an identifier the server does not use for cl, searched from
// the top (mochi allocates its own from the bottom), or 0.
func freeID(cl *mqtt.Client) uint16 {
	for id := uint16(65535); id > 0; id-- {
		if _, used := cl.State.Inflight.Get(id); !used {
			return id
		}
	}
	return 0
}

// OnPacketRead runs on the client's goroutine for every packet read, before
// mochi processes it.
func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	s := h.b.session(cl)
	if s == nil || cl.Net.Inline {
		return pk, nil
	}
	var slot *idSwap
	switch pk.FixedHeader.Type {
	case packets.Subscribe, packets.Unsubscribe:
		slot = &s.ids.sub
	case packets.Publish:
		// Only a QoS 1 publish on the device's own up topic reaches
		// OnPublish, which answers it with the client's identifier.
		if !s.device || pk.FixedHeader.Qos != 1 || pk.TopicName != s.up {
			return pk, nil
		}
		slot = &s.ids.pub
	default:
		return pk, nil
	}
	swap := idSwap{}
	if _, used := cl.State.Inflight.Get(pk.PacketID); used && pk.PacketID != 0 {
		if id := freeID(cl); id != 0 {
			swap = idSwap{id: id, orig: pk.PacketID}
			pk.PacketID = id
		}
	}
	s.ids.set(slot, swap)
	return pk, nil
}

// OnPacketEncode runs before mochi encodes any packet to a client.
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Disconnect:
		if cl.Properties.ProtocolVersion < 5 {
			// A packet type that does not encode: WritePacket fails and
			// writes nothing, and mochi closes the connection as it
			// meant to (DisconnectClient ignores the write's error).
			pk.FixedHeader.Type = packets.Reserved
		}
	case packets.Connack:
		if cl.Properties.ProtocolVersion == 5 && pk.ReasonCode < packets.ErrUnspecifiedError.Code {
			pk.Properties.MaximumPacketSize = h.b.srv.Options.Capabilities.MaximumPacketSize
		}
	case packets.Suback, packets.Unsuback:
		if s := h.b.session(cl); s != nil {
			pk.PacketID = s.ids.take(&s.ids.sub, pk.PacketID)
		}
	}
	return pk
}

// offlineRead is the read ACL of a closed connection, whose session was
// removed at disconnect: mochi asks it before queueing a message for a
// persistent session (an anchor notice for a device that went away after
// its PUBACK). It was authenticated when it connected, so the answer
// follows from its username alone.
func (b *Broker) offlineRead(cl *mqtt.Client, topic string) bool {
	if !cl.Closed() {
		return false
	}
	user := string(cl.Properties.Username)
	if strings.HasPrefix(user, device.DIDPrefix) {
		return cl.ID == user && topic == ReceiptTopic(device.DID(user))
	}
	a, ok := b.accounts[user]
	if !ok {
		return false
	}
	for _, p := range a.Topics {
		if filterWithin(topic, p) {
			return true
		}
	}
	return false
}

// tooLarge logs and counts a connection mochi cut because a packet was over
// the Maximum Packet Size (ReadFixedHeader refuses it before reading it).
func (b *Broker) tooLarge(cl *mqtt.Client, s *session) {
	b.metrics.PacketsTooLarge.Inc()
	who := "username"
	name := string(cl.Properties.Username)
	if s.device {
		who, name = "did", string(s.dev.DID)
	}
	b.log.Warn("connection closed: packet too large", who, name, "remote", cl.Net.Remote,
		"max_packet_size", b.srv.Options.Capabilities.MaximumPacketSize)
}
