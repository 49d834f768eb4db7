package benchkit

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// A minimal MQTT 3.1.1 publisher for the load generator: CONNECT, QoS 1
// PUBLISH frames encoded before the clock starts, PUBACKs read back. A full
// client library (paho) costs the generator more CPU than the broker under
// test spends on plain publishes, and the generator shares the machine's two
// cores with the gateway. The tests use real paho clients; this is only the
// benchmark's traffic source.

// RawConn is one raw MQTT 3.1.1 connection of the load generator.
type RawConn struct {
	C net.Conn
	r *bufio.Reader
}

func appendLen(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// RawConnect opens a clean MQTT 3.1.1 session (keep-alive 120 s, longer than
// any run keeps a device silent) and waits for
// CONNACK.
func RawConnect(addr, id, user, pass string, timeout time.Duration) (*RawConn, error) {
	return RawConnectFrom(nil, addr, id, user, pass, timeout)
}

// RawConnectFrom is RawConnect from the local address local (nil: the
// kernel's choice). Benchmarks with more connections than one source
// address has ephemeral ports spread them over 127.0.0.0/8.
func RawConnectFrom(local *net.TCPAddr, addr, id, user, pass string, timeout time.Duration) (*RawConn, error) {
	d := net.Dialer{Timeout: timeout}
	if local != nil {
		d.LocalAddr = local
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	var vh []byte
	vh = appendStr(vh, "MQTT")
	vh = append(vh, 4, 0xC2, 0, 120) // level 4; username, password, clean session; keep-alive 120 s
	vh = appendStr(vh, id)
	vh = appendStr(vh, user)
	vh = appendStr(vh, pass)
	pkt := appendLen([]byte{0x10}, len(vh))
	pkt = append(pkt, vh...)
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(pkt); err != nil {
		c.Close()
		return nil, err
	}
	rc := &RawConn{C: c, r: bufio.NewReaderSize(c, 4096)}
	typ, body, err := rc.read()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("read CONNACK: %w", err)
	}
	if typ != 2 || len(body) != 2 {
		c.Close()
		return nil, fmt.Errorf("want CONNACK, got packet type %d", typ)
	}
	if body[1] != 0 {
		c.Close()
		return nil, fmt.Errorf("CONNACK return code %d", body[1])
	}
	_ = c.SetDeadline(time.Time{})
	return rc, nil
}

// read returns the next packet's type and body.
func (rc *RawConn) read() (byte, []byte, error) {
	h, err := rc.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		b, err := rc.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
		mul *= 128
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(rc.r, body); err != nil {
		return 0, nil, err
	}
	return h >> 4, body, nil
}

// ReadPuback returns the packet id of the next PUBACK.
func (rc *RawConn) ReadPuback() (uint16, error) {
	for {
		typ, body, err := rc.read()
		if err != nil {
			return 0, err
		}
		if typ == 4 && len(body) == 2 {
			return binary.BigEndian.Uint16(body), nil
		}
		if typ == 14 {
			return 0, errors.New("server sent DISCONNECT")
		}
	}
}

// Close sends DISCONNECT and closes the connection.
func (rc *RawConn) Close() {
	_, _ = rc.C.Write([]byte{0xE0, 0})
	_ = rc.C.Close()
}

// PublishFrame encodes a QoS 1 PUBLISH of payload on topic with packet id.
func PublishFrame(topic string, id uint16, payload []byte) []byte {
	n := 2 + len(topic) + 2 + len(payload)
	b := make([]byte, 0, 5+n)
	b = appendLen(append(b, 0x32), n)
	b = appendStr(b, topic)
	b = binary.BigEndian.AppendUint16(b, id)
	return append(b, payload...)
}

// PacketID is the id of a device's k-th publish (0-based): 1..65535, cycling.
func PacketID(k int) uint16 { return uint16(k%65535) + 1 }

// WaitIdle waits until deadline for the server to close the connection:
// it returns nil at the deadline, and an error when the connection was lost
// or the server sent DISCONNECT. Other packets that arrive meanwhile (none
// is expected by an idle publisher) are read and dropped. An idle device
// notices a gateway that went away at once instead of at its next publish.
func (rc *RawConn) WaitIdle(deadline time.Time) error {
	for {
		if err := rc.C.SetReadDeadline(deadline); err != nil {
			return err
		}
		_, err := rc.r.Peek(1)
		if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		if err != nil {
			return err
		}
		// A packet: read it whole (it may straddle the deadline).
		if err := rc.C.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			return err
		}
		typ, _, err := rc.read()
		if err != nil {
			return err
		}
		if typ == 14 {
			return errors.New("server sent DISCONNECT")
		}
	}
}
