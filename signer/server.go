package signer

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/signer/signerpb"
)

// Grants says which keys each client may use. Clients are named by the common name of
// their TLS client certificate; "*" as a key grants every key (for the operator's tools).
type Grants map[string][]string

func (g Grants) allows(client, key string) bool {
	keys := g[client]
	return slices.Contains(keys, key) || slices.Contains(keys, "*")
}

// Limits bounds what one request may ask of the server.
type Limits struct {
	MaxBatch       int // sign requests in one SignBatch; default 256
	StreamWorkers  int // concurrent token operations per stream; default 4×GOMAXPROCS
	MaxDigestBytes int // default 64
}

func (l Limits) withDefaults() Limits {
	if l.MaxBatch <= 0 {
		l.MaxBatch = 256
	}
	if l.StreamWorkers <= 0 {
		l.StreamWorkers = 4 * runtime.GOMAXPROCS(0)
	}
	if l.MaxDigestBytes <= 0 {
		l.MaxDigestBytes = 64
	}
	return l
}

// Server is the gRPC face of a Service.
type Server struct {
	signerpb.UnimplementedSignerServer
	svc    *Service
	grants Grants
	limits Limits
	logger *slog.Logger
}

// NewServer serves svc to the clients in grants.
func NewServer(svc *Service, grants Grants, limits Limits, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.Default()
	}
	return &Server{svc: svc, grants: grants, limits: limits.withDefaults(), logger: logger}
}

// Register adds the service to a gRPC server.
func (s *Server) Register(r grpc.ServiceRegistrar) { signerpb.RegisterSignerServer(r, s) }

// clientName is the verified TLS client certificate's common name. Without a verified
// certificate there is no client, whatever the transport let through.
func clientName(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return "", status.Error(codes.Unauthenticated, "a verified TLS client certificate is required")
	}
	cn := ti.State.VerifiedChains[0][0].Subject.CommonName
	if cn == "" {
		return "", status.Error(codes.Unauthenticated, "client certificate has no common name")
	}
	return cn, nil
}

func (s *Server) authorize(ctx context.Context, key string) (*Entry, error) {
	client, err := clientName(ctx)
	if err != nil {
		return nil, err
	}
	if !s.grants.allows(client, key) {
		// Same answer for "not granted" and "no such key": a client learns nothing
		// about keys it may not use.
		return nil, status.Errorf(codes.PermissionDenied, "client %q may not use key %q", client, key)
	}
	e, err := s.svc.Entry(key)
	if err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "client %q may not use key %q", client, key)
	}
	return e, nil
}

func hashOf(h signerpb.Hash) (crypto.Hash, error) {
	switch h {
	case signerpb.Hash_SHA256:
		return crypto.SHA256, nil
	case signerpb.Hash_SHA384:
		return crypto.SHA384, nil
	case signerpb.Hash_SHA512:
		return crypto.SHA512, nil
	case signerpb.Hash_SHA1:
		return crypto.SHA1, nil
	}
	return 0, fmt.Errorf("hash %v not offered", h)
}

func hashPB(h crypto.Hash) (signerpb.Hash, error) {
	switch h {
	case crypto.SHA256:
		return signerpb.Hash_SHA256, nil
	case crypto.SHA384:
		return signerpb.Hash_SHA384, nil
	case crypto.SHA512:
		return signerpb.Hash_SHA512, nil
	case crypto.SHA1:
		return signerpb.Hash_SHA1, nil
	}
	return 0, fmt.Errorf("signer: hash %v not offered", h)
}

func (s *Server) signOpts(r *signerpb.SignRequest) (crypto.SignerOpts, error) {
	h, err := hashOf(r.GetHash())
	if err != nil || h == crypto.SHA1 {
		return nil, status.Errorf(codes.InvalidArgument, "signing hash %v not offered (SHA-256, SHA-384, SHA-512)", r.GetHash())
	}
	if len(r.GetDigest()) != h.Size() || len(r.GetDigest()) > s.limits.MaxDigestBytes {
		return nil, status.Errorf(codes.InvalidArgument, "digest of %d bytes does not fit %v", len(r.GetDigest()), h)
	}
	switch r.GetPadding() {
	case signerpb.Padding_PADDING_DEFAULT:
		return h, nil
	case signerpb.Padding_PSS:
		salt := int(r.GetSaltLength())
		if salt == 0 {
			salt = rsa.PSSSaltLengthEqualsHash
		}
		return &rsa.PSSOptions{Hash: h, SaltLength: salt}, nil
	}
	return nil, status.Errorf(codes.InvalidArgument, "padding %v unknown", r.GetPadding())
}

// statusOf maps token errors to gRPC codes a client can act on; the text names the key
// and the CKR code, never a PIN (hsm errors never carry one).
func statusOf(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, hsm.ErrWrongUsage):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, hsm.ErrBadRequest):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, hsm.ErrUnsupported):
		return status.Error(codes.Unimplemented, err.Error())
	case errors.Is(err, ErrUnknownKey), errors.Is(err, hsm.ErrKeyNotFound):
		return status.Error(codes.NotFound, err.Error())
	case hsm.Unavailable(err):
		// The token is gone for now and being found again: retryable, and the key URI
		// and CKR code stay in this service's log.
		return status.Error(codes.Unavailable, "the signer's token is unavailable; retry later")
	}
	return status.Error(codes.Unavailable, err.Error())
}

func (s *Server) sign(ctx context.Context, r *signerpb.SignRequest) ([]byte, error) {
	e, err := s.authorize(ctx, r.GetKey())
	if err != nil {
		return nil, err
	}
	opts, err := s.signOpts(r)
	if err != nil {
		return nil, err
	}
	sig, err := signWith(ctx, e.Key, r.GetDigest(), opts)
	if err != nil {
		return nil, statusOf(err)
	}
	return sig, nil
}

// Sign implements signerpb.SignerServer.
func (s *Server) Sign(ctx context.Context, r *signerpb.SignRequest) (*signerpb.SignResponse, error) {
	sig, err := s.sign(ctx, r)
	if err != nil {
		return nil, err
	}
	return &signerpb.SignResponse{Signature: sig}, nil
}

// SignStream implements signerpb.SignerServer: each batch's requests run on a bounded
// pool of workers (so several token sessions work at once). Results go back by flat
// combining: a worker that finishes while nobody is sending becomes the sender and
// sends everything finished so far in one message; under load that batches results,
// at low load it adds no goroutine hand-off.
func (s *Server) SignStream(stream grpc.BidiStreamingServer[signerpb.SignBatch, signerpb.SignResults]) error {
	ctx := stream.Context()
	if _, err := clientName(ctx); err != nil {
		return err
	}
	out := &combiner{stream: stream}
	work := make(chan *signerpb.SignRequest, s.limits.MaxBatch)
	var workers sync.WaitGroup
	for range s.limits.StreamWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for r := range work {
				res := &signerpb.SignResult{Id: r.GetId()}
				sig, err := s.sign(ctx, r)
				if err != nil {
					st := status.Convert(err)
					res.Code, res.Message = int32(st.Code()), st.Message()
				} else {
					res.Signature = sig
				}
				out.add(res)
			}
		}()
	}
	var recvErr error
	for {
		b, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				recvErr = err
			}
			break
		}
		if len(b.GetRequests()) > s.limits.MaxBatch {
			recvErr = status.Errorf(codes.InvalidArgument, "batch of %d requests exceeds %d", len(b.GetRequests()), s.limits.MaxBatch)
			break
		}
		for _, r := range b.GetRequests() {
			work <- r
		}
	}
	close(work)
	workers.Wait()
	if err := out.failed(); err != nil && recvErr == nil {
		recvErr = err
	}
	return recvErr
}

// combiner sends results on a stream by flat combining (see SignStream).
type combiner struct {
	stream  grpc.BidiStreamingServer[signerpb.SignBatch, signerpb.SignResults]
	mu      sync.Mutex
	pending []*signerpb.SignResult
	sending bool
	err     error
}

func (c *combiner) add(r *signerpb.SignResult) {
	c.mu.Lock()
	c.pending = append(c.pending, r)
	if c.sending {
		c.mu.Unlock()
		return
	}
	c.sending = true
	for len(c.pending) > 0 && c.err == nil {
		batch := &signerpb.SignResults{Results: c.pending}
		c.pending = nil
		c.mu.Unlock()
		err := c.stream.Send(batch)
		c.mu.Lock()
		c.err = err
	}
	c.sending = false
	c.mu.Unlock()
}

func (c *combiner) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Decrypt implements signerpb.SignerServer (RSA-OAEP only).
func (s *Server) Decrypt(ctx context.Context, r *signerpb.DecryptRequest) (*signerpb.DecryptResponse, error) {
	e, err := s.authorize(ctx, r.GetKey())
	if err != nil {
		return nil, err
	}
	h, err := hashOf(r.GetOaepHash())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "OAEP hash: %v", err)
	}
	mgf := h
	if r.GetMgfHash() != signerpb.Hash_HASH_UNSPECIFIED {
		if mgf, err = hashOf(r.GetMgfHash()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "MGF1 hash: %v", err)
		}
	}
	if len(r.GetCiphertext()) == 0 || len(r.GetCiphertext()) > 1024 {
		return nil, status.Errorf(codes.InvalidArgument, "ciphertext of %d bytes", len(r.GetCiphertext()))
	}
	pt, err := s.svc.Decrypt(ctx, e.Name, r.GetCiphertext(), &rsa.OAEPOptions{Hash: h, MGFHash: mgf, Label: r.GetLabel()})
	if err != nil {
		return nil, statusOf(err)
	}
	return &signerpb.DecryptResponse{Plaintext: pt}, nil
}

func keyInfo(e *Entry) *signerpb.KeyInfo {
	ki := &signerpb.KeyInfo{Name: e.Name, Algorithm: e.Algorithm, Usage: e.Usage}
	if d, ok := e.Key.(Describer); ok {
		ki.Uri = d.URI()
	}
	return ki
}

// PublicKey implements signerpb.SignerServer.
func (s *Server) PublicKey(ctx context.Context, r *signerpb.PublicKeyRequest) (*signerpb.PublicKeyResponse, error) {
	e, err := s.authorize(ctx, r.GetKey())
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(e.Key.Public())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode public key: %v", err)
	}
	resp := &signerpb.PublicKeyResponse{Key: keyInfo(e), PublicKey: der}
	if e.Certificate != nil {
		resp.Certificate = e.Certificate.Raw
	}
	return resp, nil
}

// ListKeys implements signerpb.SignerServer.
func (s *Server) ListKeys(ctx context.Context, _ *signerpb.ListKeysRequest) (*signerpb.ListKeysResponse, error) {
	client, err := clientName(ctx)
	if err != nil {
		return nil, err
	}
	resp := &signerpb.ListKeysResponse{}
	for _, n := range s.svc.Names() {
		if !s.grants.allows(client, n) {
			continue
		}
		e, err := s.svc.Entry(n)
		if err != nil {
			continue
		}
		resp.Keys = append(resp.Keys, keyInfo(e))
	}
	return resp, nil
}
