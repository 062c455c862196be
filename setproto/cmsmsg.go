package setproto

import (
	"context"
	"crypto"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/setpay/setpay/cms"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto/setpb"
)

// limits bound every CMS blob taken from a peer.
var limits = cms.Limits{MaxSize: MaxMessageSize, MaxCertificates: pki.MaxChainLength, MaxRecipients: 4}

// Party is a signing identity: a token key (crypto.Signer), its certificate and the
// issuing CA and brand certificates above it.
type Party struct {
	Key   crypto.Signer
	Cert  *x509.Certificate
	Chain []*x509.Certificate // issuing CA, brand (root excluded)
	// PSS selects RSASSA-PSS for RSA keys (ECDSA keys ignore it).
	PSS bool
}

// Certificates is the certificate and its chain, leaf first.
func (p Party) Certificates() []*x509.Certificate {
	return append([]*x509.Certificate{p.Cert}, p.Chain...)
}

// Thumbprints lists the thumbprints of Certificates.
func (p Party) Thumbprints() [][]byte {
	var out [][]byte
	for _, c := range p.Certificates() {
		tp := pki.ThumbprintOf(c)
		out = append(out, tp[:])
	}
	return out
}

// Sign returns a DER SignedData of content typed as kind, signed by p, embedding
// extra certificates as given (nil: none, the peer has them by thumbprint).
func Sign(kind setpb.ContentKind, content []byte, p Party, at time.Time, embed []*x509.Certificate) ([]byte, error) {
	der, err := cms.Sign(content, cms.SignOptions{
		ContentType: ContentType(kind), Signer: p.Key, Certificate: p.Cert,
		Certificates: embed, SigningTime: at, PSS: p.PSS,
	})
	if err != nil {
		return nil, fmt.Errorf("setproto: sign %s: %w", kind, err)
	}
	return der, nil
}

// SignMessage marshals m deterministically and signs it.
func SignMessage(kind setpb.ContentKind, m proto.Message, p Party, at time.Time, embed []*x509.Certificate) ([]byte, error) {
	b, err := Marshal(m)
	if err != nil {
		return nil, err
	}
	return Sign(kind, b, p, at, embed)
}

// Trust is what a party needs to verify its peers' messages: the one verifier
// (root, CRLs), the known CA certificates, and a certificate cache by thumbprint.
type Trust struct {
	Verifier      *pki.Verifier
	Intermediates []*x509.Certificate // brand and issuing CA certificates
	Cache         *pki.CertCache
	Clock         func() time.Time // nil: time.Now
}

func (t *Trust) now() time.Time {
	if t.Clock != nil {
		return t.Clock()
	}
	return time.Now()
}

// Verified is a verified signed message.
type Verified struct {
	Content     []byte
	Signer      *x509.Certificate
	Chain       []*x509.Certificate // leaf first, root last
	EntityID    string              // the id in the signer's CN (merchant id, gateway id, cardholder id)
	SigningTime time.Time
	Embedded    []*x509.Certificate // certificates the message carried (not validated)
}

// Open parses an untrusted SignedData of the given kind, verifies its signature with
// the embedded certificates or those named by refs in the cache, and verifies the
// signer's chain and role with the Verifier. Certificates seen are cached.
func (t *Trust) Open(ctx context.Context, der []byte, refs [][]byte, kind setpb.ContentKind, want pki.Expect) (*Verified, error) {
	if len(der) == 0 {
		return nil, Errorf(setpb.Reason_MALFORMED, "%s: empty message", kind)
	}
	sd, err := limits.ParseSignedData(der)
	if err != nil {
		return nil, Wrap(setpb.Reason_MALFORMED, err, "%s", kind)
	}
	if !sd.ContentType().Equal(ContentType(kind)) {
		return nil, Errorf(setpb.Reason_MALFORMED, "content type %s is not %s", sd.ContentType(), kind)
	}
	if sd.Detached() {
		return nil, Errorf(setpb.Reason_MALFORMED, "%s: content is detached", kind)
	}
	if len(refs) > pki.MaxChainLength {
		return nil, Errorf(setpb.Reason_MALFORMED, "%s: too many certificate references", kind)
	}
	var known []*x509.Certificate
	missing := false
	for _, r := range refs {
		var tp pki.Thumbprint
		if len(r) != len(tp) {
			return nil, Errorf(setpb.Reason_MALFORMED, "%s: certificate reference is not a SHA-256 thumbprint", kind)
		}
		copy(tp[:], r)
		if c, ok := t.Cache.Get(tp); ok {
			known = append(known, c)
		} else {
			missing = true
		}
	}
	signer, err := sd.Verify(cms.VerifyOptions{Certificates: known})
	if err != nil {
		if missing {
			return nil, Wrap(setpb.Reason_CERT_UNKNOWN, err, "%s: signer certificate not cached", kind)
		}
		return nil, Wrap(setpb.Reason_BAD_SIGNATURE, err, "%s", kind)
	}
	inter := cas(sd.Certificates(), known, t.Intermediates)
	chain, err := t.Verifier.Verify(ctx, signer, inter, want, t.now())
	if err != nil {
		return nil, Wrap(certReason(err), err, "%s signer", kind)
	}
	_, id, err := pki.EntityID(signer)
	if err != nil {
		return nil, Wrap(setpb.Reason_CERT_WRONG_ROLE, err, "%s signer", kind)
	}
	for _, c := range sd.Certificates() {
		t.Cache.Add(c)
	}
	return &Verified{Content: sd.Content(), Signer: signer, Chain: chain, EntityID: id, SigningTime: sd.SigningTime(), Embedded: sd.Certificates()}, nil
}

// VerifyKeyExchange verifies a key-exchange certificate of role r found in certs (or
// the cache) by thumbprint tp and returns it with its entity id.
func (t *Trust) VerifyKeyExchange(ctx context.Context, tp []byte, certs []*x509.Certificate, r pki.Role) (*x509.Certificate, string, error) {
	var cert *x509.Certificate
	for _, c := range certs {
		if th := pki.ThumbprintOf(c); subtle.ConstantTimeCompare(th[:], tp) == 1 {
			cert = c
		}
	}
	if cert == nil && len(tp) == len(pki.Thumbprint{}) {
		cert, _ = t.Cache.Get(pki.Thumbprint(tp))
	}
	if cert == nil {
		return nil, "", Errorf(setpb.Reason_CERT_UNKNOWN, "%s key-exchange certificate not found", r)
	}
	inter := cas(certs, t.Intermediates)
	if _, err := t.Verifier.Verify(ctx, cert, inter, pki.Expect{Role: r, Purpose: pki.PurposeKeyExchange}, t.now()); err != nil {
		return nil, "", Wrap(certReason(err), err, "%s key-exchange certificate", r)
	}
	_, id, err := pki.EntityID(cert)
	if err != nil {
		return nil, "", Wrap(setpb.Reason_CERT_WRONG_ROLE, err, "%s key-exchange certificate", r)
	}
	t.Cache.Add(cert)
	return cert, id, nil
}

// EnvelopeOptions choose the key transport of envelopes.
type EnvelopeOptions struct {
	// OAEPHash is the RSA-OAEP hash. Zero means SHA-1, the only one SoftHSM 2.6.1
	// unwraps with; SHA-256 when the recipient's token supports it (hsm Key.ProbeOAEP).
	OAEPHash crypto.Hash
}

// Seal envelopes content (typed as kind) to an RSA key-exchange certificate with
// AES-256-GCM AuthEnvelopedData.
func Seal(kind setpb.ContentKind, content []byte, to *x509.Certificate, opts EnvelopeOptions) ([]byte, error) {
	der, err := cms.Encrypt(content, cms.EncryptOptions{
		Recipients: []*x509.Certificate{to}, ContentType: ContentType(kind), Cipher: cms.AES256GCM, OAEPHash: opts.OAEPHash,
	})
	if err != nil {
		return nil, fmt.Errorf("setproto: envelope %s: %w", kind, err)
	}
	return der, nil
}

// Unseal opens an untrusted envelope of kind addressed to cert with key (a token
// key-exchange key). It applies cms's one cipher policy (AuthEnvelopedData with
// AES-256-GCM, RSAES-OAEP key transport); the content type, bound to the
// envelope by its authAttrs, is checked before the key is used. Every failure to
// open the content is the same DECRYPT_FAILED with the same text.
func Unseal(der []byte, kind setpb.ContentKind, cert *x509.Certificate, key crypto.Decrypter) ([]byte, error) {
	if len(der) == 0 {
		return nil, Errorf(setpb.Reason_MALFORMED, "%s envelope: empty", kind)
	}
	env, err := limits.ParseEnvelope(der)
	if err != nil {
		return nil, Wrap(setpb.Reason_MALFORMED, err, "%s envelope", kind)
	}
	if env.Cipher != cms.AES256GCM {
		return nil, Errorf(setpb.Reason_UNSUPPORTED, "%s envelope: %s content encryption", kind, env.Cipher)
	}
	if !env.ContentType().Equal(ContentType(kind)) {
		return nil, Errorf(setpb.Reason_MALFORMED, "%s envelope carries content type %s", kind, env.ContentType())
	}
	if err := soleRecipient(env, kind, cert); err != nil {
		return nil, err
	}
	pt, err := env.Decrypt(cert, key)
	if err != nil {
		return nil, Wrap(setpb.Reason_DECRYPT_FAILED, err, "%s envelope", kind)
	}
	if len(pt) > MaxMessageSize {
		return nil, Errorf(setpb.Reason_MALFORMED, "%s: content over the limit", kind)
	}
	return pt, nil
}

// CheckSoleRecipient parses an untrusted envelope of kind without opening it and
// checks that it is addressed to cert and to nobody else: what a party forwarding an
// envelope it cannot open (the merchant, the PI) checks before passing it on.
func CheckSoleRecipient(der []byte, kind setpb.ContentKind, cert *x509.Certificate) error {
	if len(der) == 0 {
		return Errorf(setpb.Reason_MALFORMED, "%s envelope: empty", kind)
	}
	env, err := limits.ParseEnvelope(der)
	if err != nil {
		return Wrap(setpb.Reason_MALFORMED, err, "%s envelope", kind)
	}
	return soleRecipient(env, kind, cert)
}

// soleRecipient: every envelope of the protocol has exactly one recipient, the party
// it is for. An envelope that another party could open as well (a PI enveloped to
// the gateway and to the merchant hands the merchant the PAN) is refused, whoever
// else it names, before any key is used.
func soleRecipient(env *cms.Envelope, kind setpb.ContentKind, cert *x509.Certificate) error {
	if _, err := env.Recipient(cert); err != nil {
		return Wrap(setpb.Reason_DECRYPT_FAILED, err, "%s envelope", kind)
	}
	if n := len(env.Recipients); n != 1 {
		return Errorf(setpb.Reason_EXTRA_RECIPIENT, "%s envelope has %d recipients; it must be addressed to its one recipient only", kind, n)
	}
	return nil
}

// DualSign is the cardholder's dual signature: a SignedData whose content is
// H(PI) || H(OI), so its messageDigest is H(H(PI) || H(OI)); the cardholder's
// certificates are embedded because merchant and gateway both need them.
func DualSign(cardholder Party, piHash, oiHash []byte, at time.Time) ([]byte, error) {
	if len(piHash) != 32 || len(oiHash) != 32 {
		return nil, errors.New("setproto: dual signature needs two SHA-256 hashes")
	}
	return Sign(setpb.ContentKind_DUAL_SIGNATURE, DualContent(piHash, oiHash), cardholder, at, cardholder.Certificates())
}

// VerifyDual verifies a dual signature by a cardholder over exactly piHash and oiHash.
func (t *Trust) VerifyDual(ctx context.Context, der, piHash, oiHash []byte) (*Verified, error) {
	v, err := t.Open(ctx, der, nil, setpb.ContentKind_DUAL_SIGNATURE, pki.Expect{Role: pki.RoleCardholder, Purpose: pki.PurposeSignature})
	if err != nil {
		return nil, err
	}
	gotPI, gotOI, err := SplitDualContent(v.Content)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(gotPI, piHash)&subtle.ConstantTimeCompare(gotOI, oiHash) != 1 {
		return nil, Errorf(setpb.Reason_BAD_SIGNATURE, "the dual signature does not cover this OI and PI")
	}
	return v, nil
}

// cas returns the distinct CA certificates among lists: the candidates for chain
// building (the verifier bounds how many it takes).
func cas(lists ...[]*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	seen := map[pki.Thumbprint]bool{}
	for _, l := range lists {
		for _, c := range l {
			tp := pki.ThumbprintOf(c)
			if !c.IsCA || seen[tp] {
				continue
			}
			seen[tp] = true
			out = append(out, c)
		}
	}
	return out
}

// KeyURI is the RFC 7512 URI of a token key (hsm.Key, signer.RemoteKey), or "" for
// keys that have none: what audit records name.
func KeyURI(k any) string {
	if u, ok := k.(interface{ URI() string }); ok {
		return u.URI()
	}
	return ""
}
