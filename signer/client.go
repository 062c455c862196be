package signer

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/setpay/setpay/signer/signerpb"
)

// ClientOptions tune a Client.
type ClientOptions struct {
	// Pipeline sends signatures over one SignStream in batches instead of one unary
	// call each: the same results, less per-call overhead under concurrency.
	Pipeline bool
	// MaxBatch caps requests per batch (default 128; keep it at or below the server's).
	MaxBatch int
}

// Client uses a remote Signer service. It is safe for concurrent use.
type Client struct {
	rpc  signerpb.SignerClient
	opts ClientOptions

	mu   sync.Mutex
	pipe *pipeline
}

// NewClient wraps a connection (dialled with TLS client credentials).
func NewClient(conn grpc.ClientConnInterface, opts ClientOptions) *Client {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 128
	}
	return &Client{rpc: signerpb.NewSignerClient(conn), opts: opts}
}

// Close ends the pipeline stream, if any; the connection is the caller's to close.
func (c *Client) Close() error {
	c.mu.Lock()
	p := c.pipe
	c.pipe = nil
	c.mu.Unlock()
	if p != nil {
		p.close()
	}
	return nil
}

// ListKeys lists the keys this client may use.
func (c *Client) ListKeys(ctx context.Context) ([]*signerpb.KeyInfo, error) {
	r, err := c.rpc.ListKeys(ctx, &signerpb.ListKeysRequest{})
	if err != nil {
		return nil, fmt.Errorf("signer: list keys: %w", err)
	}
	return r.GetKeys(), nil
}

// Key fetches a remote key's public half and returns it as a crypto.Signer and
// crypto.Decrypter.
func (c *Client) Key(ctx context.Context, name string) (*RemoteKey, error) {
	r, err := c.rpc.PublicKey(ctx, &signerpb.PublicKeyRequest{Key: name})
	if err != nil {
		return nil, fmt.Errorf("signer: key %q: %w", name, err)
	}
	pub, err := x509.ParsePKIXPublicKey(r.GetPublicKey())
	if err != nil {
		return nil, fmt.Errorf("signer: key %q: public key from server: %w", name, err)
	}
	k := &RemoteKey{c: c, name: name, pub: pub, info: r.GetKey()}
	if len(r.GetCertificate()) > 0 {
		if k.cert, err = x509.ParseCertificate(r.GetCertificate()); err != nil {
			return nil, fmt.Errorf("signer: key %q: certificate from server: %w", name, err)
		}
	}
	return k, nil
}

// RemoteKey is a key held by a remote Signer service.
type RemoteKey struct {
	c    *Client
	name string
	pub  crypto.PublicKey
	cert *x509.Certificate
	info *signerpb.KeyInfo
}

// Public returns the public half.
func (k *RemoteKey) Public() crypto.PublicKey { return k.pub }

// Certificate returns the key's certificate, if the server has one.
func (k *RemoteKey) Certificate() *x509.Certificate { return k.cert }

// Name is the key's name in the service.
func (k *RemoteKey) Name() string { return k.name }

// URI is the key's RFC 7512 URI in the server's token.
func (k *RemoteKey) URI() string { return k.info.GetUri() }

// Sign implements crypto.Signer.
func (k *RemoteKey) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.SignContext(context.Background(), digest, opts)
}

// SignContext signs over the stream pipeline or a unary call.
func (k *RemoteKey) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil {
		return nil, errors.New("signer: no hash given")
	}
	h, err := hashPB(opts.HashFunc())
	if err != nil {
		return nil, err
	}
	req := &signerpb.SignRequest{Key: k.name, Digest: digest, Hash: h}
	if pss, ok := opts.(*rsa.PSSOptions); ok {
		req.Padding = signerpb.Padding_PSS
		if pss.SaltLength > 0 {
			req.SaltLength = int32(pss.SaltLength)
		}
	}
	if k.c.opts.Pipeline {
		return k.c.pipelineSign(ctx, req)
	}
	r, err := k.c.rpc.Sign(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("signer: sign with %q: %w", k.name, err)
	}
	return r.GetSignature(), nil
}

// Decrypt implements crypto.Decrypter for RSA-OAEP.
func (k *RemoteKey) Decrypt(_ io.Reader, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	return k.DecryptContext(context.Background(), ciphertext, opts)
}

// DecryptContext decrypts RSA-OAEP ciphertext with the remote key.
func (k *RemoteKey) DecryptContext(ctx context.Context, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	o, ok := opts.(*rsa.OAEPOptions)
	if !ok || o == nil {
		return nil, fmt.Errorf("signer: only RSA-OAEP decryption is offered (got %T)", opts)
	}
	h, err := hashPB(o.Hash)
	if err != nil {
		return nil, err
	}
	req := &signerpb.DecryptRequest{Key: k.name, Ciphertext: ciphertext, OaepHash: h, Label: o.Label}
	if o.MGFHash != 0 {
		if req.MgfHash, err = hashPB(o.MGFHash); err != nil {
			return nil, err
		}
	}
	r, err := k.c.rpc.Decrypt(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("signer: decrypt with %q: %w", k.name, err)
	}
	return r.GetPlaintext(), nil
}

// pipeline multiplexes sign requests from many goroutines over one stream: a sender
// gathers whatever is queued into one batch, a receiver hands results back by id.
//
// Sending is flat-combined: a caller that finds nobody sending sends everything queued
// so far in one batch; callers arriving meanwhile only queue. So there is no sender
// goroutine to wake, and batches grow exactly when the stream is busy.
type pipeline struct {
	stream  grpc.BidiStreamingClient[signerpb.SignBatch, signerpb.SignResults]
	cancel  context.CancelFunc
	max     int
	nextID  atomic.Uint64
	mu      sync.Mutex
	waiting map[uint64]chan *signerpb.SignResult
	queued  []*signerpb.SignRequest
	sending bool
	dead    chan struct{}
	err     error // set before dead is closed
	once    sync.Once
}

func (c *Client) pipelineSign(ctx context.Context, req *signerpb.SignRequest) ([]byte, error) {
	p, err := c.currentPipeline()
	if err != nil {
		return nil, err
	}
	req.Id = p.nextID.Add(1)
	ch := make(chan *signerpb.SignResult, 1)
	p.submit(req, ch)
	select {
	case r := <-ch:
		if r.GetCode() != 0 {
			return nil, fmt.Errorf("signer: sign with %q: %w", req.Key, status.Error(codes.Code(r.GetCode()), r.GetMessage()))
		}
		return r.GetSignature(), nil
	case <-p.dead:
		c.dropPipeline(p)
		return nil, fmt.Errorf("signer: sign with %q: %w", req.Key, p.err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Client) currentPipeline() (*pipeline, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pipe != nil {
		return c.pipe, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.rpc.SignStream(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("signer: open sign stream: %w", err)
	}
	p := &pipeline{stream: stream, cancel: cancel, max: c.opts.MaxBatch,
		waiting: map[uint64]chan *signerpb.SignResult{}, dead: make(chan struct{})}
	go p.receive()
	c.pipe = p
	return p, nil
}

// dropPipeline forgets a dead pipeline so the next call opens a new stream.
func (c *Client) dropPipeline(p *pipeline) {
	c.mu.Lock()
	if c.pipe == p {
		c.pipe = nil
	}
	c.mu.Unlock()
}

func (p *pipeline) fail(err error) {
	p.once.Do(func() {
		p.err = err
		close(p.dead)
		p.cancel()
	})
}

func (p *pipeline) close() { p.fail(errors.New("signer: client closed")) }

// submit queues req and, if nobody is sending, sends the queue in batches until it
// is empty. A send error kills the pipeline; waiting callers see it through dead.
func (p *pipeline) submit(req *signerpb.SignRequest, ch chan *signerpb.SignResult) {
	p.mu.Lock()
	p.waiting[req.Id] = ch
	p.queued = append(p.queued, req)
	if p.sending {
		p.mu.Unlock()
		return
	}
	p.sending = true
	for len(p.queued) > 0 {
		n := min(len(p.queued), p.max)
		batch := &signerpb.SignBatch{Requests: p.queued[:n:n]}
		p.queued = p.queued[n:]
		p.mu.Unlock()
		err := p.stream.Send(batch)
		p.mu.Lock()
		if err != nil {
			p.queued = nil
			p.sending = false
			p.mu.Unlock()
			p.fail(fmt.Errorf("sign stream send: %w", err))
			return
		}
	}
	p.queued = nil
	p.sending = false
	p.mu.Unlock()
}

func (p *pipeline) receive() {
	for {
		rs, err := p.stream.Recv()
		if err != nil {
			p.fail(fmt.Errorf("sign stream: %w", err))
			return
		}
		p.mu.Lock()
		for _, r := range rs.GetResults() {
			if ch, ok := p.waiting[r.GetId()]; ok {
				delete(p.waiting, r.GetId())
				ch <- r // buffered: never blocks
			}
		}
		p.mu.Unlock()
	}
}
