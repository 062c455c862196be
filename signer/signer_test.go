package signer_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/signer"
	"github.com/setpay/setpay/signer/signerpb"
	"github.com/setpay/setpay/softhsm/softhsmtest"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

type fixture struct {
	tok     *hsm.Token
	addr    string
	issuer  *tlsrpc.TLSIssuer
	clients map[string]tlsrpc.Identity
}

// newFixture starts a real signer server on loopback with mutual TLS; every key,
// the TLS ones included, lives in the test's SoftHSM token.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	tok := softhsmtest.NewToken(t)
	gen := func(label string, alg hsm.Algorithm, usage hsm.Usage) *hsm.Key {
		k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: label, Algorithm: alg, Usage: usage})
		require.NoError(t, err)
		return k
	}
	svc := signer.NewService()
	for _, k := range []struct {
		name  string
		alg   hsm.Algorithm
		usage hsm.Usage
	}{
		{"gateway-sign", hsm.ECDSAP256, hsm.UsageSign},
		{"gateway-kex", hsm.RSA2048, hsm.UsageKeyExchange},
		{"merchant-sign", hsm.RSA2048, hsm.UsageSign},
	} {
		key := gen(k.name, k.alg, k.usage)
		require.NoError(t, svc.Add(signer.Entry{Name: k.name, Key: key, Algorithm: string(k.alg), Usage: string(k.usage)}))
	}
	issuer, err := tlsrpc.NewTLSIssuer("setpay test TLS CA", gen("tls-ca", hsm.ECDSAP256, hsm.UsageSign), time.Hour)
	require.NoError(t, err)
	serverID, err := issuer.Issue("127.0.0.1", gen("tls-server", hsm.ECDSAP256, hsm.UsageSign), time.Hour)
	require.NoError(t, err)
	f := &fixture{tok: tok, issuer: issuer, clients: map[string]tlsrpc.Identity{}}
	for _, name := range []string{"gateway", "merchant"} {
		id, err := issuer.Issue(name, gen("tls-"+name, hsm.ECDSAP256, hsm.UsageSign), time.Hour)
		require.NoError(t, err)
		f.clients[name] = id
	}
	grants := signer.Grants{"gateway": {"gateway-sign", "gateway-kex"}, "merchant": {"merchant-sign"}}
	gs, health := tlsrpc.NewGRPCServer(tlsrpc.ServerTLS(serverID, issuer.Pool()), 0)
	signer.NewServer(svc, grants, signer.Limits{}, nil).Register(gs)
	health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	f.addr = lis.Addr().String()
	return f
}

func (f *fixture) dial(t *testing.T, client string, opts signer.ClientOptions) (*signer.Client, *grpc.ClientConn) {
	t.Helper()
	var id *tlsrpc.Identity
	if c, ok := f.clients[client]; ok {
		id = &c
	}
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(id, f.issuer.Pool(), "127.0.0.1"))))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	c := signer.NewClient(conn, opts)
	t.Cleanup(func() { _ = c.Close() })
	return c, conn
}

func TestRemoteKeysSignAndDecrypt(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	digest := sha256.Sum256([]byte("authorization response"))
	for _, mode := range []struct {
		name string
		opts signer.ClientOptions
	}{{"unary", signer.ClientOptions{}}, {"pipeline", signer.ClientOptions{Pipeline: true}}} {
		t.Run(mode.name, func(t *testing.T) {
			gw, _ := f.dial(t, "gateway", mode.opts)
			key, err := gw.Key(ctx, "gateway-sign")
			require.NoError(t, err)
			assert.Contains(t, key.URI(), "object=gateway-sign")
			var wg sync.WaitGroup
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 25 {
						sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
						if assert.NoError(t, err) {
							assert.True(t, ecdsa.VerifyASN1(key.Public().(*ecdsa.PublicKey), digest[:], sig))
						}
					}
				}()
			}
			wg.Wait()

			kex, err := gw.Key(ctx, "gateway-kex")
			require.NoError(t, err)
			secret := []byte("content-encryption key, 32 byte")
			ct, err := rsa.EncryptOAEP(crypto.SHA1.New(), rand.Reader, kex.Public().(*rsa.PublicKey), secret, nil)
			require.NoError(t, err)
			pt, err := kex.Decrypt(rand.Reader, ct, &rsa.OAEPOptions{Hash: crypto.SHA1})
			require.NoError(t, err)
			assert.Equal(t, secret, pt)

			m, _ := f.dial(t, "merchant", mode.opts)
			mk, err := m.Key(ctx, "merchant-sign")
			require.NoError(t, err)
			sig, err := mk.Sign(rand.Reader, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
			if !softhsmtest.Supports(softhsmtest.RSASign) {
				// The token cannot sign a digest with RSA; the client must hear that
				// clearly (Unimplemented, naming the mechanism), not an obscure code.
				assert.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
				assert.ErrorContains(t, err, "CKM_RSA_PKCS_PSS")
				return
			}
			require.NoError(t, err)
			assert.NoError(t, rsa.VerifyPSS(mk.Public().(*rsa.PublicKey), crypto.SHA256, digest[:], sig, nil))
		})
	}
}

func TestServerRefusesWhatIsNotGranted(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	digest := sha256.Sum256([]byte("x"))

	merchant, _ := f.dial(t, "merchant", signer.ClientOptions{})
	keys, err := merchant.ListKeys(ctx)
	require.NoError(t, err)
	require.Len(t, keys, 1)
	assert.Equal(t, "merchant-sign", keys[0].GetName())

	cases := []struct {
		name string
		run  func() error
		code codes.Code
	}{
		{"merchant asks for the gateway key", func() error { _, err := merchant.Key(ctx, "gateway-sign"); return err }, codes.PermissionDenied},
		{"unknown key looks the same as a forbidden one", func() error { _, err := merchant.Key(ctx, "no-such"); return err }, codes.PermissionDenied},
		{"client without certificate", func() error {
			anon, _ := f.dial(t, "anonymous", signer.ClientOptions{})
			_, err := anon.ListKeys(ctx)
			return err
		}, codes.Unavailable},
		{"wrong usage: decrypt with a signing key", func() error {
			gw, _ := f.dial(t, "gateway", signer.ClientOptions{})
			k, err := gw.Key(ctx, "gateway-sign")
			if err != nil {
				return err
			}
			_, err = k.Decrypt(rand.Reader, make([]byte, 256), &rsa.OAEPOptions{Hash: crypto.SHA1})
			return err
		}, codes.FailedPrecondition},
		{"pipelined sign with a key not granted", func() error {
			_, conn := f.dial(t, "merchant", signer.ClientOptions{})
			stream, err := signerpb.NewSignerClient(conn).SignStream(ctx)
			if err != nil {
				return err
			}
			req := &signerpb.SignRequest{Key: "gateway-sign", Digest: digest[:], Hash: signerpb.Hash_SHA256, Id: 7}
			if err := stream.Send(&signerpb.SignBatch{Requests: []*signerpb.SignRequest{req}}); err != nil {
				return err
			}
			res, err := stream.Recv()
			if err != nil {
				return err
			}
			require.Len(t, res.GetResults(), 1)
			r := res.GetResults()[0]
			assert.Equal(t, uint64(7), r.GetId())
			assert.Empty(t, r.GetSignature())
			return status.Error(codes.Code(r.GetCode()), r.GetMessage())
		}, codes.PermissionDenied},
		{"digest of the wrong size", func() error {
			mp, _ := f.dial(t, "merchant", signer.ClientOptions{Pipeline: true})
			mk, err := mp.Key(ctx, "merchant-sign")
			if err != nil {
				return err
			}
			_, err = mk.Sign(rand.Reader, digest[:20], crypto.SHA256)
			return err
		}, codes.InvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.run()
			require.Error(t, err)
			assert.Equal(t, c.code, status.Code(err), err.Error())
			assert.NotContains(t, err.Error(), softhsmtest.PIN)
		})
	}
}

func TestHealthAndReflection(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, conn := f.dial(t, "gateway", signer.ClientOptions{})
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, hr.GetStatus())

	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}))
	resp, err := stream.Recv()
	require.NoError(t, err)
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	assert.Contains(t, names, "setpay.signer.v1.Signer")
	assert.Contains(t, names, "grpc.health.v1.Health")
}
