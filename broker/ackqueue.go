package broker

import (
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// ackQueue holds one device's QoS 1 publishes waiting for their durable
// write, in arrival order. They are answered by a goroutine that runs only
// while some are waiting: a quiet device (a reading every few seconds)
// costs no goroutine, stack or queue between its publishes. With a
// goroutine per connection for the life of the connection, the stacks of
// 10,000 connected devices came to ~100 MB (bench/devices).
type ackQueue struct {
	// slots holds a token per queued publish: a device with ackWindow
	// publishes waiting is not read further until the oldest is answered
	// (TCP back-pressure).
	slots chan struct{}

	mu      sync.Mutex
	q       []pendingAck
	running bool // an acknowledge goroutine is answering q
}

func newAckQueue() *ackQueue { return &ackQueue{slots: make(chan struct{}, ackWindow)} }

// pushAck queues a for the session's acknowledger and starts one if none
// runs. It is called on the client's own goroutine, so the publishes of one
// client are queued in the order they were read; it blocks while ackWindow
// publishes are waiting.
func (b *Broker) pushAck(cl *mqtt.Client, s *session, a pendingAck) {
	q := s.acks
	q.slots <- struct{}{}
	q.mu.Lock()
	q.q = append(q.q, a)
	start := !q.running
	q.running = true
	q.mu.Unlock()
	if start {
		// Before Close's Wait: mochi's Close returns only after every
		// client goroutine, the only callers, has ended.
		b.wg.Add(1)
		go b.acknowledge(cl, s, q)
	}
}

// acknowledge answers the queued publishes in arrival order and ends when
// the queue is empty; pushAck starts it again for the next publish.
func (b *Broker) acknowledge(cl *mqtt.Client, s *session, q *ackQueue) {
	defer b.wg.Done()
	for {
		q.mu.Lock()
		if len(q.q) == 0 {
			q.running = false
			q.q = nil
			q.mu.Unlock()
			return
		}
		a := q.q[0]
		q.q[0] = pendingAck{}
		q.q = q.q[1:]
		q.mu.Unlock()

		var acc Accepted
		ref := a.ref
		if ref == nil {
			acc, ref = b.finish(a.wait)
		}
		if ref != nil {
			b.refuse(cl, s, 1, a.packetID, ref)
		} else {
			_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: a.packetID})
			b.accepted(s, acc, a.start)
		}
		<-q.slots
	}
}
