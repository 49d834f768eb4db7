// Package ledgerclient is the online client of the consortium ledger: it
// talks to a ledger node's CometBFT RPC to submit transactions and wait for
// their commits, follow blocks, query the application's records, build the
// AnchorProof of a committed tx and export a trust file. What it fetches is
// checked offline with package anchor/evidence, which imports neither this package
// nor the RPC client.
package ledgerclient

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	ctypes "github.com/cometbft/cometbft/rpc/core/types"
	rpctypes "github.com/cometbft/cometbft/rpc/jsonrpc/types"
	"github.com/cometbft/cometbft/types"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

// Errors of the ledger client. Test with errors.Is; a refusal is a
// *RefusedError (errors.As).
var (
	// ErrUnreachable means the ledger's RPC did not answer (connection
	// refused, timeout, HTTP failure), or could not take a tx for a reason
	// other than a refusal (mempool full, node stopping), after the client's
	// bounded retries. Nothing is known about the tx: keep it and submit the
	// same bytes again later (a resubmission of a committed tx returns its
	// commit).
	ErrUnreachable = errors.New("ledgerclient: ledger unreachable")
	// ErrCommitTimeout means the ledger took the tx into its mempool but did
	// not commit it within ClientOptions.CommitTimeout. Submit the same bytes
	// again later.
	ErrCommitTimeout = errors.New("ledgerclient: tx not committed in time")
	// ErrNotFound means a query found no such device, gateway or batch.
	ErrNotFound = errors.New("ledgerclient: not found on the ledger")
	// ErrClosed means the client was closed.
	ErrClosed = errors.New("ledgerclient: client closed")
)

// RefusedError is the ledger's refusal of a tx: CheckTx (Stage "check") or
// FinalizeBlock (Stage "deliver") answered a non-zero code. Resubmitting the
// same bytes will not help.
type RefusedError struct {
	Stage  string // "check" or "deliver"
	Code   uint32
	Log    string
	TxHash string // lowercase hex
	Height int64  // block height for Stage "deliver"
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("ledgerclient: ledger refused tx at %s: code %d: %s", e.Stage, e.Code, e.Log)
}

// TxCommit says where a tx committed: its block height, its index in
// the block and the result code the application gave it.
type TxCommit struct {
	Height int64  `json:"height"`
	TxHash string `json:"tx"` // CometBFT tx hash (SHA-256 of the tx bytes), lowercase hex
	Index  uint32 `json:"index"`
	Code   uint32 `json:"code"`
	Log    string `json:"log,omitempty"`
}

// ClientOptions tune a Client. Zero values take the defaults shown.
type ClientOptions struct {
	// RequestTimeout bounds one RPC request (5 s).
	RequestTimeout time.Duration
	// Retries is how many times an unreachable RPC is retried before
	// ErrUnreachable (4); only unreachability is retried, never a refusal.
	Retries int
	// Backoff is the first retry delay, doubled each retry (200 ms).
	Backoff time.Duration
	// PollInterval is how often the block follower asks for a new height
	// (50 ms).
	PollInterval time.Duration
	// CommitTimeout bounds the wait for a tx accepted by CheckTx to commit
	// (30 s).
	CommitTimeout time.Duration
	// RecheckInterval is how often a tx still waiting to commit is broadcast
	// again, to learn whether the mempool dropped it (5 s: longer than a
	// commit takes under load, so that it costs nothing normally).
	RecheckInterval time.Duration
	// Logger receives debug and warning logs (discarded if nil).
	Logger *slog.Logger
	// Follower, if set, is a client of another node of the same chain whose
	// block follower resolves this client's commits, so that a process
	// talking to several validators polls blocks from one of them only.
	// Close this client before the Follower.
	Follower *Client
}

func (o *ClientOptions) defaults() {
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 5 * time.Second
	}
	if o.Retries <= 0 {
		o.Retries = 4
	}
	if o.Backoff <= 0 {
		o.Backoff = 200 * time.Millisecond
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 50 * time.Millisecond
	}
	if o.CommitTimeout <= 0 {
		o.CommitTimeout = 30 * time.Second
	}
	if o.RecheckInterval <= 0 {
		o.RecheckInterval = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Client talks to a ledger node's CometBFT RPC. It is safe for concurrent
// use; many Submits share one block follower that resolves their commits.
// Close it when done.
type Client struct {
	rpc  *rpchttp.HTTP
	http *http.Client
	base string // "http://host:port": plain GETs of the block follower
	opts ClientOptions
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	waiters   map[string][]chan TxCommit // tx hash (raw bytes as string) -> waiters
	following bool
	closed    bool
	lastErr   error // last follower error, nil when healthy
}

// NewClient returns a client of the node whose RPC listens at rpcURL
// ("http://127.0.0.1:26657" or "tcp://…").
func NewClient(rpcURL string, opts ClientOptions) (*Client, error) {
	opts.defaults()
	u, err := url.Parse(rpcURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("ledgerclient: ledger rpc url %q: want http://host:port", rpcURL)
	}
	hc := &http.Client{
		Timeout: opts.RequestTimeout,
		Transport: &http.Transport{
			DisableCompression:  true,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     30 * time.Second,
			DialContext:         (&net.Dialer{Timeout: opts.RequestTimeout}).DialContext,
		},
	}
	rc, err := rpchttp.NewWithClient(rpcURL, "/websocket", hc)
	if err != nil {
		return nil, fmt.Errorf("ledgerclient: ledger rpc client: %w", err)
	}
	scheme := u.Scheme
	if scheme != "https" {
		scheme = "http" // tcp:// as CometBFT writes it
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{
		rpc: rc, http: hc, base: scheme + "://" + u.Host + strings.TrimSuffix(u.Path, "/"), opts: opts, log: opts.Logger,
		ctx: ctx, cancel: cancel, waiters: map[string][]chan TxCommit{},
	}, nil
}

// Close stops the block follower and releases connections. Pending Submits
// return ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true // no follower starts after this
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.closeIdle()
	return nil
}

// isUnreachable reports whether err means the RPC did not answer, as
// opposed to answering with an error.
func isUnreachable(err error) bool {
	if err == nil {
		return false
	}
	var rpcErr *rpctypes.RPCError
	if errors.As(err, &rpcErr) {
		return false
	}
	var ue *url.Error
	var ne net.Error
	return errors.Is(err, ErrUnreachable) || errors.As(err, &ue) || errors.As(err, &ne) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		strings.Contains(err.Error(), "post failed") ||
		strings.Contains(err.Error(), "Failed to read response body") ||
		strings.Contains(err.Error(), "error unmarshalling") // a proxy's HTML page
}

// call runs f, retrying with doubling backoff while the RPC is unreachable.
func (c *Client) call(ctx context.Context, what string, f func(context.Context) error) error {
	return c.callRetry(ctx, what, isUnreachable, f)
}

// callRetry runs f, retrying with doubling backoff (at most Retries times)
// while retryable(err); it then returns an error wrapping ErrUnreachable.
// Connections are dropped before a retry, so that a node restarted on the
// same address is dialled afresh.
func (c *Client) callRetry(ctx context.Context, what string, retryable func(error) bool, f func(context.Context) error) error {
	delay := c.opts.Backoff
	var err error
	for attempt := 0; ; attempt++ {
		err = f(ctx)
		if err == nil || !retryable(err) {
			return err
		}
		c.closeIdle()
		if attempt >= c.opts.Retries {
			break
		}
		c.log.Debug("ledger rpc unavailable, retrying", "call", what, "attempt", attempt+1, "error", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s: %v (%v)", ErrUnreachable, what, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay *= 2
	}
	return fmt.Errorf("%w: %s: %v", ErrUnreachable, what, err)
}

func (c *Client) closeIdle() {
	if t, ok := c.http.Transport.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
}

// broadcastRetryable: besides an unreachable RPC, a broadcast answered by
// an RPC error other than "already in cache" (mempool full, node stopping,
// internal error) says nothing about the tx: the same bytes may be sent
// again later.
func broadcastRetryable(err error) bool {
	if isUnreachable(err) {
		return true
	}
	var rpcErr *rpctypes.RPCError
	return errors.As(err, &rpcErr) && !strings.Contains(rpcErr.Data, "already exists in cache")
}

func rpcErrorData(err error) string {
	var rpcErr *rpctypes.RPCError
	if errors.As(err, &rpcErr) {
		return rpcErr.Data + " " + rpcErr.Message
	}
	return ""
}

// Submit sends tx with broadcast_tx_sync and waits until it commits. It
// returns the TxCommit of a tx that committed with code 0, a *RefusedError
// when CheckTx or FinalizeBlock refused it, an error wrapping ErrUnreachable
// when the RPC does not answer after bounded retries, or ErrCommitTimeout.
// Submitting bytes that already committed returns their TxCommit (or their
// refusal), so a caller that lost an answer can simply submit again.
func (c *Client) Submit(ctx context.Context, tx []byte) (TxCommit, error) {
	p, err := c.Broadcast(ctx, tx)
	if err != nil {
		return TxCommit{}, err
	}
	return p.Wait(ctx)
}

// PendingTx is a tx that passed CheckTx (or had already committed). Call Wait
// exactly once, or Discard.
type PendingTx struct {
	c    *Client
	tx   []byte
	hash []byte
	ch   chan TxCommit
	seen bool // the node had the bytes already ("in cache")
	done bool
	r    TxCommit
	err  error
}

// TxHash is the tx's CometBFT hash, lowercase hex.
func (p *PendingTx) TxHash() string { return hex.EncodeToString(p.hash) }

// Broadcast sends tx with broadcast_tx_sync and returns once CheckTx
// accepted it, so that a caller can send a gateway's next header (which
// CheckTx checks against this one) before this one commits. Errors are
// those of Submit.
func (c *Client) Broadcast(ctx context.Context, tx []byte) (*PendingTx, error) {
	hash := types.Tx(tx).Hash()
	ch, err := c.follower().addWaiter(ctx, hash)
	if err != nil {
		return nil, err
	}
	p := &PendingTx{c: c, tx: tx, hash: hash, ch: ch}
	finish := func(r TxCommit, err error) (*PendingTx, error) {
		p.Discard()
		if err != nil {
			return nil, err
		}
		p.done, p.r = true, r
		return p, nil
	}

	var res *ctypes.ResultBroadcastTx
	err = c.callRetry(ctx, "broadcast_tx_sync", broadcastRetryable, func(ctx context.Context) error {
		var e error
		res, e = c.broadcastSync(ctx, tx)
		return e
	})
	switch {
	case err != nil && strings.Contains(rpcErrorData(err), "already exists in cache"):
		// Seen before: committed already, or still in the mempool.
		r, ok, lerr := c.lookupTx(ctx, hash)
		if lerr != nil {
			return finish(TxCommit{}, lerr)
		}
		if ok {
			return finish(commitOrRefusal(r))
		}
		p.seen = true
	case err != nil:
		return finish(TxCommit{}, fmt.Errorf("ledgerclient: submit: %w", err))
	case res.Code != 0:
		// A duplicate refusal of a tx that did commit is a success.
		if r, ok, lerr := c.lookupTx(ctx, hash); lerr == nil && ok {
			return finish(commitOrRefusal(r))
		}
		return finish(TxCommit{}, &RefusedError{Stage: "check", Code: res.Code, Log: res.Log, TxHash: p.TxHash()})
	}
	return p, nil
}

// Wait waits until the tx commits; see Submit for the errors.
func (p *PendingTx) Wait(ctx context.Context) (TxCommit, error) {
	if p.done {
		return p.r, p.err
	}
	defer p.Discard()
	p.r, p.err = p.c.waitCommit(ctx, p.tx, p.hash, p.ch, p.seen)
	p.done = true
	return p.r, p.err
}

// Discard stops waiting for the tx (it may still commit).
func (p *PendingTx) Discard() {
	if p.ch != nil {
		p.c.follower().removeWaiter(p.hash, p.ch)
		p.ch = nil
	}
}

func (c *Client) waitCommit(ctx context.Context, tx, hash []byte, ch chan TxCommit, seen bool) (TxCommit, error) {
	timeout := time.NewTimer(c.opts.CommitTimeout)
	defer timeout.Stop()
	// Bytes the node had seen before may have committed before the follower
	// started, while the tx index lagged: look them up again shortly.
	var early <-chan time.Time
	if seen {
		early = time.After(time.Second)
	}
	// Every RecheckInterval the same bytes are broadcast again: a tx the
	// mempool dropped (a recheck after a block made it invalid, a node
	// restart) gets its refusal or goes back in; one still pending answers
	// "already in cache".
	recheck := time.NewTicker(c.opts.RecheckInterval)
	defer recheck.Stop()
	for {
		select {
		case r := <-ch:
			return commitOrRefusal(r)
		case <-ctx.Done():
			return TxCommit{}, fmt.Errorf("ledgerclient: wait for commit: %w", ctx.Err())
		case <-c.ctx.Done():
			return TxCommit{}, ErrClosed
		case <-c.follower().ctx.Done():
			return TxCommit{}, ErrClosed
		case <-early:
			if r, ok, lerr := c.lookupTx(ctx, hash); lerr == nil && ok {
				return commitOrRefusal(r)
			}
		case <-recheck.C:
			// The tx index lags the block a little: a tx the follower
			// missed (its block came before the follower started) is found
			// here.
			if r, ok, lerr := c.lookupTx(ctx, hash); lerr == nil && ok {
				return commitOrRefusal(r)
			}
			res, err := c.broadcastSync(ctx, tx)
			if err != nil || res.Code == 0 {
				continue // pending, back in the mempool, or the RPC is down: keep waiting
			}
			if r, ok, lerr := c.lookupTx(ctx, hash); lerr == nil && ok {
				return commitOrRefusal(r)
			}
			return TxCommit{}, &RefusedError{Stage: "check", Code: res.Code, Log: res.Log, TxHash: hex.EncodeToString(hash)}
		case <-timeout.C:
			if r, ok, err := c.lookupTx(ctx, hash); err == nil && ok {
				return commitOrRefusal(r)
			}
			f := c.follower()
			f.mu.Lock()
			lastErr := f.lastErr
			f.mu.Unlock()
			if lastErr != nil && errors.Is(lastErr, ErrUnreachable) {
				return TxCommit{}, fmt.Errorf("ledgerclient: wait for commit: %w", lastErr)
			}
			return TxCommit{}, fmt.Errorf("%w (%s, tx %X)", ErrCommitTimeout, c.opts.CommitTimeout, hash)
		}
	}
}

func commitOrRefusal(r TxCommit) (TxCommit, error) {
	if r.Code != 0 {
		return r, &RefusedError{Stage: "deliver", Code: r.Code, Log: r.Log, TxHash: r.TxHash, Height: r.Height}
	}
	return r, nil
}

// lookupTx asks the node's tx index for hash: ok is false if not (yet)
// committed.
func (c *Client) lookupTx(ctx context.Context, hash []byte) (TxCommit, bool, error) {
	var res *ctypes.ResultTx
	err := c.call(ctx, "tx", func(ctx context.Context) error {
		var e error
		res, e = c.rpc.Tx(ctx, hash, false)
		return e
	})
	if err != nil {
		if strings.Contains(rpcErrorData(err), "not found") {
			return TxCommit{}, false, nil
		}
		return TxCommit{}, false, err
	}
	return TxCommit{
		Height: res.Height, TxHash: hex.EncodeToString(res.Hash), Index: res.Index,
		Code: res.TxResult.Code, Log: res.TxResult.Log,
	}, true, nil
}

// follower is the client whose block follower resolves c's commits.
func (c *Client) follower() *Client {
	if c.opts.Follower != nil {
		return c.opts.Follower
	}
	return c
}

// addWaiter registers a commit waiter for hash and makes sure the follower
// runs, starting it from the current height (before the tx is broadcast, so
// its block cannot be missed).
func (c *Client) addWaiter(ctx context.Context, hash []byte) (chan TxCommit, error) {
	if c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	ch := make(chan TxCommit, 1)
	c.mu.Lock()
	c.waiters[string(hash)] = append(c.waiters[string(hash)], ch)
	running := c.following
	c.mu.Unlock()
	if running {
		return ch, nil
	}
	h, err := c.Height(ctx)
	if err != nil {
		c.removeWaiter(hash, ch)
		return nil, fmt.Errorf("ledgerclient: submit: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if !c.following {
		c.following = true
		c.wg.Add(1)
		go c.follow(h + 1)
	}
	return ch, nil
}

func (c *Client) removeWaiter(hash []byte, ch chan TxCommit) {
	c.mu.Lock()
	defer c.mu.Unlock()
	list := c.waiters[string(hash)]
	for i, w := range list {
		if w == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(c.waiters, string(hash))
	} else {
		c.waiters[string(hash)] = list
	}
}

// follow resolves commit waiters block by block until the client closes.
// It stops itself after a while without waiters and is restarted on demand.
func (c *Client) follow(from int64) {
	defer c.wg.Done()
	idleSince := time.Now()
	idle := false
	err := c.watch(c.ctx, from, func(b *Block) error {
		c.mu.Lock()
		c.lastErr = nil
		for _, t := range b.Txs {
			key, _ := hex.DecodeString(t.Hash)
			for _, ch := range c.waiters[string(key)] {
				select {
				case ch <- TxCommit{Height: b.Height, TxHash: t.Hash, Index: t.Index, Code: t.Code, Log: t.Log}:
				default:
				}
			}
		}
		c.mu.Unlock()
		return nil
	}, func(err error) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil {
			c.lastErr = err
		}
		if len(c.waiters) > 0 {
			idleSince = time.Now()
			return true
		}
		if time.Since(idleSince) > 10*time.Second {
			c.following = false // under mu: a new waiter starts a new follower
			idle = true
			return false
		}
		return true
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		c.log.Warn("ledger block follower stopped", "error", err)
	}
	if !idle {
		c.mu.Lock()
		c.following = false
		c.mu.Unlock()
	}
}

// Event is one ABCI event with its attributes (last value wins for a key
// that repeats).
type Event struct {
	Type       string            `json:"type"`
	Attributes map[string]string `json:"attributes"`
}

// BlockTx is one tx of a block with its result.
type BlockTx struct {
	Index  uint32  `json:"index"`
	Hash   string  `json:"hash"` // lowercase hex
	Tx     []byte  `json:"tx"`
	Code   uint32  `json:"code"`
	Log    string  `json:"log,omitempty"`
	Events []Event `json:"events,omitempty"`
}

// Block is a committed block as the follower sees it.
type Block struct {
	Height int64
	Time   time.Time
	Txs    []BlockTx
	Events []Event // FinalizeBlock events outside txs
}

// WatchBlocks calls fn for every committed block from height from (1 or
// more; 0 means the next block) in order, polling every PollInterval, until
// ctx is done or fn returns an error (which it returns). An unreachable
// ledger is waited out; the watch resumes where it stopped. The gateway's
// identity cache uses it to see device register/revoke events.
func (c *Client) WatchBlocks(ctx context.Context, from int64, fn func(*Block) error) error {
	if from <= 0 {
		h, err := c.Height(ctx)
		if err != nil {
			return err
		}
		from = h + 1
	}
	err := c.watch(ctx, from, fn, func(error) bool { return true })
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return ctx.Err()
	}
	return err
}

// watch is the polling loop behind WatchBlocks and the commit follower.
// tick is called after each poll round with the round's error (nil if
// fine); it returns false to stop.
func (c *Client) watch(ctx context.Context, next int64, fn func(*Block) error, tick func(error) bool) error {
	t := time.NewTicker(c.opts.PollInterval)
	defer t.Stop()
	for {
		latest, err := c.heightOnce(ctx)
		for err == nil && next <= latest {
			var b *Block
			b, err = c.block(ctx, next)
			if err != nil {
				break
			}
			if ferr := fn(b); ferr != nil {
				return ferr
			}
			next++
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			c.closeIdle() // a node restarted on the same address is dialled afresh
		}
		if !tick(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// block fetches block h and its results (one retry round for an
// unreachable RPC is left to the caller's loop). It decodes only what a
// Block holds, with encoding/json: the RPC client's reflective decoder
// (libs/json, jsonpb) cost the load generator of `make bench` two thirds of
// its CPU, every follower decoding every block.
func (c *Client) block(ctx context.Context, h int64) (*Block, error) {
	var rb struct {
		Block struct {
			Header struct {
				Time time.Time `json:"time"`
			} `json:"header"`
			Data struct {
				Txs [][]byte `json:"txs"`
			} `json:"data"`
		} `json:"block"`
	}
	if err := c.getResult(ctx, "block", h, &rb); err != nil {
		return nil, err
	}
	var rr struct {
		TxsResults []struct {
			Code   uint32      `json:"code"`
			Log    string      `json:"log"`
			Events []wireEvent `json:"events"`
		} `json:"txs_results"`
		FinalizeBlockEvents []wireEvent `json:"finalize_block_events"`
	}
	if err := c.getResult(ctx, "block_results", h, &rr); err != nil {
		return nil, err
	}
	txs := rb.Block.Data.Txs
	if len(rr.TxsResults) != len(txs) {
		return nil, fmt.Errorf("ledgerclient: block %d has %d txs but %d results", h, len(txs), len(rr.TxsResults))
	}
	b := &Block{Height: h, Time: rb.Block.Header.Time, Events: convertWireEvents(rr.FinalizeBlockEvents)}
	for i, tx := range txs {
		r := rr.TxsResults[i]
		b.Txs = append(b.Txs, BlockTx{
			Index: uint32(i), Hash: hex.EncodeToString(types.Tx(tx).Hash()), Tx: tx,
			Code: r.Code, Log: r.Log, Events: convertWireEvents(r.Events),
		})
	}
	return b, nil
}

// wireEvent is an ABCI event as the RPC's JSON writes it.
type wireEvent struct {
	Type       string `json:"type"`
	Attributes []struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	} `json:"attributes"`
}

func convertWireEvents(evs []wireEvent) []Event {
	out := make([]Event, 0, len(evs))
	for _, e := range evs {
		ev := Event{Type: e.Type, Attributes: make(map[string]string, len(e.Attributes))}
		for _, a := range e.Attributes {
			ev.Attributes[a.Key] = a.Value
		}
		out = append(out, ev)
	}
	return out
}

// getResult GETs /method?height=h and decodes the JSON-RPC result into v.
func (c *Client) getResult(ctx context.Context, method string, h int64, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/"+method+"?height="+strconv.FormatInt(h, 10), nil)
	if err != nil {
		return fmt.Errorf("ledgerclient: %s: %w", method, err)
	}
	result, err := c.rpcAnswer(req, method)
	var rpcErr *rpctypes.RPCError
	if errors.As(err, &rpcErr) {
		return fmt.Errorf("ledgerclient: %s: %w", method, err)
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(result, v); err != nil {
		return fmt.Errorf("ledgerclient: %s %d: decode result: %w", method, h, err)
	}
	return nil
}

// rpcAnswer sends req to the JSON-RPC endpoint and returns the answer's
// result (nil when it has none). An error answer is returned as its
// *rpctypes.RPCError; no answer, or one that is not JSON-RPC (a proxy's
// HTML page, a cut answer), wraps ErrUnreachable: the RPC is not there.
func (c *Client) rpcAnswer(req *http.Request, method string) (json.RawMessage, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, classify(method, err)
	}
	defer resp.Body.Close()
	var env struct {
		Result json.RawMessage    `json:"result"`
		Error  *rpctypes.RPCError `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return nil, fmt.Errorf("%w: %s: decode answer (HTTP %d): %v", ErrUnreachable, method, resp.StatusCode, err)
	}
	if env.Error != nil {
		return nil, env.Error
	}
	return env.Result, nil
}

// broadcastSync is broadcast_tx_sync as one JSON-RPC POST whose answer is
// decoded with encoding/json: the RPC client's reflective encoder and
// decoder cost a gateway (and the load generator of `make bench`) about
// twice as much CPU per tx. Errors are the RPC client's: an
// *rpctypes.RPCError for an error answer, an unreachable error otherwise.
func (c *Client) broadcastSync(ctx context.Context, tx []byte) (*ctypes.ResultBroadcastTx, error) {
	const method = "broadcast_tx_sync"
	body := make([]byte, 0, 96+base64.StdEncoding.EncodedLen(len(tx)))
	body = append(body, `{"jsonrpc":"2.0","id":1,"method":"broadcast_tx_sync","params":{"tx":"`...)
	body = base64.StdEncoding.AppendEncode(body, tx)
	body = append(body, `"}}`...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("ledgerclient: %s: %w", method, err)
	}
	req.Header.Set("Content-Type", "application/json")
	result, err := c.rpcAnswer(req, method)
	if err != nil {
		return nil, err
	}
	var res *ctypes.ResultBroadcastTx
	if err := json.Unmarshal(result, &res); err != nil || res == nil {
		return nil, fmt.Errorf("%w: %s: answer without a result: %v", ErrUnreachable, method, err)
	}
	return res, nil
}

func classify(what string, err error) error {
	if isUnreachable(err) {
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, what, err)
	}
	return fmt.Errorf("ledgerclient: %s: %w", what, err)
}

// heightOnce asks the application (abci_info) for its last committed
// height: unlike /status (the block store), it implies that the block's
// results are stored.
func (c *Client) heightOnce(ctx context.Context) (int64, error) {
	res, err := c.rpc.ABCIInfo(ctx)
	if err != nil {
		return 0, classify("abci_info", err)
	}
	return res.Response.LastBlockHeight, nil
}

// Status is what a gateway or operator needs from /status.
type Status struct {
	ChainID     string
	Height      int64
	Time        time.Time
	CatchingUp  bool
	NodeID      string
	ValidatorID string // validator address, hex
}

// Status returns the node's chain id and latest height.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st *ctypes.ResultStatus
	err := c.call(ctx, "status", func(ctx context.Context) error {
		var e error
		st, e = c.rpc.Status(ctx)
		return e
	})
	if err != nil {
		return Status{}, err
	}
	return Status{
		ChainID: st.NodeInfo.Network, Height: st.SyncInfo.LatestBlockHeight,
		Time: st.SyncInfo.LatestBlockTime, CatchingUp: st.SyncInfo.CatchingUp,
		NodeID: string(st.NodeInfo.DefaultNodeID), ValidatorID: st.ValidatorInfo.Address.String(),
	}, nil
}

// Height returns the latest committed height.
func (c *Client) Height(ctx context.Context) (int64, error) {
	st, err := c.Status(ctx)
	return st.Height, err
}

// Query runs an ABCI query (docs/internals.md paths) and returns the JSON
// answer; a non-zero answer code is ErrNotFound when the app says so, an
// error otherwise.
func (c *Client) Query(ctx context.Context, path string) ([]byte, error) {
	var res *ctypes.ResultABCIQuery
	err := c.call(ctx, "abci_query", func(ctx context.Context) error {
		var e error
		res, e = c.rpc.ABCIQuery(ctx, path, nil)
		return e
	})
	if err != nil {
		return nil, err
	}
	if res.Response.Code != 0 {
		if res.Response.Code == queryCodeNotFound || strings.Contains(strings.ToLower(res.Response.Log), "not found") {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, path)
		}
		return nil, fmt.Errorf("ledgerclient: query %s: code %d: %s", path, res.Response.Code, res.Response.Log)
	}
	if len(res.Response.Value) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, path)
	}
	return res.Response.Value, nil
}

// queryCodeNotFound is ledger/app.CodeNotFound: the client does not import the
// ledger application (and with it the whole node); a test ties the two.
const queryCodeNotFound = 19

func (c *Client) queryJSON(ctx context.Context, path string, v any) error {
	b, err := c.Query(ctx, path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("ledgerclient: query %s: decode answer: %w", path, err)
	}
	return nil
}

// Device returns the ledger's record of a device.
func (c *Client) Device(ctx context.Context, did device.DID) (*anchor.DeviceRecord, error) {
	var r anchor.DeviceRecord
	return &r, c.queryJSON(ctx, "/device/"+string(did), &r)
}

// Gateway returns the ledger's record of a gateway.
func (c *Client) Gateway(ctx context.Context, did device.DID) (*anchor.GatewayRecord, error) {
	var r anchor.GatewayRecord
	return &r, c.queryJSON(ctx, "/gateway/"+string(did), &r)
}

// maxGatewayDevices bounds what GatewayDevices takes from a node.
const maxGatewayDevices = 1 << 24

// GatewayDevices returns the devices registered through a gateway (and
// its predecessors), by DID. The ledger answers a page at a time (10,000
// devices); the next page is asked after the last DID of the previous one
// until a page comes back empty. A page that does not continue in DID
// order is refused: the answer is a node's, untrusted.
func (c *Client) GatewayDevices(ctx context.Context, did device.DID) ([]anchor.DeviceRecord, error) {
	var all []anchor.DeviceRecord
	path := "/gateway/" + string(did) + "/devices"
	for {
		var page []anchor.DeviceRecord
		if err := c.queryJSON(ctx, path, &page); err != nil {
			return nil, err
		}
		if len(page) == 0 {
			return all, nil
		}
		if len(all)+len(page) > maxGatewayDevices {
			return nil, fmt.Errorf("ledgerclient: devices of %s: more than %d", did, maxGatewayDevices)
		}
		for _, r := range page {
			if len(all) > 0 && r.DID <= all[len(all)-1].DID {
				return nil, fmt.Errorf("ledgerclient: devices of %s: %s after %s is out of order", did, r.DID, all[len(all)-1].DID)
			}
			all = append(all, r)
		}
		if _, err := device.ParseDID(string(all[len(all)-1].DID)); err != nil {
			return nil, fmt.Errorf("ledgerclient: devices of %s: %w", did, err)
		}
		path = "/gateway/" + string(did) + "/devices/after/" + string(all[len(all)-1].DID)
	}
}

// Batch returns the anchored batch header (gateway, seq).
func (c *Client) Batch(ctx context.Context, gateway device.DID, seq uint64) (*anchor.BatchRecord, error) {
	var r anchor.BatchRecord
	return &r, c.queryJSON(ctx, "/batch/"+string(gateway)+"/"+strconv.FormatUint(seq, 10), &r)
}

// BatchByRoot returns the anchored batch whose Merkle root is root (hex).
func (c *Client) BatchByRoot(ctx context.Context, root anchor.Hash) (*anchor.BatchRecord, error) {
	var r anchor.BatchRecord
	return &r, c.queryJSON(ctx, "/batch-by-root/"+root.String(), &r)
}

// LastBatch returns a gateway's last anchored batch, or ErrNotFound before
// its first.
func (c *Client) LastBatch(ctx context.Context, gateway device.DID) (*anchor.BatchRecord, error) {
	var r anchor.BatchRecord
	return &r, c.queryJSON(ctx, "/last-batch/"+string(gateway), &r)
}

// Proposal fetches /proposal/{id}.
func (c *Client) Proposal(ctx context.Context, id anchor.Hash) (*anchor.ProposalRecord, error) {
	var r anchor.ProposalRecord
	return &r, c.queryJSON(ctx, "/proposal/"+id.String(), &r)
}

// Proposals fetches /proposals: every proposal, oldest first.
func (c *Client) Proposals(ctx context.Context) ([]anchor.ProposalRecord, error) {
	var r []anchor.ProposalRecord
	return r, c.queryJSON(ctx, "/proposals", &r)
}

// Committee fetches /committee.
func (c *Client) Committee(ctx context.Context) (*anchor.CommitteeRecord, error) {
	var r anchor.CommitteeRecord
	return &r, c.queryJSON(ctx, "/committee", &r)
}

// Validators fetches /validators.
func (c *Client) Validators(ctx context.Context) ([]anchor.ValidatorRecord, error) {
	var r []anchor.ValidatorRecord
	return r, c.queryJSON(ctx, "/validators", &r)
}

// Gateways fetches /gateways: every gateway that was ever a member, by DID.
func (c *Client) Gateways(ctx context.Context) ([]anchor.GatewayRecord, error) {
	var r []anchor.GatewayRecord
	return r, c.queryJSON(ctx, "/gateways", &r)
}

// signedHeader fetches the signed header at height h.
func (c *Client) signedHeader(ctx context.Context, h int64) (*types.SignedHeader, error) {
	var res *ctypes.ResultCommit
	err := c.call(ctx, "commit", func(ctx context.Context) error {
		var e error
		res, e = c.rpc.Commit(ctx, &h)
		return e
	})
	if err != nil {
		return nil, err
	}
	sh := res.SignedHeader
	return &sh, nil
}

// validatorSet fetches the full validator set at height h.
func (c *Client) validatorSet(ctx context.Context, h int64) (*types.ValidatorSet, error) {
	var vals []*types.Validator
	perPage := 100
	for page := 1; ; page++ {
		var res *ctypes.ResultValidators
		err := c.call(ctx, "validators", func(ctx context.Context) error {
			var e error
			res, e = c.rpc.Validators(ctx, &h, &page, &perPage)
			return e
		})
		if err != nil {
			return nil, err
		}
		vals = append(vals, res.Validators...)
		if len(vals) >= res.Total || res.Count == 0 {
			break
		}
	}
	vs, err := newValidatorSet(vals)
	if err != nil {
		return nil, fmt.Errorf("ledgerclient: validators at %d: %w", h, err)
	}
	return vs, nil
}

// newValidatorSet is types.NewValidatorSet without its panic on bad input.
func newValidatorSet(vals []*types.Validator) (vs *types.ValidatorSet, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return types.NewValidatorSet(vals), nil
}
