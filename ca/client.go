package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/setpay/setpay/ca/capb"
	"github.com/setpay/setpay/cms"
	"github.com/setpay/setpay/pki"
)

// Client is the registering party's side of the CA service. It trusts
// exactly one root and checks every certificate and signed answer it gets
// with pki.Verifier, fetching CRLs from the service itself (the verifier
// checks their signatures, so the source need not be trusted).
type Client struct {
	c        capb.CAClient
	root     *x509.Certificate
	verifier *pki.Verifier
	crls     *remoteCRLs
	clock    func() time.Time
}

// NewClient wraps a connection to the CA service. clock may be nil.
func NewClient(conn grpc.ClientConnInterface, root *x509.Certificate, clock func() time.Time) (*Client, error) {
	if clock == nil {
		clock = time.Now
	}
	c := &Client{c: capb.NewCAClient(conn), root: root, clock: clock}
	c.crls = &remoteCRLs{c: c.c}
	v, err := pki.NewVerifier(root, c.crls)
	if err != nil {
		return nil, fmt.Errorf("ca client: %w", err)
	}
	c.verifier = v
	return c, nil
}

// Verifier is the client's verifier (root plus the service's CRLs).
func (c *Client) Verifier() *pki.Verifier { return c.verifier }

// CRLs is the client's CRL source (fetched from the service).
func (c *Client) CRLs() pki.CRLSource { return c.crls }

type remoteCRLs struct{ c capb.CAClient }

func (r *remoteCRLs) CRL(ctx context.Context, issuer *x509.Certificate) (*x509.RevocationList, error) {
	role, err := pki.RoleOf(issuer)
	if err != nil {
		return nil, err
	}
	res, err := r.c.GetCRL(ctx, &capb.GetCRLRequest{Ca: role.String()})
	if err != nil {
		return nil, fmt.Errorf("fetch %s CRL: %w", role, err)
	}
	if len(res.GetCrl()) > MaxRequestSize*16 {
		return nil, errors.New("CRL too large")
	}
	return x509.ParseRevocationList(res.GetCrl())
}

// CRL fetches the current CRL of one CA of the hierarchy.
func (c *Client) CRL(ctx context.Context, role pki.Role) (*x509.RevocationList, error) {
	res, err := c.c.GetCRL(ctx, &capb.GetCRLRequest{Ca: role.String()})
	if err != nil {
		return nil, err
	}
	return x509.ParseRevocationList(res.GetCrl())
}

// CardholderRegistration is what the wallet brings to CertReq.
type CardholderRegistration struct {
	PAN    string
	Expiry string            // YYYYMM
	Fields map[string]string // answers to the registration form (e.g. postal_code)
	Key    crypto.Signer     // the new signature key (token or software)
}

// CardholderResult is the wallet's new certificate and card secret.
type CardholderResult struct {
	Cert      *x509.Certificate
	Chain     []*x509.Certificate // CCA, brand
	PANSecret []byte
	Form      *capb.RegFormTBS
}

// verifyCCA checks a CCA-signed answer: content type, signature by the CCA
// certificate, and that certificate's chain to the root.
func (c *Client) verifyCCA(ctx context.Context, der []byte, ct uint64, cca *x509.Certificate, chain []*x509.Certificate) ([]byte, error) {
	sd, err := cms.Limits{MaxSize: MaxRequestSize * 4, MaxCertificates: 4}.ParseSignedData(der)
	if err != nil {
		return nil, fmt.Errorf("CA answer: %w", err)
	}
	if !sd.ContentType().Equal(cms.ProtocolContentType(ct)) || sd.Detached() {
		return nil, errors.New("CA answer: unexpected content type")
	}
	signer, err := sd.Verify(cms.VerifyOptions{Certificates: []*x509.Certificate{cca}})
	if err != nil {
		return nil, fmt.Errorf("CA answer signature: %w", err)
	}
	if !signer.Equal(cca) {
		return nil, errors.New("CA answer not signed by the CCA")
	}
	if _, err := c.verifier.Verify(ctx, cca, chain, pki.Expect{Role: pki.RoleCCA}, c.clock()); err != nil {
		return nil, fmt.Errorf("CCA certificate: %w", err)
	}
	return sd.Content(), nil
}

// RegisterCardholder runs CardCInit, RegFormReq and CertReq and returns the
// verified cardholder certificate with the PANSecret the wallet must keep.
func (c *Client) RegisterCardholder(ctx context.Context, r CardholderRegistration) (*CardholderResult, error) {
	if err := pki.ValidatePAN(r.PAN); err != nil {
		return nil, err
	}
	if err := pki.ValidateExpiry(r.Expiry); err != nil {
		return nil, err
	}
	if r.Key == nil {
		return nil, errors.New("no wallet key")
	}
	// 1. CardCInit: the CCA's certificates.
	wn := make([]byte, 32)
	if _, err := rand.Read(wn); err != nil {
		return nil, err
	}
	ir, err := c.c.CardCInit(ctx, &capb.CardCInitRequest{WalletNonce: wn})
	if err != nil {
		return nil, fmt.Errorf("CardCInit: %w", err)
	}
	sd, err := cms.Limits{MaxSize: MaxRequestSize * 4, MaxCertificates: 4}.ParseSignedData(ir.GetSigned())
	if err != nil {
		return nil, fmt.Errorf("CardCInit answer: %w", err)
	}
	var init capb.CardCInitTBS
	if err := proto.Unmarshal(sd.Content(), &init); err != nil {
		return nil, fmt.Errorf("CardCInit answer: %w", err)
	}
	certs, err := pki.ParseCertificateList(append([][]byte{init.CcaCertificate, init.CcaKxCertificate}, init.Chain...))
	if err != nil {
		return nil, fmt.Errorf("CardCInit certificates: %w", err)
	}
	cca, kx, chain := certs[0], certs[1], certs[2:]
	if _, err := c.verifyCCA(ctx, ir.GetSigned(), ctCardCInit, cca, chain); err != nil {
		return nil, err
	}
	if !bytes.Equal(init.WalletNonce, wn) {
		return nil, errors.New("CardCInit answer for another request")
	}
	if err := VerifyCAKeyExchange(ctx, c.verifier, c.crls, kx, cca, chain, c.clock()); err != nil {
		return nil, fmt.Errorf("CCA key-exchange certificate: %w", err)
	}
	// 2. RegFormReq: form and CA nonce, by BIN only.
	fr, err := c.c.RegFormReq(ctx, &capb.RegFormRequest{Bin: r.PAN[:6]})
	if err != nil {
		return nil, fmt.Errorf("RegFormReq: %w", err)
	}
	content, err := c.verifyCCA(ctx, fr.GetSigned(), ctRegForm, cca, chain)
	if err != nil {
		return nil, err
	}
	var form capb.RegFormTBS
	if err := proto.Unmarshal(content, &form); err != nil {
		return nil, fmt.Errorf("registration form: %w", err)
	}
	if len(form.CaNonce) != 32 {
		return nil, errors.New("registration form without a CA nonce")
	}
	// 3. CertReq.
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "cardholder"}}, r.Key)
	if err != nil {
		return nil, fmt.Errorf("CSR: %w", err)
	}
	acct, err := proto.MarshalOptions{Deterministic: true}.Marshal(&capb.AccountInfo{Pan: r.PAN, Expiry: r.Expiry,
		WalletSecret: secret, Fields: r.Fields, CaNonce: form.CaNonce})
	if err != nil {
		return nil, err
	}
	env, err := cms.Encrypt(acct, cms.EncryptOptions{Recipients: []*x509.Certificate{kx}, ContentType: cms.ProtocolContentType(ctAcctInfo)})
	if err != nil {
		return nil, fmt.Errorf("envelope card data: %w", err)
	}
	signed, err := signRequest(ctCertReq, &capb.CertReqTBS{Csr: csr, Envelope: env, CaNonce: form.CaNonce, FormId: form.FormId}, r.Key, nil, c.clock())
	if err != nil {
		return nil, err
	}
	res, err := c.c.CertReq(ctx, &capb.CertReqRequest{Signed: signed})
	if err != nil {
		return nil, fmt.Errorf("CertReq: %w", err)
	}
	content, err = c.verifyCCA(ctx, res.GetSigned(), ctCertRes, cca, chain)
	if err != nil {
		return nil, err
	}
	var cr capb.CertResTBS
	if err := proto.Unmarshal(content, &cr); err != nil {
		return nil, fmt.Errorf("CertRes: %w", err)
	}
	h := sha256.Sum256(signed)
	if subtle.ConstantTimeCompare(cr.RequestHash, h[:]) != 1 {
		return nil, errors.New("CertRes answers another request")
	}
	cert, resChain, err := c.checkIssued(ctx, cr.Certificate, cr.Chain, r.Key.Public(), pki.Expect{Role: pki.RoleCardholder, Purpose: pki.PurposeSignature})
	if err != nil {
		return nil, err
	}
	panSecret, err := pki.PANSecret(secret, form.CaNonce)
	if err != nil {
		return nil, err
	}
	if err := pki.CheckCardholderPAN(cert, r.PAN, r.Expiry, panSecret); err != nil {
		return nil, fmt.Errorf("certificate not bound to this card: %w", err)
	}
	return &CardholderResult{Cert: cert, Chain: resChain, PANSecret: panSecret, Form: &form}, nil
}

// checkIssued parses and verifies a certificate the CA returned for pub.
func (c *Client) checkIssued(ctx context.Context, der []byte, chainDER [][]byte, pub crypto.PublicKey, want pki.Expect) (*x509.Certificate, []*x509.Certificate, error) {
	certs, err := pki.ParseCertificateList(append([][]byte{der}, chainDER...))
	if err != nil {
		return nil, nil, fmt.Errorf("issued certificate: %w", err)
	}
	if !pubEqual(certs[0].PublicKey, pub) {
		return nil, nil, errors.New("issued certificate is for another key")
	}
	if _, err := c.verifier.Verify(ctx, certs[0], certs[1:], want, c.clock()); err != nil {
		return nil, nil, fmt.Errorf("issued certificate: %w", err)
	}
	return certs[0], certs[1:], nil
}

// signRequest signs m with key; cert identifies the signer (nil: a throwaway
// self-signed certificate of key, for requests before any certificate).
func signRequest(ct uint64, m proto.Message, key crypto.Signer, cert *x509.Certificate, now time.Time) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	if cert == nil {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "setpay request key"},
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			return nil, fmt.Errorf("request certificate: %w", err)
		}
		if cert, err = x509.ParseCertificate(der); err != nil {
			return nil, err
		}
	}
	out, err := cms.Sign(b, cms.SignOptions{ContentType: cms.ProtocolContentType(ct), Signer: key, Certificate: cert,
		Certificates: []*x509.Certificate{cert}, SigningTime: now})
	if err != nil {
		return nil, fmt.Errorf("sign request: %w", err)
	}
	return out, nil
}

// EntityRegistration is what a merchant or gateway brings to EntityCertReq.
type EntityRegistration struct {
	Role   pki.Role
	ID     string
	Secret string
	// SignatureKey signs the CSR; KeyExchangeKey proves possession by the
	// challenge (a crypto.Decrypter for RSA, a pki.ECDHKey for EC).
	SignatureKey   crypto.Signer
	KeyExchangeKey interface{ Public() crypto.PublicKey }
}

// EntityResult holds a merchant's or gateway's verified certificates.
// When the CA holds the request for approval, Pending is set with the
// RequestID to pass to Inquire, and no certificate is present.
type EntityResult struct {
	Signature, KeyExchange *x509.Certificate
	Chain                  []*x509.Certificate // issuing CA, brand
	Pending                bool
	RequestID              string
}

// RegisterEntity proves possession of both keys and redeems the enrollment
// secret for the signature and key-exchange certificates.
func (c *Client) RegisterEntity(ctx context.Context, r EntityRegistration) (*EntityResult, error) {
	if r.SignatureKey == nil || r.KeyExchangeKey == nil {
		return nil, errors.New("both keys are needed")
	}
	spki, err := x509.MarshalPKIXPublicKey(r.KeyExchangeKey.Public())
	if err != nil {
		return nil, fmt.Errorf("key-exchange key: %w", err)
	}
	ch, err := c.c.KeyExchangeChallenge(ctx, &capb.KeyExchangeChallengeRequest{Role: r.Role.String(), Id: r.ID, PublicKey: spki})
	if err != nil {
		return nil, fmt.Errorf("KeyExchangeChallenge: %w", err)
	}
	proof, err := pki.AnswerKXChallenge(ctx, pki.KXChallenge{Ciphertext: ch.GetCiphertext(), Ephemeral: ch.GetEphemeral()}, r.KeyExchangeKey)
	if err != nil {
		return nil, fmt.Errorf("answer key-exchange challenge: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: pki.EntityCN(r.Role, r.ID)}}, r.SignatureKey)
	if err != nil {
		return nil, fmt.Errorf("CSR: %w", err)
	}
	res, err := c.c.EntityCertReq(ctx, &capb.EntityCertRequest{Role: r.Role.String(), Id: r.ID, Secret: r.Secret,
		SignatureCsr: csr, KeyExchangeKey: spki, KeyExchangeProof: proof})
	if err != nil {
		return nil, fmt.Errorf("EntityCertReq: %w", err)
	}
	return c.entityResult(ctx, res, r)
}

// Inquire asks about a request the CA held for approval; r gives the role
// and the keys the certificates must carry.
func (c *Client) Inquire(ctx context.Context, requestID string, r EntityRegistration) (*EntityResult, error) {
	if r.SignatureKey == nil || r.KeyExchangeKey == nil {
		return nil, errors.New("both keys are needed")
	}
	res, err := c.c.CertInquiry(ctx, &capb.CertInquiryRequest{RequestId: requestID})
	if err != nil {
		return nil, fmt.Errorf("CertInquiry: %w", err)
	}
	return c.entityResult(ctx, res, r)
}

func (c *Client) entityResult(ctx context.Context, res *capb.EntityCertResponse, r EntityRegistration) (*EntityResult, error) {
	switch res.GetStatus() {
	case capb.Status_STATUS_PENDING:
		return &EntityResult{Pending: true, RequestID: res.GetRequestId()}, nil
	case capb.Status_STATUS_ISSUED:
	default:
		return nil, fmt.Errorf("CA answered status %s", res.GetStatus())
	}
	sig, chain, err := c.checkIssued(ctx, res.GetSignatureCertificate(), res.GetChain(), r.SignatureKey.Public(), pki.Expect{Role: r.Role, Purpose: pki.PurposeSignature})
	if err != nil {
		return nil, err
	}
	kx, _, err := c.checkIssued(ctx, res.GetKeyExchangeCertificate(), res.GetChain(), r.KeyExchangeKey.Public(), pki.Expect{Role: r.Role, Purpose: pki.PurposeKeyExchange})
	if err != nil {
		return nil, err
	}
	if id := pki.EntityCN(r.Role, r.ID); sig.Subject.CommonName != id {
		return nil, fmt.Errorf("issued certificate names %q, want %q", sig.Subject.CommonName, id)
	}
	return &EntityResult{Signature: sig, KeyExchange: kx, Chain: chain, RequestID: res.GetRequestId()}, nil
}

// Renew asks for a successor of cert (signed with its key) for newKey.
func (c *Client) Renew(ctx context.Context, key crypto.Signer, cert *x509.Certificate, newKey crypto.Signer) (*x509.Certificate, []*x509.Certificate, error) {
	role, err := pki.RoleOf(cert)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: cert.Subject}, newKey)
	if err != nil {
		return nil, nil, fmt.Errorf("CSR: %w", err)
	}
	signed, err := signRequest(ctRenew, &capb.RenewTBS{Csr: csr}, key, cert, c.clock())
	if err != nil {
		return nil, nil, err
	}
	res, err := c.c.Renew(ctx, &capb.RenewRequest{Signed: signed})
	if err != nil {
		return nil, nil, fmt.Errorf("Renew: %w", err)
	}
	return c.checkIssued(ctx, res.GetCertificate(), res.GetChain(), newKey.Public(), pki.Expect{Role: role, Purpose: pki.PurposeSignature})
}

// Revoke revokes cert, signed with its own key.
func (c *Client) Revoke(ctx context.Context, key crypto.Signer, cert *x509.Certificate, reason int) error {
	signed, err := signRequest(ctRevoke, &capb.RevokeTBS{Serial: cert.SerialNumber.Bytes(), Reason: int32(reason)}, key, cert, c.clock())
	if err != nil {
		return err
	}
	if _, err := c.c.Revoke(ctx, &capb.RevokeRequest{Signed: signed}); err != nil {
		return fmt.Errorf("Revoke: %w", err)
	}
	return nil
}

// Root is the trust anchor the client verifies against.
func (c *Client) Root() *x509.Certificate { return c.root }
