package interop_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/setpay/setpay/cms"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/testenv"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/softhsm/softhsmtest"
	"github.com/setpay/setpay/system/systemtest"
)

// engine is OpenSSL with libp11's pkcs11 engine pointed at the test binary's
// SoftHSM store.
type engine struct {
	env []string
}

func newEngine(t *testing.T, tok *hsm.Token) engine {
	t.Helper()
	needTool(t, "openssl")
	if softhsmtest.Kind() != softhsmtest.SoftHSM {
		t.Skip("the engine tests drive SoftHSM")
	}
	out, err := exec.Command("openssl", "version", "-e").Output()
	require.NoError(t, err)
	m := regexp.MustCompile(`ENGINESDIR: "([^"]+)"`).FindSubmatch(out)
	require.NotNil(t, m, "%s", out)
	so := filepath.Join(string(m[1]), "pkcs11.so")
	testenv.File(t, "libengine-pkcs11-openssl", so, "scripts/install-deps.sh installs it")
	conf := filepath.Join(t.TempDir(), "openssl.cnf")
	require.NoError(t, os.WriteFile(conf, []byte(`openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = `+so+`
MODULE_PATH = `+tok.Module().Path()+`
init = 0
`), 0o600))
	return engine{env: append(softhsmtest.Env(t), "OPENSSL_CONF="+conf)}
}

// keyURI names a private key in the token for the engine. The PIN goes into the URI
// only here, in a test, with the fixed test PIN; production code refuses pin-value.
func keyURI(tok *hsm.Token, label string) string {
	return "pkcs11:token=" + tok.Label() + ";object=" + label + ";type=private?pin-value=" + softhsmtest.PIN
}

func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, b, 0o600))
	return p
}

// signedKinds are the kinds signed on their own (OI and PI are covered by the dual
// signature): a purchase, an inquiry and the payment lifecycle after it.
func signedKinds() []setpb.ContentKind {
	return []setpb.ContentKind{
		setpb.ContentKind_PINIT_RES, setpb.ContentKind_DUAL_SIGNATURE, setpb.ContentKind_PURCHASE_RESPONSE,
		setpb.ContentKind_AUTH_REQUEST, setpb.ContentKind_AUTH_RESPONSE, setpb.ContentKind_CAPTURE_TOKEN,
		setpb.ContentKind_INQUIRY_REQUEST, setpb.ContentKind_INQUIRY_RESPONSE,
		setpb.ContentKind_CAPTURE_REQUEST, setpb.ContentKind_AUTH_REVERSAL_REQUEST, setpb.ContentKind_CAPTURE_REVERSAL_REQUEST,
		setpb.ContentKind_CREDIT_REQUEST, setpb.ContentKind_CREDIT_REVERSAL_REQUEST, setpb.ContentKind_BATCH_ADMIN_REQUEST,
		setpb.ContentKind_GATEWAY_INQUIRY_REQUEST, setpb.ContentKind_LIFECYCLE_RESPONSE,
	}
}

// kindOf names a protocol content type.
func kindOf(t *testing.T, oid x509.OID) setpb.ContentKind {
	t.Helper()
	for k := range setpb.ContentKind_name {
		if oid.Equal(setproto.ContentType(setpb.ContentKind(k))) {
			return setpb.ContentKind(k)
		}
	}
	t.Fatalf("content type %s is no protocol kind", oid)
	return 0
}

// envelopeKind is the content kind an envelope says it carries.
func envelopeKind(t *testing.T, der []byte) setpb.ContentKind {
	t.Helper()
	env, err := cms.ParseEnvelope(der)
	require.NoError(t, err)
	return kindOf(t, env.ContentType())
}

// lifecycle runs every lifecycle operation on the authorized purchase xid.
func lifecycle(t *testing.T, b *bed, xid string) {
	t.Helper()
	ctx := context.Background()
	m := b.Merchant
	_, err := m.Batch(ctx, "", "batch-1", setpb.BatchAction_BATCH_OPEN)
	require.NoError(t, err)
	_, err = m.Capture(ctx, merchant.LifecycleInput{RRPID: "cap-1", XID: xid, Amount: 10_00, BatchID: "batch-1"})
	require.NoError(t, err)
	_, err = m.ReverseCapture(ctx, merchant.LifecycleInput{RRPID: "caprev-1", XID: xid, Amount: 5_00, TargetID: "cap-1"})
	require.NoError(t, err)
	_, err = m.Credit(ctx, merchant.LifecycleInput{RRPID: "cred-1", XID: xid, Amount: 2_00})
	require.NoError(t, err)
	_, err = m.ReverseCredit(ctx, merchant.LifecycleInput{RRPID: "crev-1", XID: xid, Amount: 1_00, TargetID: "cred-1"})
	require.NoError(t, err)
	_, err = m.ReverseAuthorization(ctx, merchant.LifecycleInput{XID: xid})
	require.NoError(t, err)
	_, err = m.GatewayInquiry(ctx, "", xid)
	require.NoError(t, err)
	_, err = m.Batch(ctx, "", "batch-1", setpb.BatchAction_BATCH_CLOSE)
	require.NoError(t, err)
}

// captured is one message of every kind from real purchases, plus the envelopes.
type captured struct {
	signed    map[setpb.ContentKind][]byte
	authReqs  [][]byte // AuthEnvelopedData(AuthRequest) to the gateway
	piEnvs    [][]byte // AuthEnvelopedData(PI) to the gateway
	authResps [][]byte // AuthEnvelopedData(AuthResponse) to the merchant
}

func capture(t *testing.T, b *bed) captured {
	t.Helper()
	ctx := context.Background()
	w, err := b.Wallet(systemtest.Alice)
	require.NoError(t, err)
	r, err := w.Buy(ctx, "book") // authorization: the answer carries a capture token
	require.NoError(t, err)
	_, err = w.Inquire(ctx, r.XID)
	require.NoError(t, err)
	lifecycle(t, b, r.XID)

	c := captured{signed: map[setpb.ContentKind][]byte{}}
	add := func(der []byte) {
		sd, err := cms.ParseSignedData(der)
		require.NoError(t, err)
		for _, k := range signedKinds() {
			if sd.ContentType().Equal(setproto.ContentType(k)) {
				c.signed[k] = der
			}
		}
	}
	for _, m := range append(b.merRec.Requests(), b.merRec.Responses()...) {
		switch m := m.(type) {
		case *setpb.Signed:
			add(m.GetCms())
		case *setpb.PurchaseRequest:
			add(m.GetDualSignature())
			c.piEnvs = append(c.piEnvs, m.GetPiEnvelope())
		}
	}
	for _, m := range b.gwRec.Requests() {
		env := m.(*setpb.Enveloped).GetCms()
		kind := envelopeKind(t, env)
		inner, err := setproto.Unseal(env, kind, b.GatewayEnt.KXCert, b.GatewayEnt.KXKey)
		require.NoError(t, err)
		add(inner)
		if kind == setpb.ContentKind_AUTH_REQUEST {
			c.authReqs = append(c.authReqs, env)
		}
	}
	for _, m := range b.gwRec.Responses() {
		env := m.(*setpb.Enveloped).GetCms()
		kind := envelopeKind(t, env)
		inner, err := setproto.Unseal(env, kind, b.MerchantEnt.KXCert, b.MerchantEnt.KXKey)
		require.NoError(t, err)
		add(inner)
		if kind != setpb.ContentKind_AUTH_RESPONSE {
			continue
		}
		c.authResps = append(c.authResps, env)
		sd, err := cms.ParseSignedData(inner)
		require.NoError(t, err)
		res, err := setproto.ParseAuthResponse(sd.Content())
		require.NoError(t, err)
		add(res.GetCaptureToken())
	}
	for _, k := range signedKinds() {
		_, ok := c.signed[k]
		require.True(t, ok, "no %s captured", k)
	}
	require.NotEmpty(t, c.authReqs)
	require.NotEmpty(t, c.piEnvs)
	require.NotEmpty(t, c.authResps)
	return c
}

// testOpenSSL: the OpenSSL checks.
func testOpenSSL(t *testing.T, b *bed) {
	needTool(t, "openssl")
	c := capture(t, b)
	files := b.writePEM(t)
	t.Run("verify with CRLs", func(t *testing.T) { testVerifyWithCRLs(t, b, c, files) })
	t.Run("certificates and CRLs", func(t *testing.T) { testVerifyCertificates(t, b, files) })
	t.Run("decrypt in the token", func(t *testing.T) { testEngineDecrypt(t, b, c) })
	t.Run("envelopes made by OpenSSL", func(t *testing.T) { testOpenSSLEnvelopes(t, b, c) })
	t.Run("request made by OpenSSL", func(t *testing.T) { testOpenSSLAuthRequest(t, b) })
}

// testVerifyWithCRLs extends system's TestOpenSSLVerifiesEveryMessage: every signed
// kind verifies with revocation checking on the whole chain (-crl_check_all, the
// CRLs published by each CA), and the same message with one content byte flipped
// fails, so OpenSSL's success means something.
func testVerifyWithCRLs(t *testing.T, b *bed, c captured, f pemFiles) {
	for _, kind := range signedKinds() {
		t.Run(kind.String(), func(t *testing.T) {
			der := c.signed[kind]
			in := writeTemp(t, "msg.der", der)
			args := []string{"cms", "-verify", "-inform", "DER", "-in", in, "-CAfile", f.rootAndCAs,
				"-certfile", f.leaves, "-purpose", "any", "-crl_check_all", "-out", os.DevNull}
			out, err := run(t, nil, "openssl", args...)
			require.NoError(t, err, "%s", out)
			assert.Contains(t, out, "Verification successful")

			sd, err := cms.ParseSignedData(der)
			require.NoError(t, err)
			i := bytes.Index(der, sd.Content())
			require.GreaterOrEqual(t, i, 0)
			bad := bytes.Clone(der)
			bad[i+len(sd.Content())/2] ^= 0x01
			args[4] = writeTemp(t, "bad.der", bad)
			out, err = run(t, nil, "openssl", args...)
			assert.Error(t, err, "OpenSSL must refuse a flipped content byte: %s", out)
			assert.NotContains(t, out, "Verification successful")
		})
	}
}

// testVerifyCertificates: every certificate the bed issued to the gateway, the
// merchant and the cardholders passes `openssl verify -crl_check_all`, and a revoked
// cardholder certificate fails it once the CCA's new CRL is out.
func testVerifyCertificates(t *testing.T, b *bed, f pemFiles) {
	leaves := map[string]*x509.Certificate{
		"gateway-sign": b.GatewayEnt.Sign.Cert, "gateway-kx": b.GatewayEnt.KXCert,
		"merchant-sign": b.MerchantEnt.Sign.Cert, "merchant-kx": b.MerchantEnt.KXCert,
	}
	for i, ch := range b.Cardholders {
		leaves["cardholder-"+ch.Name] = b.Cardholders[i].Identity.Cert
	}
	for name, cert := range leaves {
		t.Run(name, func(t *testing.T) {
			p := writeTemp(t, "leaf.pem", pki.EncodePEM(cert))
			out, err := run(t, nil, "openssl", "verify", "-CAfile", f.root, "-untrusted", f.cas,
				"-CRLfile", f.crls, "-crl_check_all", "-x509_strict", p)
			require.NoError(t, err, "%s", out)
			assert.Contains(t, out, ": OK")
		})
	}
	for _, crl := range b.CRLs.All() {
		t.Run("CRL "+crl.Issuer.CommonName, func(t *testing.T) {
			p := writeTemp(t, "crl.pem", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl.Raw}))
			out, err := run(t, nil, "openssl", "crl", "-in", p, "-CAfile", f.rootAndCAs, "-noout")
			require.NoError(t, err, "%s", out)
			assert.Contains(t, out, "verify OK")
		})
	}
	t.Run("revoked cardholder", func(t *testing.T) {
		ctx := context.Background()
		ch, err := b.IssueCardholder(ctx, b.walTok, systemtest.Cards()[systemtest.Frank])
		require.NoError(t, err)
		require.NoError(t, b.H.CCA.Revoke(ctx, ch.Identity.Cert.SerialNumber, 1))
		require.NoError(t, b.PublishCRLs(ctx))
		g := b.writePEM(t)
		p := writeTemp(t, "leaf.pem", pki.EncodePEM(ch.Identity.Cert))
		out, err := run(t, nil, "openssl", "verify", "-CAfile", g.root, "-untrusted", g.cas,
			"-CRLfile", g.crls, "-crl_check_all", p)
		assert.Error(t, err)
		assert.Contains(t, out, "certificate revoked")
	})
}

// testEngineDecrypt opens the PI and authorization envelopes with `openssl cms
// -decrypt` and the gateway's key-exchange key inside its token (libp11 engine), and
// the authorization answer with the merchant's; the plaintext is what setpay reads.
// With SoftHSM the engine may fall back to raw RSA and do OAEP itself when the token
// refuses the OAEP parameters, so this proves OpenSSL reads our envelopes and
// reaches the token key, not which mechanism the token ran.
func testEngineDecrypt(t *testing.T, b *bed, c captured) {
	cases := []struct {
		name  string
		envs  [][]byte
		kind  setpb.ContentKind
		tok   *hsm.Token
		label string
		cert  *x509.Certificate
	}{
		{"authorization request", c.authReqs, setpb.ContentKind_AUTH_REQUEST, b.gwTok, "gateway-gw-1-kx", b.GatewayEnt.KXCert},
		{"payment instructions", c.piEnvs, setpb.ContentKind_PAYMENT_INSTRUCTIONS, b.gwTok, "gateway-gw-1-kx", b.GatewayEnt.KXCert},
		{"authorization response", c.authResps, setpb.ContentKind_AUTH_RESPONSE, b.merTok, "merchant-shop-1-kx", b.MerchantEnt.KXCert},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, tc.tok)
			dk := b.GatewayEnt.KXKey
			if tc.tok == b.merTok {
				dk = b.MerchantEnt.KXKey
			}
			for _, env := range tc.envs {
				want, err := setproto.Unseal(env, tc.kind, tc.cert, dk)
				require.NoError(t, err)
				in := writeTemp(t, "env.der", env)
				outFile := filepath.Join(t.TempDir(), "plain.bin")
				out, err := run(t, e.env, "openssl", "cms", "-decrypt", "-inform", "DER", "-in", in,
					"-recip", writeTemp(t, "recip.pem", pki.EncodePEM(tc.cert)),
					"-engine", "pkcs11", "-keyform", "engine", "-inkey", keyURI(tc.tok, tc.label), "-binary", "-out", outFile)
				require.NoError(t, err, "%s", out)
				got, err := os.ReadFile(outFile)
				require.NoError(t, err)
				assert.Equal(t, want, got)
			}
		})
	}
}

// opensslEncrypt envelopes content to the certificate with OpenSSL: RSA-OAEP key
// transport (OpenSSL's default OAEP hash, SHA-1) and the given cipher.
func opensslEncrypt(t *testing.T, content []byte, to *x509.Certificate, cipher string, extra ...string) ([]byte, error) {
	t.Helper()
	outFile := filepath.Join(t.TempDir(), "env.der")
	args := append([]string{"cms", "-encrypt", "-binary", "-in", writeTemp(t, "content.bin", content), "-outform", "DER", "-out", outFile,
		"-recip", writeTemp(t, "recip.pem", pki.EncodePEM(to)), "-keyopt", "rsa_padding_mode:oaep", cipher}, extra...)
	if out, err := run(t, nil, "openssl", args...); err != nil {
		return nil, &toolError{out: out, err: err}
	}
	return os.ReadFile(outFile)
}

type toolError struct {
	out string
	err error
}

func (e *toolError) Error() string { return e.err.Error() + ": " + e.out }

// testOpenSSLEnvelopes: envelopes OpenSSL makes to the gateway's key-exchange
// certificate open with the gateway's token key through the same functions the
// gateway uses. AES-256-GCM (AuthEnvelopedData) is accepted; AES-256-CBC
// (EnvelopedData) decrypts at the CMS layer but setproto.Unseal refuses it, because
// it has no integrity.
func testOpenSSLEnvelopes(t *testing.T, b *bed, c captured) {
	gw := b.GatewayEnt
	content := make([]byte, 1000)
	_, _ = rand.Read(content)
	t.Run("aes-256-cbc", func(t *testing.T) {
		der, err := opensslEncrypt(t, content, gw.KXCert, "-aes256")
		require.NoError(t, err)
		got, ct, err := cms.Decrypt(der, gw.KXCert, gw.KXKey)
		require.NoError(t, err)
		assert.Equal(t, content, got)
		assert.True(t, ct.Equal(cms.DataContentType()))
		_, err = setproto.Unseal(der, setpb.ContentKind_AUTH_REQUEST, gw.KXCert, gw.KXKey)
		assert.Equal(t, setpb.Reason_UNSUPPORTED, setproto.ReasonOf(err), "%v", err)
	})
	t.Run("aes-256-gcm", func(t *testing.T) {
		der, err := opensslEncrypt(t, content, gw.KXCert, "-aes-256-gcm")
		require.NoError(t, err)
		got, ct, err := cms.Decrypt(der, gw.KXCert, gw.KXKey)
		require.NoError(t, err)
		assert.Equal(t, content, got)
		assert.True(t, ct.Equal(cms.DataContentType()))
		// id-data is not a protocol kind: the gateway's Unseal refuses the type, not the
		// envelope. (OpenSSL 3.0's cms -encrypt ignores -econtent_type, so it cannot make
		// an envelope the gateway's RPC would take whole.)
		_, err = setproto.Unseal(der, setpb.ContentKind_AUTH_REQUEST, gw.KXCert, gw.KXKey)
		assert.Equal(t, setpb.Reason_MALFORMED, setproto.ReasonOf(err), "%v", err)
	})
	t.Run("aes-256-gcm retyped, through the gateway", func(t *testing.T) {
		// OpenSSL 3.0 types every envelope it makes as id-data. Retyped as an
		// authorization request (the content type is not authenticated when there are
		// no authAttrs, as here), the merchant's recorded request in an envelope made
		// by OpenSSL goes through the gateway's RPC, which answers a retry with the
		// stored answer.
		inner, err := setproto.Unseal(c.authReqs[0], setpb.ContentKind_AUTH_REQUEST, gw.KXCert, gw.KXKey)
		require.NoError(t, err)
		der, err := opensslEncrypt(t, inner, gw.KXCert, "-aes-256-gcm")
		require.NoError(t, err)
		typed := retype(t, der, setproto.ContentType(setpb.ContentKind_AUTH_REQUEST))
		got, err := setproto.Unseal(typed, setpb.ContentKind_AUTH_REQUEST, gw.KXCert, gw.KXKey)
		require.NoError(t, err)
		assert.Equal(t, inner, got)
		res, err := setpb.NewGatewayClient(b.GatewayConn).Authorize(context.Background(), &setpb.Enveloped{Cms: typed})
		require.NoError(t, err)
		assert.Equal(t, c.authResps[0], res.GetCms(), "a retry gets the stored answer")
	})
}

// newAuthRequest is what a merchant would send for a fresh purchase by cardholder
// card: the wallet's real PI envelope and dual signature, the merchant's fields.
func newAuthRequest(t *testing.T, b *bed, card int) *setpb.AuthRequest {
	t.Helper()
	ctx := context.Background()
	w, err := b.Wallet(card)
	require.NoError(t, err)
	s, err := w.Start(ctx, "book")
	require.NoError(t, err)
	pr, err := w.Prepare(s)
	require.NoError(t, err)
	rrpid, err := setproto.NewID()
	require.NoError(t, err)
	challM, err := setproto.NewChallenge()
	require.NoError(t, err)
	tp := pki.ThumbprintOf(b.MerchantEnt.KXCert)
	return &setpb.AuthRequest{
		Xid: s.OI.GetXid(), Rrpid: rrpid, ChallM: challM, MerchantId: b.MerchantEnt.ID, Amount: s.OI.GetAmount(),
		Currency: s.OI.GetCurrency(), OiHash: setproto.Hash(pr.GetOrderInfo()), PiEnvelope: pr.GetPiEnvelope(),
		DualSignature: pr.GetDualSignature(), MerchantKxThumbprint: tp[:],
	}
}

// testOpenSSLAuthRequest: OpenSSL signs an authorization request with the merchant's
// signature key inside its token (libp11 engine) and the gateway authorizes it; the
// same request signed with SHA-1 or SHA-224 (downgrades) is refused and leaves
// nothing behind.
func testOpenSSLAuthRequest(t *testing.T, b *bed) {
	e := newEngine(t, b.merTok)
	ctx := context.Background()
	gw := setpb.NewGatewayClient(b.GatewayConn)
	req := newAuthRequest(t, b, systemtest.Frank)
	content, err := setproto.Marshal(req)
	require.NoError(t, err)
	in := writeTemp(t, "authreq.bin", content)
	signer := writeTemp(t, "merchant.pem", pki.EncodePEM(b.MerchantEnt.Sign.Cert))
	chain := writeTemp(t, "chain.pem", pki.EncodePEM(b.MerchantEnt.Sign.Chain...))
	sign := func(t *testing.T, md string, extra ...string) []byte {
		outFile := filepath.Join(t.TempDir(), "sd.der")
		args := append([]string{"cms", "-sign", "-binary", "-nodetach", "-in", in, "-outform", "DER", "-out", outFile,
			"-signer", signer, "-certfile", chain, "-md", md, "-econtent_type", setproto.ContentType(setpb.ContentKind_AUTH_REQUEST).String(),
			"-engine", "pkcs11", "-keyform", "engine", "-inkey", keyURI(b.merTok, "merchant-shop-1-sign")}, extra...)
		out, err := run(t, e.env, "openssl", args...)
		require.NoError(t, err, "%s", out)
		der, err := os.ReadFile(outFile)
		require.NoError(t, err)
		return der
	}
	send := func(t *testing.T, sd []byte) (*setpb.Enveloped, error) {
		env, err := setproto.Seal(setpb.ContentKind_AUTH_REQUEST, sd, b.GatewayEnt.KXCert, setproto.EnvelopeOptions{})
		require.NoError(t, err)
		return gw.Authorize(ctx, &setpb.Enveloped{Cms: env})
	}
	before := b.snapshot(t)
	for _, md := range []string{"sha1", "sha224"} {
		t.Run("downgrade to "+md, func(t *testing.T) {
			_, err := send(t, sign(t, md, "-nosmimecap"))
			requireRefused(t, err, setpb.Reason_MALFORMED)
			assert.Equal(t, codes.InvalidArgument, status.Code(err))
		})
	}
	b.requireUnchanged(t, before)
	for _, v := range []struct {
		name  string
		extra []string
	}{{"sha256", []string{"-nosmimecap"}}, {"sha256 with S/MIME capabilities", nil}} {
		t.Run(v.name, func(t *testing.T) {
			res, err := send(t, sign(t, "sha256", v.extra...))
			require.NoError(t, err)
			inner, err := setproto.Unseal(res.GetCms(), setpb.ContentKind_AUTH_RESPONSE, b.MerchantEnt.KXCert, b.MerchantEnt.KXKey)
			require.NoError(t, err)
			sd, err := cms.ParseSignedData(inner)
			require.NoError(t, err)
			ar, err := setproto.ParseAuthResponse(sd.Content())
			require.NoError(t, err)
			assert.Equal(t, setpb.AuthResult_APPROVED, ar.GetResult())
			assert.Equal(t, req.GetXid(), ar.GetXid())
		})
	}
}

// retype rewrites the contentType of an AuthEnvelopedData's EncryptedContentInfo.
func retype(t *testing.T, der []byte, ct x509.OID) []byte {
	t.Helper()
	in := cryptobyte.String(der)
	var ci, oid, explicit, aed cryptobyte.String
	require.True(t, in.ReadASN1(&ci, cbasn1.SEQUENCE) && in.Empty())
	require.True(t, ci.ReadASN1Element(&oid, cbasn1.OBJECT_IDENTIFIER))
	require.True(t, ci.ReadASN1(&explicit, cbasn1.Tag(0).Constructed().ContextSpecific()) && ci.Empty())
	require.True(t, explicit.ReadASN1(&aed, cbasn1.SEQUENCE) && explicit.Empty())
	ctDER, err := ct.MarshalBinary()
	require.NoError(t, err)
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(oid)
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for !aed.Empty() {
					var el cryptobyte.String
					var tag cbasn1.Tag
					require.True(t, aed.ReadAnyASN1Element(&el, &tag))
					if tag != cbasn1.SEQUENCE { // version, originatorInfo, recipientInfos, authAttrs, mac
						b.AddBytes(el)
						continue
					}
					var eci, oldCT cryptobyte.String
					require.True(t, el.ReadASN1(&eci, cbasn1.SEQUENCE))
					require.True(t, eci.ReadASN1(&oldCT, cbasn1.OBJECT_IDENTIFIER))
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(ctDER) })
						b.AddBytes(eci)
					})
				}
			})
		})
	})
	out, err := b.Bytes()
	require.NoError(t, err)
	return out
}
