package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
	"github.com/edgeanchor/edgeanchor/device/refusal"
	"github.com/edgeanchor/edgeanchor/sim/profile"
)

// LoadDevice is one device of a load run: its signer, its kind and site,
// and the token to enroll with (empty if it is already registered).
type LoadDevice struct {
	Signer device.Signer
	Kind   string
	Site   string
	Token  string
	// Envelopes are the pre-signed messages to publish, in order.
	Envelopes [][]byte
}

// LoadConfig describes a load run.
type LoadConfig struct {
	Broker  string
	Devices []LoadDevice
	// Rate is the total publish rate over all devices in messages/s; 0
	// publishes as fast as the windows allow.
	Rate float64
	// Window is how many unacknowledged QoS 1 publishes a device may have
	// (default 16).
	Window int
	// ConnectTimeout bounds each connection (and enrollment); default 30 s.
	ConnectTimeout time.Duration
	// AckTimeout bounds the wait for each PUBACK; default 30 s.
	AckTimeout time.Duration
	Now        func() time.Time // wall clock for credentials (default time.Now)
	// Progress, if set, is updated during the run.
	Progress *LoadProgress
}

// LoadProgress counts a load run as it goes; read it from another goroutine
// for progress lines.
type LoadProgress struct {
	Published atomic.Uint64 // publishes sent
	Acked     atomic.Uint64 // PUBACKs with success
	Refused   atomic.Uint64 // PUBACKs with a refusal reason code
}

// LoadResult reports a load run.
type LoadResult struct {
	Published uint64        // publishes written
	Acked     uint64        // PUBACKs received
	Elapsed   time.Duration // first connect done to last PUBACK
	Connect   time.Duration // time to connect (and enroll) every device
}

// Rate is acknowledged messages per second.
func (r LoadResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Acked) / r.Elapsed.Seconds()
}

// ErrLoad means a load run did not get every message acknowledged; the
// error says which device and why.
var ErrLoad = errors.New("sim: load run incomplete")

// sealReadings signs the next n readings of gen as envelopes of signer
// with sequence numbers first, first+1, …: the messages of a load run,
// signed before its clock starts.
func sealReadings(signer device.Signer, gen profile.Generator, first uint64, n int) ([][]byte, error) {
	out := make([][]byte, n)
	for i := range n {
		r := gen.Next()
		body, err := device.NewBody(signer.DID(), first+uint64(i), r.At, r.Kind, r.Data)
		if err != nil {
			return nil, err
		}
		if out[i], err = device.Seal(signer, body); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Load connects every device (enrolling those with a token), then publishes
// each device's envelopes in order at cfg.Rate in total, with at most
// cfg.Window unacknowledged per device, and waits for every PUBACK. It
// returns when all are acknowledged, on the first error, or when ctx ends.
func Load(ctx context.Context, cfg LoadConfig) (LoadResult, error) {
	if cfg.Window <= 0 {
		cfg.Window = 16
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Devices) == 0 {
		return LoadResult{}, fmt.Errorf("%w: no devices", ErrConfig)
	}
	var res LoadResult
	t0 := time.Now()
	if cfg.Progress == nil {
		cfg.Progress = &LoadProgress{}
	}
	prog := cfg.Progress
	published0, acked0 := prog.Published.Load(), prog.Acked.Load()
	clients := make([]*loadClient, len(cfg.Devices))
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.close()
			}
		}
	}()
	// Connect in parallel, a few at a time.
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, 32)
	)
	for i, d := range cfg.Devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			c, err := loadConnect(cfg, d)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%w: %s: connect: %w", ErrLoad, d.Signer.DID(), err))
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.Connect = time.Since(t0)

	perDevice := 0.0
	if cfg.Rate > 0 {
		perDevice = cfg.Rate / float64(len(cfg.Devices))
	}
	start := time.Now()
	errc := make(chan error, len(cfg.Devices))
	for i, d := range cfg.Devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- loadSend(ctx, cfg, clients[i], d, perDevice, start, prog)
		}()
	}
	wg.Wait()
	close(errc)
	res.Elapsed = time.Since(start)
	res.Published, res.Acked = prog.Published.Load()-published0, prog.Acked.Load()-acked0
	for err := range errc {
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

// loadClient is one device's MQTT 5 connection in a load run. MQTT 5, so
// that a refused publish comes back as a PUBACK with the gateway's reason
// code and reason string (docs/protocol.md, "Refusals"), where MQTT 3.1.1
// only loses the connection.
type loadClient struct {
	c    *paho.Client
	sess *ackSession
	lost chan struct{} // closed when the connection ends
	mu   sync.Mutex
	why  string // the server's DISCONNECT or the connection error
}

func (l *loadClient) close() {
	_ = l.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	_ = l.sess.Close()
}

func (l *loadClient) connLost(why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.why == "" {
		l.why = why
		close(l.lost)
	}
}

// lostReason says why the connection ended.
func (l *loadClient) lostReason() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.why
}

// ackSession is paho's in-memory session that hands each PUBLISH's
// acknowledgement to the channel set by expect, so that one goroutine can
// send a device's publishes in order (paho's asynchronous send) and still
// read each PUBACK's reason code.
type ackSession struct {
	session.SessionManager
	mu   sync.Mutex
	next chan<- packets.ControlPacket
}

func (s *ackSession) expect(ch chan<- packets.ControlPacket) {
	s.mu.Lock()
	s.next = ch
	s.mu.Unlock()
}

func (s *ackSession) AddToSession(ctx context.Context, p session.Packet, resp chan<- packets.ControlPacket) error {
	if p.Type() == packets.PUBLISH {
		s.mu.Lock()
		if s.next != nil {
			resp, s.next = s.next, nil
		}
		s.mu.Unlock()
	}
	return s.SessionManager.AddToSession(ctx, p, resp)
}

// printable quotes a string that came from the gateway, for an error
// message, when it holds anything but printable ASCII.
func printable(s string) string {
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			return strconv.Quote(s)
		}
	}
	return s
}

// refusalNote is what device/refusal's table says of the reason a
// refusing CONNACK or PUBACK gave (its reason string, up to a ':', with its
// code) at one of stages: "; {meaning}", with "(the same may be sent again
// later)" for a reason the device may retry, or "" for a reason or code the
// table does not hold.
func refusalNote(code byte, reasonString string, stages ...refusal.Stage) string {
	name, _, _ := strings.Cut(reasonString, ":")
	for _, s := range stages {
		r, ok := refusal.Lookup(s, name)
		if !ok || r.Code != code {
			continue
		}
		if r.Retry {
			return "; " + r.Meaning + " (the same may be sent again later)"
		}
		return "; " + r.Meaning
	}
	return ""
}

func reasonString(p *packets.Properties) string {
	if p == nil {
		return ""
	}
	return p.ReasonString
}

func loadConnect(cfg LoadConfig, d LoadDevice) (*loadClient, error) {
	did := string(d.Signer.DID())
	addr := strings.TrimPrefix(cfg.Broker, "tcp://")
	if strings.Contains(addr, "://") {
		return nil, fmt.Errorf("%w: load mode speaks MQTT 5 over tcp:// only, not %s", ErrConfig, cfg.Broker)
	}
	conn, err := net.DialTimeout("tcp", addr, cfg.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	l := &loadClient{sess: &ackSession{SessionManager: state.NewInMemory()}, lost: make(chan struct{})}
	l.c = paho.NewClient(paho.ClientConfig{
		Conn: packets.NewThreadSafeConn(conn), Session: l.sess, PacketTimeout: cfg.AckTimeout,
		OnServerDisconnect: func(dp *paho.Disconnect) {
			why := fmt.Sprintf("the gateway disconnected it (reason code 0x%02x", dp.ReasonCode)
			if dp.Properties != nil && dp.Properties.ReasonString != "" {
				why += ": " + printable(dp.Properties.ReasonString)
			}
			l.connLost(why + ")")
		},
		OnClientError: func(err error) { l.connLost("connection lost: " + err.Error()) },
	})
	var pw string
	if d.Token != "" {
		pw, err = credential.MakeEnroll(d.Signer, d.Token, d.Kind, d.Site, cfg.Now())
	} else {
		pw, err = credential.MakeConnect(d.Signer, cfg.Now())
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ConnectTimeout+time.Second)
	defer cancel()
	ca, err := l.c.Connect(ctx, &paho.Connect{ClientID: did, Username: did, UsernameFlag: true,
		Password: []byte(pw), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
	if err != nil {
		_ = conn.Close()
		_ = l.sess.Close()
		if ca != nil && ca.ReasonCode >= 0x80 {
			msg := fmt.Sprintf("refused by the gateway (CONNACK reason code 0x%02x", ca.ReasonCode)
			if ca.Properties != nil && ca.Properties.ReasonString != "" {
				msg += ": " + printable(ca.Properties.ReasonString)
			}
			stage := refusal.Connect
			if d.Token != "" {
				stage = refusal.Enroll
			}
			var rs string
			if ca.Properties != nil {
				rs = ca.Properties.ReasonString
			}
			return nil, errors.New(msg + ")" + refusalNote(ca.ReasonCode, rs, refusal.Admit, stage))
		}
		return nil, err
	}
	return l, nil
}

// pending is one publish awaiting its PUBACK.
type pending struct {
	index int
	ack   chan packets.ControlPacket
}

func loadSend(ctx context.Context, cfg LoadConfig, l *loadClient, d LoadDevice, rate float64, start time.Time, prog *LoadProgress) error {
	topic := UpTopic(d.Signer.DID())
	window := make([]pending, 0, cfg.Window)
	timer := time.NewTimer(cfg.AckTimeout)
	defer timer.Stop()
	waitHead := func() error {
		p := window[0]
		window = window[1:]
		timer.Reset(cfg.AckTimeout)
		var resp packets.ControlPacket
		select {
		case resp = <-p.ack:
		case <-l.lost:
			// An acknowledgement that arrived before the end still counts.
			select {
			case resp = <-p.ack:
			default:
				return fmt.Errorf("%w: %s: message %d of %d not acknowledged: %s", ErrLoad, d.Signer.DID(), p.index+1, len(d.Envelopes), l.lostReason())
			}
		case <-timer.C:
			return fmt.Errorf("%w: %s: no PUBACK within %s for message %d of %d", ErrLoad, d.Signer.DID(), cfg.AckTimeout, p.index+1, len(d.Envelopes))
		case <-ctx.Done():
			return ctx.Err()
		}
		ack, ok := resp.Content.(*packets.Puback)
		if resp.Type != packets.PUBACK || !ok {
			return fmt.Errorf("%w: %s: message %d of %d not acknowledged (%s)", ErrLoad, d.Signer.DID(), p.index+1, len(d.Envelopes), l.lostReason())
		}
		if ack.ReasonCode >= 0x80 {
			prog.Refused.Add(1)
			reason := "no reason string"
			if ack.Properties != nil && ack.Properties.ReasonString != "" {
				reason = printable(ack.Properties.ReasonString)
			}
			return fmt.Errorf("%w: %s: message %d of %d refused by the gateway: %s (PUBACK reason code 0x%02x)%s",
				ErrLoad, d.Signer.DID(), p.index+1, len(d.Envelopes), reason, ack.ReasonCode, refusalNote(ack.ReasonCode, reasonString(ack.Properties), refusal.Publish))
		}
		prog.Acked.Add(1)
		return nil
	}
	for i, env := range d.Envelopes {
		if err := ctx.Err(); err != nil {
			return err
		}
		if rate > 0 {
			due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if err := sleep(ctx, time.Until(due)); err != nil {
				return err
			}
		}
		if len(window) == cfg.Window {
			if err := waitHead(); err != nil {
				return err
			}
		}
		p := pending{index: i, ack: make(chan packets.ControlPacket, 1)}
		l.sess.expect(p.ack)
		if _, err := l.c.PublishWithOptions(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: env},
			paho.PublishOptions{Method: paho.PublishMethod_AsyncSend}); err != nil {
			l.sess.expect(nil)
			if why := l.lostReason(); why != "" {
				err = errors.New(why)
			}
			return fmt.Errorf("%w: %s: publish message %d of %d: %w", ErrLoad, d.Signer.DID(), i+1, len(d.Envelopes), err)
		}
		window = append(window, p)
		prog.Published.Add(1)
	}
	for len(window) > 0 {
		if err := waitHead(); err != nil {
			return err
		}
	}
	return nil
}
