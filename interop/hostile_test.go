package interop_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/setpay/setpay/cms"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/system/systemtest"
)

// Hostile input, over gRPC, to a running gateway and merchant. Every case must get a
// clear status (code and SET reason), and leave no goroutine, no token session and
// no store row behind. A panic in a handler would kill the test binary.

// nestedDER is depth SEQUENCEs inside each other around a NULL, definite lengths.
func nestedDER(depth int) []byte {
	header := func(l int) []byte {
		switch {
		case l < 0x80:
			return []byte{0x30, byte(l)}
		case l < 0x100:
			return []byte{0x30, 0x81, byte(l)}
		case l < 0x10000:
			return []byte{0x30, 0x82, byte(l >> 8), byte(l)}
		default:
			return []byte{0x30, 0x83, byte(l >> 16), byte(l >> 8), byte(l)}
		}
	}
	heads := make([][]byte, depth)
	l := 2
	for i := depth - 1; i >= 0; i-- {
		heads[i] = header(l)
		l += len(heads[i])
	}
	out := make([]byte, 0, l)
	for _, h := range heads {
		out = append(out, h...)
	}
	return append(out, 0x05, 0x00)
}

// indefiniteBER is depth indefinite-length SEQUENCEs (BER, not DER).
func indefiniteBER(depth int) []byte {
	return append(bytes.Repeat([]byte{0x30, 0x80}, depth), bytes.Repeat([]byte{0, 0}, depth)...)
}

// inContentInfo wraps inner as ContentInfo{signedData or authEnvelopedData, [0] inner}.
func inContentInfo(oid []byte, inner []byte) []byte {
	tlv := func(tag byte, v []byte) []byte {
		l := len(v)
		var h []byte
		switch {
		case l < 0x80:
			h = []byte{tag, byte(l)}
		case l < 0x10000:
			h = []byte{tag, 0x82, byte(l >> 8), byte(l)}
		default:
			h = []byte{tag, 0x83, byte(l >> 16), byte(l >> 8), byte(l)}
		}
		return append(h, v...)
	}
	return tlv(0x30, append(tlv(0x06, oid), tlv(0xa0, inner)...))
}

var (
	oidSignedData        = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02}
	oidAuthEnvelopedData = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17}
	derSHA256            = []byte{0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01}
	derSHA224            = []byte{0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04}
	derUnknownHash       = []byte{0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x63}
	derECDSAWithSHA256   = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
	derECDSAWithSHA224   = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x01}
	derUnknownSigAlg     = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x09}
)

// patchAfter replaces every occurrence of old by new (same length) at or after from.
func patchAfter(der []byte, from int, old, new []byte) []byte {
	out := bytes.Clone(der)
	n := bytes.ReplaceAll(out[from:], old, new)
	copy(out[from:], n)
	return out
}

// patchFirst replaces the first occurrence of old by new (same length): in a
// SignedData, the digestAlgorithms set, which comes before the content.
func patchFirst(der, old, new []byte) []byte {
	out := bytes.Clone(der)
	if i := bytes.Index(out, old); i >= 0 {
		copy(out[i:], new)
	}
	return out
}

// attacker is a key and certificates nobody in the SET PKI issued.
type attacker struct {
	key  *ecdsa.PrivateKey
	self *x509.Certificate // self-signed, merchant subject and policies
	ca   *x509.Certificate // a fake "Merchant CA" with the real one's name
	leaf *x509.Certificate // merchant certificate issued by the fake CA
}

func newAttacker(t *testing.T, b *bed) attacker {
	t.Helper()
	// The attacker's keys are software keys on purpose: they stand for somebody
	// else's, and nothing in the system may trust them.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	real := b.MerchantEnt.Sign.Cert
	serial := func() *big.Int { n, _ := rand.Int(rand.Reader, big.NewInt(1<<62)); return n }
	mk := func(tmpl, parent *x509.Certificate, signer crypto.Signer) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
		require.NoError(t, err)
		c, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		return c
	}
	leafTmpl := func() *x509.Certificate {
		return &x509.Certificate{SerialNumber: serial(), Subject: real.Subject, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			Policies: pki.Policies(pki.RoleMerchant, pki.PurposeSignature), BasicConstraintsValid: true}
	}
	a := attacker{key: key}
	self := leafTmpl()
	a.self = mk(self, self, key)
	mca := b.H.MCA.Certificate()
	caTmpl := &x509.Certificate{SerialNumber: serial(), Subject: mca.Subject, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, IsCA: true,
		BasicConstraintsValid: true, Policies: mca.Policies, SubjectKeyId: mca.SubjectKeyId}
	a.ca = mk(caTmpl, caTmpl, key)
	a.leaf = mk(leafTmpl(), a.ca, key)
	return a
}

// lyingSigner claims one public key and signs with another key.
type lyingSigner struct {
	pub crypto.PublicKey
	key crypto.Signer
}

func (l lyingSigner) Public() crypto.PublicKey { return l.pub }
func (l lyingSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return l.key.Sign(r, d, o)
}

// hostileCase is one request and the refusal it must get.
type hostileCase struct {
	name   string
	call   func(ctx context.Context) error
	reason setpb.Reason
	code   codes.Code
}

func testHostileClient(t *testing.T, b *bed) {
	ctx := context.Background()
	b.buy(t, systemtest.Alice, "book") // the gateway now caches the merchant's certificates
	gw := setpb.NewGatewayClient(b.GatewayConn)
	mer := setpb.NewMerchantClient(b.MerchantConn)
	gwKX := b.GatewayEnt.KXCert
	merchant := b.MerchantEnt.Sign
	att := newAttacker(t, b)

	// A well-formed request the tests take apart (its order is created before the
	// snapshots, so the merchant's row count is settled).
	good := newAuthRequest(t, b, systemtest.Alice)
	goodContent, err := setproto.Marshal(good)
	require.NoError(t, err)
	sign := func(content []byte, kind setpb.ContentKind, key crypto.Signer, cert *x509.Certificate, embed []*x509.Certificate) []byte {
		der, err := cms.Sign(content, cms.SignOptions{ContentType: setproto.ContentType(kind), Signer: key, Certificate: cert,
			Certificates: embed, SigningTime: time.Now()})
		require.NoError(t, err)
		return der
	}
	seal := func(inner []byte, kind setpb.ContentKind) []byte {
		env, err := setproto.Seal(kind, inner, gwKX, setproto.EnvelopeOptions{})
		require.NoError(t, err)
		return env
	}
	authorize := func(env []byte, refs ...[]byte) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := gw.Authorize(ctx, &setpb.Enveloped{Cms: env, CertRefs: refs})
			return err
		}
	}
	// The merchant's signature without embedded certificates (the gateway has them by
	// thumbprint), so the only algorithm identifiers outside the content are the
	// SignedData's own.
	bySig := sign(goodContent, setpb.ContentKind_AUTH_REQUEST, merchant.Key, merchant.Cert, nil)
	refs := merchant.Thumbprints()
	contentEnd := bytes.Index(bySig, goodContent) + len(goodContent)
	goodEnv := seal(bySig, setpb.ContentKind_AUTH_REQUEST)

	reordered := func() []byte {
		// The same fields, last first: valid protobuf, not the canonical encoding.
		var out []byte
		rest := goodContent
		var fields [][]byte
		for len(rest) > 0 {
			_, _, n := protowire.ConsumeField(rest)
			require.Positive(t, n)
			fields = append([][]byte{rest[:n]}, fields...)
			rest = rest[n:]
		}
		for _, f := range fields {
			out = append(out, f...)
		}
		require.NotEqual(t, goodContent, out)
		return out
	}()
	unknownField := protowire.AppendBytes(protowire.AppendTag(bytes.Clone(goodContent), 99, protowire.BytesType), []byte("x"))
	manyCerts := append(append(append([]*x509.Certificate{}, merchant.Certificates()...), merchant.Certificates()...), merchant.Certificates()...)
	tooManyRefs := append(append(append([][]byte{}, refs...), refs...), refs...)
	cbc, err := cms.Encrypt(bySig, cms.EncryptOptions{Recipients: []*x509.Certificate{gwKX}, ContentType: setproto.ContentType(setpb.ContentKind_AUTH_REQUEST), Cipher: cms.AES256CBC})
	require.NoError(t, err)
	toMerchant, err := setproto.Seal(setpb.ContentKind_AUTH_REQUEST, bySig, b.MerchantEnt.KXCert, setproto.EnvelopeOptions{})
	require.NoError(t, err)
	flipped := bytes.Clone(goodEnv)
	flipped[len(flipped)-3] ^= 0x40 // in the GCM tag
	// The RSA-OAEP wrapped content key (an OCTET STRING of the modulus size) broken:
	// the unwrap fails in the token, and the answer must not differ from a bad tag.
	badKey := bytes.Clone(goodEnv)
	ek := bytes.Index(badKey, []byte{0x04, 0x82, 0x01, 0x00})
	require.Positive(t, ek)
	badKey[ek+4+100] ^= 0x01
	// An envelope of payment instructions relabelled as an authorization request: its
	// authAttrs still say PI, so it is refused before the gateway's token is used.
	relabelled := retype(t, seal(bySig, setpb.ContentKind_PAYMENT_INSTRUCTIONS), setproto.ContentType(setpb.ContentKind_AUTH_REQUEST))
	swapped := bytes.Clone(bySig)
	swapped[contentEnd-40] ^= 0x01 // content changed after signing
	ccaKey, err := b.caTok.FindKey(ctx, "setpay-cca")
	require.NoError(t, err)
	wrongCA := func() *x509.Certificate {
		// A merchant certificate for the merchant's own key, issued by the cardholder CA.
		real := merchant.Cert
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: real.Subject, NotBefore: real.NotBefore,
			NotAfter: real.NotAfter, KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
			Policies: pki.Policies(pki.RoleMerchant, pki.PurposeSignature)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, b.H.CCA.Certificate(), real.PublicKey, ccaKey)
		require.NoError(t, err)
		c, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		return c
	}()
	ch := b.Cardholders[0].Identity

	cases := []hostileCase{
		// Size.
		{"empty envelope", authorize(nil), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"envelope over the protocol limit", authorize(make([]byte, setproto.MaxMessageSize+1)), setpb.Reason_MALFORMED, codes.InvalidArgument},
		// Structure.
		{"deeply nested DER", authorize(nestedDER(40_000)), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"deeply nested DER in a ContentInfo", authorize(inContentInfo(oidAuthEnvelopedData, nestedDER(40_000))), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"deeply nested indefinite BER", authorize(inContentInfo(oidAuthEnvelopedData, indefiniteBER(60_000))), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"random bytes", authorize(func() []byte { r := make([]byte, 4096); _, _ = rand.Read(r); return r }()), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"truncated to 10 bytes", authorize(goodEnv[:10]), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"truncated by half", authorize(goodEnv[:len(goodEnv)/2]), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"truncated by one byte", authorize(goodEnv[:len(goodEnv)-1]), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"trailing garbage", authorize(append(bytes.Clone(goodEnv), 0, 0)), setpb.Reason_MALFORMED, codes.InvalidArgument},
		// Content types and envelope forms.
		{"SignedData instead of an envelope", authorize(bySig), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"envelope of payment instructions", authorize(seal(bySig, setpb.ContentKind_PAYMENT_INSTRUCTIONS)), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"CBC EnvelopedData (no integrity)", authorize(cbc), setpb.Reason_UNSUPPORTED, codes.InvalidArgument},
		{"envelope for another recipient", authorize(toMerchant), setpb.Reason_DECRYPT_FAILED, codes.PermissionDenied},
		{"GCM tag flipped", authorize(flipped), setpb.Reason_DECRYPT_FAILED, codes.PermissionDenied},
		{"wrapped content key broken", authorize(badKey), setpb.Reason_DECRYPT_FAILED, codes.PermissionDenied},
		{"content type relabelled (authAttrs disagree)", authorize(relabelled), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"signed PInitRes in an authorization envelope", authorize(seal(sign(goodContent, setpb.ContentKind_PINIT_RES, merchant.Key, merchant.Cert, nil), setpb.ContentKind_AUTH_REQUEST), refs...), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"garbage inside a valid envelope", authorize(seal(nestedDER(10_000), setpb.ContentKind_AUTH_REQUEST)), setpb.Reason_MALFORMED, codes.InvalidArgument},
		// Algorithm downgrades and unknown algorithms in the SignerInfo.
		{"digest SHA-224", authorize(seal(patchAfter(bySig, contentEnd, derSHA256, derSHA224), setpb.ContentKind_AUTH_REQUEST), refs...), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"digest unknown OID", authorize(seal(patchAfter(bySig, contentEnd, derSHA256, derUnknownHash), setpb.ContentKind_AUTH_REQUEST), refs...), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"signature ecdsa-with-SHA224", authorize(seal(patchAfter(bySig, contentEnd, derECDSAWithSHA256, derECDSAWithSHA224), setpb.ContentKind_AUTH_REQUEST), refs...), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"signature unknown OID", authorize(seal(patchAfter(bySig, contentEnd, derECDSAWithSHA256, derUnknownSigAlg), setpb.ContentKind_AUTH_REQUEST), refs...), setpb.Reason_MALFORMED, codes.InvalidArgument},
		// Signatures and certificates.
		{"content changed after signing", authorize(seal(swapped, setpb.ContentKind_AUTH_REQUEST), refs...), setpb.Reason_BAD_SIGNATURE, codes.Unauthenticated},
		{"signed by an unknown key as the merchant", authorize(seal(sign(goodContent, setpb.ContentKind_AUTH_REQUEST, lyingSigner{merchant.Cert.PublicKey, att.key}, merchant.Cert, nil), setpb.ContentKind_AUTH_REQUEST), refs...), setpb.Reason_BAD_SIGNATURE, codes.Unauthenticated},
		{"self-signed merchant certificate", authorize(seal(sign(goodContent, setpb.ContentKind_AUTH_REQUEST, att.key, att.self, []*x509.Certificate{att.self}), setpb.ContentKind_AUTH_REQUEST)), setpb.Reason_CERT_UNTRUSTED, codes.Unauthenticated},
		{"chain through a fake Merchant CA", authorize(seal(sign(goodContent, setpb.ContentKind_AUTH_REQUEST, att.key, att.leaf, []*x509.Certificate{att.leaf, att.ca}), setpb.ContentKind_AUTH_REQUEST)), setpb.Reason_CERT_UNTRUSTED, codes.Unauthenticated},
		{"merchant certificate from the cardholder CA", authorize(seal(sign(goodContent, setpb.ContentKind_AUTH_REQUEST, merchant.Key, wrongCA, []*x509.Certificate{wrongCA, b.H.CCA.Certificate()}), setpb.ContentKind_AUTH_REQUEST)), setpb.Reason_CERT_WRONG_ROLE, codes.Unauthenticated},
		{"signed by a cardholder", authorize(seal(sign(goodContent, setpb.ContentKind_AUTH_REQUEST, ch.Key, ch.Cert, append([]*x509.Certificate{ch.Cert}, ch.Chain...)), setpb.ContentKind_AUTH_REQUEST)), setpb.Reason_CERT_WRONG_ROLE, codes.Unauthenticated},
		{"unknown certificate reference", authorize(goodEnv, make([]byte, 32)), setpb.Reason_CERT_UNKNOWN, codes.FailedPrecondition},
		{"certificate reference not a thumbprint", authorize(goodEnv, []byte("short")), setpb.Reason_MALFORMED, codes.InvalidArgument},
		// Chain length (pki.MaxChainLength) through the RPC.
		{"more embedded certificates than the limit", authorize(seal(sign(goodContent, setpb.ContentKind_AUTH_REQUEST, merchant.Key, merchant.Cert, manyCerts), setpb.ContentKind_AUTH_REQUEST)), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"more certificate references than the limit", authorize(goodEnv, tooManyRefs...), setpb.Reason_MALFORMED, codes.InvalidArgument},
		// Encoding of the signed content.
		{"fields reordered", authorize(seal(sign(reordered, setpb.ContentKind_AUTH_REQUEST, merchant.Key, merchant.Cert, nil), setpb.ContentKind_AUTH_REQUEST), refs...), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"unknown field", authorize(seal(sign(unknownField, setpb.ContentKind_AUTH_REQUEST, merchant.Key, merchant.Cert, nil), setpb.ContentKind_AUTH_REQUEST), refs...), setpb.Reason_MALFORMED, codes.InvalidArgument},
	}
	for _, p := range [][]byte{
		patchAfter(bySig, contentEnd, derSHA256, derSHA224), patchAfter(bySig, contentEnd, derECDSAWithSHA256, derUnknownSigAlg),
		patchFirst(bySig, derSHA256, derSHA224),
	} {
		require.NotEqual(t, bySig, p, "the patch must hit")
		require.Len(t, p, len(bySig))
	}
	require.Less(t, bytes.Index(bySig, derSHA256), contentEnd-len(goodContent), "digestAlgorithms precede the content")
	require.Len(t, manyCerts, 9)
	require.Greater(t, len(manyCerts), pki.MaxChainLength)
	require.Greater(t, len(tooManyRefs), pki.MaxChainLength)
	cases = append(cases, merchantCases(t, b, mer, att)...)
	cases = append(cases, agreementCases(t, b, mer)...)

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := b.snapshot(t)
			err := tc.call(ctx)
			requireRefused(t, err, tc.reason)
			assert.Equal(t, tc.code, status.Code(err), "%v", err)
			b.requireUnchanged(t, before)
		})
	}

	t.Run("decryption failures look alike", func(t *testing.T) {
		// A broken tag and a broken wrapped key: same code, same reason, same text.
		errTag := authorize(flipped)(ctx)
		errKey := authorize(badKey)(ctx)
		require.Error(t, errTag)
		require.Error(t, errKey)
		assert.Equal(t, status.Code(errTag), status.Code(errKey))
		assert.Equal(t, status.Convert(errTag).Message(), status.Convert(errKey).Message())
	})
	t.Run("initiations store nothing", func(t *testing.T) { testInitiationStoresNothing(t, b) })

	t.Run("over the gRPC message limit", func(t *testing.T) {
		before := b.snapshot(t)
		_, err := gw.Authorize(ctx, &setpb.Enveloped{Cms: make([]byte, 5<<20)})
		require.Error(t, err)
		// gRPC refuses it before any handler: a transport status, no SET detail.
		assert.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
		b.requireUnchanged(t, before)
	})

	t.Run("flood of envelopes the token must open", func(t *testing.T) {
		// Each request costs the gateway an RSA unwrap in its token before it can refuse.
		before := b.snapshot(t)
		env := seal(nestedDER(100), setpb.ContentKind_AUTH_REQUEST)
		var wg sync.WaitGroup
		errs := make(chan error, 96)
		for range 96 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := gw.Authorize(ctx, &setpb.Enveloped{Cms: env})
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			requireRefused(t, err, setpb.Reason_MALFORMED)
		}
		b.requireUnchanged(t, before)
	})

	t.Run("every single-byte mutation of an envelope", func(t *testing.T) {
		// Deterministic positions spread over the whole envelope: each mutated copy is
		// refused with a protocol reason (never INTERNAL, never accepted).
		before := b.snapshot(t)
		rng := mrand.New(mrand.NewPCG(1, 2))
		reasons := map[setpb.Reason]int{}
		for i := 0; i < 150; i++ {
			pos := i * len(goodEnv) / 150
			m := bytes.Clone(goodEnv)
			m[pos] ^= byte(1 + rng.IntN(255))
			_, err := gw.Authorize(ctx, &setpb.Enveloped{Cms: m, CertRefs: refs})
			require.Error(t, err, "mutation at %d accepted", pos)
			r := setproto.ReasonOf(err)
			assert.NotEqual(t, setpb.Reason_INTERNAL, r, "mutation at %d: %v", pos, err)
			reasons[r]++
		}
		t.Logf("refusals by reason: %v", reasons)
		b.requireUnchanged(t, before)
	})

	t.Run("every bit flip of the SignedData outside its content", func(t *testing.T) {
		// The content is covered by messageDigest; everything else (version,
		// algorithms, signer identifier, attributes, signature) must be refused too:
		// the unsigned parts because they must be exactly what RFC 5652 and the signer
		// require.
		contentStart := contentEnd - len(goodContent)
		before := b.snapshot(t)
		for pos := range bySig {
			if pos >= contentStart && pos < contentEnd {
				continue
			}
			m := bytes.Clone(bySig)
			m[pos] ^= 0x01
			_, err := gw.Authorize(ctx, &setpb.Enveloped{Cms: seal(m, setpb.ContentKind_AUTH_REQUEST), CertRefs: refs})
			require.Error(t, err, "flip at %d accepted", pos)
			assert.NotEqual(t, setpb.Reason_INTERNAL, setproto.ReasonOf(err), "flip at %d: %v", pos, err)
		}
		b.requireUnchanged(t, before)
	})

	t.Run("unsigned SignedData header", func(t *testing.T) {
		// Neither the version nor the digestAlgorithms set is signed. RFC 5652 §5.1
		// fixes the version at 3 for a non-data eContentType, and cms documents an
		// allow-list of SHA-256/384/512: a request whose header says version 2, or
		// SHA-224 in the set, must be refused, or signed messages are malleable (the
		// same signature over different bytes). Fresh requests, so that an acceptance
		// cannot disturb the cases above.
		for _, tc := range []struct {
			name  string
			patch func(sd []byte) []byte
		}{
			{"version 2", func(sd []byte) []byte {
				return patchFirst(sd, []byte{0x02, 0x01, 0x03, 0x31, 0x0d}, []byte{0x02, 0x01, 0x02, 0x31, 0x0d})
			}},
			{"SHA-224 in digestAlgorithms", func(sd []byte) []byte { return patchFirst(sd, derSHA256, derSHA224) }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				fresh, err := setproto.Marshal(newAuthRequest(t, b, systemtest.Alice))
				require.NoError(t, err)
				sd := sign(fresh, setpb.ContentKind_AUTH_REQUEST, merchant.Key, merchant.Cert, nil)
				patched := tc.patch(sd)
				require.NotEqual(t, sd, patched)
				before := b.snapshot(t)
				_, err = gw.Authorize(ctx, &setpb.Enveloped{Cms: seal(patched, setpb.ContentKind_AUTH_REQUEST), CertRefs: refs})
				requireRefused(t, err, setpb.Reason_MALFORMED)
				b.requireUnchanged(t, before)
			})
		}
	})

	t.Run("transport", func(t *testing.T) {
		before := b.snapshot(t)
		// Raw bytes instead of TLS, and a TLS handshake abandoned half way.
		for _, send := range [][]byte{bytes.Repeat([]byte("GET / HTTP/1.1\r\n"), 100), nestedDER(1000)} {
			c, err := net.Dial("tcp", b.GatewayAddr)
			require.NoError(t, err)
			_, _ = c.Write(send)
			_ = c.Close()
		}
		raw, err := net.Dial("tcp", b.GatewayAddr)
		require.NoError(t, err)
		tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true}) // an attacker: it trusts anything
		_ = tc.SetDeadline(time.Now().Add(2 * time.Second))
		_ = tc.Handshake() // the gateway asks for a client certificate this client has not got
		_ = tc.Close()
		// The gateway requires a client certificate: a wallet-style connection is refused.
		conn, err := grpc.NewClient(b.GatewayAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(nil, b.TLS.Pool(), "127.0.0.1"))))
		require.NoError(t, err)
		_, err = setpb.NewGatewayClient(conn).Authorize(ctx, &setpb.Enveloped{Cms: goodEnv, CertRefs: refs})
		assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
		require.NoError(t, conn.Close())
		b.requireUnchanged(t, before)
	})

	t.Run("still serves honest clients", func(t *testing.T) {
		b.buy(t, systemtest.Frank, "coffee")
	})
}

// merchantCases are hostile wallets.
func merchantCases(t *testing.T, b *bed, mer setpb.MerchantClient, att attacker) []hostileCase {
	ctx := context.Background()
	w, err := b.Wallet(systemtest.Alice)
	require.NoError(t, err)
	s, err := w.Start(ctx, "book")
	require.NoError(t, err)
	req, err := w.Prepare(s)
	require.NoError(t, err)
	purchase := func(mut func(r *setpb.PurchaseRequest)) func(context.Context) error {
		r := &setpb.PurchaseRequest{OrderInfo: req.GetOrderInfo(), PiHash: req.GetPiHash(), PiEnvelope: req.GetPiEnvelope(), DualSignature: req.GetDualSignature()}
		mut(r)
		return func(ctx context.Context) error {
			_, err := mer.Purchase(ctx, r)
			return err
		}
	}
	oiReordered := func() []byte {
		var fields [][]byte
		rest := req.GetOrderInfo()
		for len(rest) > 0 {
			_, _, n := protowire.ConsumeField(rest)
			require.Positive(t, n)
			fields = append([][]byte{rest[:n]}, fields...)
			rest = rest[n:]
		}
		return bytes.Join(fields, nil)
	}()
	dualByAttacker, err := cms.Sign(setproto.DualContent(req.GetPiHash(), setproto.Hash(req.GetOrderInfo())), cms.SignOptions{
		ContentType: setproto.ContentType(setpb.ContentKind_DUAL_SIGNATURE), Signer: att.key, Certificate: att.self,
		Certificates: []*x509.Certificate{att.self}, SigningTime: time.Now()})
	require.NoError(t, err)
	inquiry := func(der []byte) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := mer.Inquiry(ctx, &setpb.Signed{Cms: der})
			return err
		}
	}
	pinit := func(r *setpb.PInitReq) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := mer.PurchaseInit(ctx, r)
			return err
		}
	}
	chall := make([]byte, 32)
	return []hostileCase{
		{"merchant: empty purchase initiation", pinit(&setpb.PInitReq{}), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"merchant: initiation for another brand", pinit(&setpb.PInitReq{Rrpid: "r1", Brand: "Other", Language: "en", ChallEc: chall, OfferId: "book"}), setpb.Reason_UNSUPPORTED, codes.InvalidArgument},
		{"merchant: initiation with a huge thumbprint list", pinit(&setpb.PInitReq{Rrpid: "r1", Brand: "SETPay", Language: "en", ChallEc: chall, OfferId: "book",
			KnownThumbprints: bytes.Split(bytes.Repeat([]byte("x"), 4000), nil)}), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"merchant: empty purchase", purchase(func(r *setpb.PurchaseRequest) { *r = setpb.PurchaseRequest{} }), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"merchant: OI over the limit", purchase(func(r *setpb.PurchaseRequest) { r.OrderInfo = make([]byte, setproto.MaxMessageSize+1) }), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"merchant: OI fields reordered", purchase(func(r *setpb.PurchaseRequest) { r.OrderInfo = oiReordered }), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"merchant: dual signature deeply nested", purchase(func(r *setpb.PurchaseRequest) { r.DualSignature = inContentInfo(oidSignedData, nestedDER(40_000)) }), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"merchant: dual signature truncated", purchase(func(r *setpb.PurchaseRequest) { r.DualSignature = r.DualSignature[:len(r.DualSignature)-7] }), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"merchant: dual signature by an unknown key", purchase(func(r *setpb.PurchaseRequest) { r.DualSignature = dualByAttacker }), setpb.Reason_CERT_UNTRUSTED, codes.Unauthenticated},
		{"merchant: H(PI) changed", purchase(func(r *setpb.PurchaseRequest) { r.PiHash = make([]byte, 32) }), setpb.Reason_BAD_SIGNATURE, codes.Unauthenticated},
		{"merchant: inquiry of random bytes", inquiry(bytes.Repeat([]byte{0x30}, 1000)), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"merchant: inquiry deeply nested", inquiry(inContentInfo(oidSignedData, indefiniteBER(60_000))), setpb.Reason_MALFORMED, codes.InvalidArgument},
		{"merchant: inquiry signed as a dual signature", inquiry(req.GetDualSignature()), setpb.Reason_MALFORMED, codes.InvalidArgument},
	}
}

// testEveryGatewayMethodRefusesGarbage sends hostile envelopes to every method the
// Gateway service declares (the lifecycle methods included, as they are added):
// each answers Unimplemented or a MALFORMED refusal, and nothing is stored.
func testEveryGatewayMethodRefusesGarbage(t *testing.T, b *bed) {
	ctx := context.Background()
	inputs := map[string][]byte{
		"empty": nil, "nested": nestedDER(40_000), "indefinite": inContentInfo(oidAuthEnvelopedData, indefiniteBER(60_000)),
		"over limit": make([]byte, setproto.MaxMessageSize+1),
	}
	// The merchant's connection to the gateway is made on first use; make it now so
	// its transport goroutines are in the baseline.
	_, err := setpb.NewGatewayClient(b.GatewayConn).Authorize(ctx, &setpb.Enveloped{})
	requireRefused(t, err, setpb.Reason_MALFORMED)
	for _, m := range setpb.Gateway_ServiceDesc.Methods {
		t.Run(m.MethodName, func(t *testing.T) {
			before := b.snapshot(t)
			for name, in := range inputs {
				err := b.GatewayConn.Invoke(ctx, "/"+setpb.Gateway_ServiceDesc.ServiceName+"/"+m.MethodName,
					&setpb.Enveloped{Cms: in}, &setpb.Enveloped{})
				require.Error(t, err, name)
				if status.Code(err) == codes.Unimplemented {
					t.Logf("%s not implemented yet", m.MethodName)
					continue
				}
				requireRefused(t, err, setpb.Reason_MALFORMED)
				assert.Equal(t, codes.InvalidArgument, status.Code(err), name)
			}
			b.requireUnchanged(t, before)
		})
	}
}
