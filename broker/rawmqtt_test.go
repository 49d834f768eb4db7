package broker

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// rawConn speaks MQTT byte by byte, to see exactly what the broker writes
// (a client library would hide a stray packet or renumber identifiers).
// Used only by tests.
type rawConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
	v byte // protocol level: 4 (3.1.1) or 5
}

// rawPacket is one packet as read: the first byte and the rest.
type rawPacket struct {
	header byte
	body   []byte
}

func (p rawPacket) kind() byte { return p.header >> 4 }

// id is the packet identifier of a PUBACK, SUBACK, UNSUBACK or QoS>0 PUBLISH.
func (p rawPacket) id() uint16 {
	if p.kind() == 3 {
		n := int(binary.BigEndian.Uint16(p.body))
		return binary.BigEndian.Uint16(p.body[2+n:])
	}
	return binary.BigEndian.Uint16(p.body)
}

// payload of a PUBLISH with QoS > 0.
func (p rawPacket) payload(v byte) []byte {
	n := int(binary.BigEndian.Uint16(p.body))
	rest := p.body[2+n+2:]
	if v == 5 {
		l, k := binary.Uvarint(rest)
		rest = rest[k+int(l):]
	}
	return rest
}

func mqttString(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

func packet(header byte, body []byte) []byte {
	out := []byte{header}
	n := len(body)
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

// rawConnect dials addr and sends CONNECT as did with password pw; clean
// false asks for a persistent session (MQTT 5: session expiry 300 s). It
// returns the connection and the CONNACK.
func rawConnect(t *testing.T, addr string, v byte, did, pw string, clean bool) (*rawConn, rawPacket) {
	t.Helper()
	rc := rawSendConnect(t, addr, v, did, pw, clean)
	ack, err := rc.read(10 * time.Second)
	if err != nil || ack.kind() != 2 {
		t.Fatalf("CONNACK: %+v %v", ack, err)
	}
	return rc, ack
}

// rawSendConnect dials addr and sends the CONNECT without waiting for the
// answer.
func rawSendConnect(t *testing.T, addr string, v byte, did, pw string, clean bool) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	flags := byte(0x80 | 0x40)
	if clean {
		flags |= 0x02
	}
	body := append(mqttString("MQTT"), v, flags, 0, 30)
	if v == 5 {
		if clean {
			body = append(body, 0)
		} else {
			body = append(body, 5, 0x11, 0, 0, 0x01, 0x2c) // session expiry interval 300
		}
	}
	body = append(body, mqttString(did)...)
	body = append(body, mqttString(did)...)
	body = append(body, mqttString(pw)...)
	rc := &rawConn{t: t, c: c, r: bufio.NewReader(c), v: v}
	rc.send(packet(0x10, body))
	return rc
}

func (rc *rawConn) send(b []byte) {
	rc.t.Helper()
	if _, err := rc.c.Write(b); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// read returns the next packet, or an error (io.EOF once the broker closed
// the connection).
func (rc *rawConn) read(within time.Duration) (rawPacket, error) {
	_ = rc.c.SetReadDeadline(time.Now().Add(within))
	h, err := rc.r.ReadByte()
	if err != nil {
		return rawPacket{}, err
	}
	n, shift := 0, 0
	for {
		b, err := rc.r.ReadByte()
		if err != nil {
			return rawPacket{}, err
		}
		n |= int(b&0x7f) << shift
		if b&0x80 == 0 {
			break
		}
		shift += 7
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(rc.r, body); err != nil {
		return rawPacket{}, err
	}
	return rawPacket{header: h, body: body}, nil
}

// untilClosed reads every packet until the broker closes the connection.
func (rc *rawConn) untilClosed(within time.Duration) ([]rawPacket, error) {
	var got []rawPacket
	deadline := time.Now().Add(within)
	for {
		p, err := rc.read(time.Until(deadline))
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
			return got, nil
		}
		if err != nil {
			return got, fmt.Errorf("connection still open after %s: %w", within, err)
		}
		got = append(got, p)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// publish1 sends a QoS 1 PUBLISH with identifier id.
func (rc *rawConn) publish1(topic string, id uint16, payload []byte) {
	body := append(mqttString(topic), byte(id>>8), byte(id))
	if rc.v == 5 {
		body = append(body, 0)
	}
	rc.send(packet(0x32, append(body, payload...)))
}

// subscribe1 sends a SUBSCRIBE for filter at QoS 1 with identifier id.
func (rc *rawConn) subscribe1(filter string, id uint16) {
	body := []byte{byte(id >> 8), byte(id)}
	if rc.v == 5 {
		body = append(body, 0)
	}
	rc.send(packet(0x82, append(append(body, mqttString(filter)...), 1)))
}

// expect reads packets until one of kind (and identifier, if id > 0)
// arrives, returning it and the packets read before it.
func (rc *rawConn) expect(kind byte, id uint16) (rawPacket, []rawPacket) {
	rc.t.Helper()
	var before []rawPacket
	for {
		p, err := rc.read(10 * time.Second)
		if err != nil {
			rc.t.Fatalf("waiting for packet type %d id %d (after %d others): %v", kind, id, len(before), err)
		}
		if p.kind() == kind && (id == 0 || p.id() == id) {
			return p, before
		}
		before = append(before, p)
	}
}

// subackCodes are the reason codes of a SUBACK.
func (p rawPacket) subackCodes(v byte) []byte {
	rest := p.body[2:]
	if v == 5 {
		l, k := binary.Uvarint(rest)
		rest = rest[k+int(l):]
	}
	return rest
}
