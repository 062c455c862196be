package ca

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/setpay/setpay/ca/capb"
	"github.com/setpay/setpay/cms"
	"github.com/setpay/setpay/pki"
)

// Content types of the CA's signed messages (cms.ProtocolContentType
// numbers 101..106), distinct per message so no signed answer can pass for
// another.
const (
	ContentTypeCardCInit = 101 + iota
	ContentTypeRegForm
	ContentTypeCertReq
	ContentTypeCertRes
	ContentTypeRenew
	ContentTypeRevoke
	// ContentTypeAccountInfo types the cardholder's card-data envelope
	// (AuthEnvelopedData over AccountInfo, the type bound by its authAttrs).
	ContentTypeAccountInfo
)

const (
	ctCardCInit = ContentTypeCardCInit
	ctRegForm   = ContentTypeRegForm
	ctCertReq   = ContentTypeCertReq
	ctCertRes   = ContentTypeCertRes
	ctRenew     = ContentTypeRenew
	ctRevoke    = ContentTypeRevoke
	ctAcctInfo  = ContentTypeAccountInfo
)

// Limits of the registration service.
const (
	// MaxRequestSize bounds every request message (and the gRPC receive size).
	MaxRequestSize = 64 << 10
	// NonceTTL is how long a CA nonce from RegFormReq stays usable.
	NonceTTL = 10 * time.Minute
	// MaxPendingNonces bounds the nonce table against request floods.
	MaxPendingNonces = 10000
	// MaxSigningSkew bounds signingTime of authenticated requests (renew, revoke).
	MaxSigningSkew = 10 * time.Minute
)

// ServerConfig wires the registration service.
type ServerConfig struct {
	Hierarchy *Hierarchy // Root may be nil (offline root): its CRL then comes from RootCRL
	// RootCRL is served when Hierarchy.Root is nil (published by `ca init`).
	RootCRL *x509.RevocationList
	// RootCRLFile, when set with an offline root, is read again on every request for
	// the root's CRL: a newer one written there (`setpay ca crl --issuer root`) is
	// served from then on without a restart.
	RootCRLFile string
	// CCASigner is the CCA's token key (the same as its Authority's) for
	// signing answers to cardholders.
	CCASigner crypto.Signer
	// CCAKeyExchange is the CCA's key-exchange certificate (IssueCAKeyExchange)
	// and CCADecrypter its token key.
	CCAKeyExchange *x509.Certificate
	CCADecrypter   crypto.Decrypter
	Ledger         *CardLedger
	Forms          []RegForm // nil: DefaultRegForms("SETPay")
	// Pending, when set, holds merchant and gateway requests for operator
	// approval (`setpay ca approve`) instead of issuing at once.
	Pending *PendingQueue
	Clock   func() time.Time
	Logger  *slog.Logger
}

// Server implements the gRPC CA service.
type Server struct {
	capb.UnimplementedCAServer
	cfg      ServerConfig
	log      *slog.Logger
	crls     *crlCache
	verifier *pki.Verifier

	mu     sync.Mutex
	nonces map[string]pendingNonce
}

type pendingNonce struct {
	formID  string
	expires time.Time
}

// NewServer checks cfg and returns the service.
func NewServer(cfg ServerConfig) (*Server, error) {
	h := cfg.Hierarchy
	if h == nil || h.Brand == nil || h.CCA == nil || h.MCA == nil || h.PCA == nil {
		return nil, errors.New("ca: server needs brand, CCA, MCA and PCA")
	}
	if h.Root == nil && cfg.RootCRL == nil {
		return nil, errors.New("ca: server needs the root authority or its CRL")
	}
	if cfg.CCASigner == nil || !pubEqual(cfg.CCASigner.Public(), h.CCA.Certificate().PublicKey) {
		return nil, errors.New("ca: CCA signer does not match the CCA certificate")
	}
	if cfg.CCAKeyExchange == nil || cfg.CCADecrypter == nil || !pubEqual(cfg.CCADecrypter.Public(), cfg.CCAKeyExchange.PublicKey) {
		return nil, errors.New("ca: CCA key-exchange certificate and key missing or not matching")
	}
	if cfg.Ledger == nil {
		return nil, errors.New("ca: server needs a card ledger")
	}
	if cfg.Forms == nil {
		cfg.Forms = DefaultRegForms("SETPay")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger, nonces: map[string]pendingNonce{}}
	s.crls = newCRLCache(h, cfg.RootCRL, cfg.Clock)
	s.crls.rootFile = cfg.RootCRLFile
	root := h.CCA.Chain()[len(h.CCA.Chain())-1]
	v, err := pki.NewVerifier(root, s.crls)
	if err != nil {
		return nil, fmt.Errorf("ca: server verifier: %w", err)
	}
	s.verifier = v
	return s, nil
}

// Register adds the service to a gRPC server (e.g. tlsrpc.NewGRPCServer).
func (s *Server) Register(g grpc.ServiceRegistrar) { capb.RegisterCAServer(g, s) }

// CurrentCRL is the CRL the service serves for a CA: the one cached, re-signed once
// half its validity has passed or when the CA's revocations changed (for an offline
// root: the newest of RootCRL and RootCRLFile).
func (s *Server) CurrentCRL(ctx context.Context, r pki.Role) (*x509.RevocationList, error) {
	return s.crls.byRole(ctx, r)
}

// CRLs is the service's CRL source (fresh CRLs of every CA).
func (s *Server) CRLs() pki.CRLSource { return s.crls }

func (s *Server) now() time.Time { return s.cfg.Clock() }

func (s *Server) signCCA(ct uint64, m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("ca: marshal answer: %w", err)
	}
	out, err := cms.Sign(b, cms.SignOptions{ContentType: cms.ProtocolContentType(ct), Signer: s.cfg.CCASigner,
		Certificate: s.cfg.Hierarchy.CCA.Certificate(), SigningTime: s.now()})
	if err != nil {
		return nil, fmt.Errorf("ca: sign answer: %w", err)
	}
	return out, nil
}

func ders(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

// CardCInit implements capb.CAServer.
func (s *Server) CardCInit(ctx context.Context, req *capb.CardCInitRequest) (*capb.CardCInitResponse, error) {
	if n := len(req.GetWalletNonce()); n < 16 || n > 64 {
		return nil, refuse(codeInvalid, "BAD_REQUEST", "wallet nonce must be 16..64 bytes")
	}
	cca := s.cfg.Hierarchy.CCA
	signed, err := s.signCCA(ctCardCInit, &capb.CardCInitTBS{WalletNonce: req.GetWalletNonce(),
		CcaCertificate: cca.Certificate().Raw, CcaKxCertificate: s.cfg.CCAKeyExchange.Raw, Chain: ders(cca.Chain()[1:])})
	if err != nil {
		return nil, s.internal(ctx, "CardCInit", err)
	}
	return &capb.CardCInitResponse{Signed: signed}, nil
}

// RegFormReq implements capb.CAServer.
func (s *Server) RegFormReq(ctx context.Context, req *capb.RegFormRequest) (*capb.RegFormResponse, error) {
	bin := req.GetBin()
	if len(bin) < 6 || len(bin) > 8 || !allDigits(bin) {
		return nil, refuse(codeInvalid, "BAD_REQUEST", "bin must be 6..8 digits")
	}
	form, ok := findForm(s.cfg.Forms, bin)
	if !ok {
		return nil, refuse(codeNotFound, "NO_FORM", "no registration form for this BIN range")
	}
	nonce, err := s.cfg.Hierarchy.CCA.NewCANonce()
	if err != nil {
		return nil, s.internal(ctx, "RegFormReq", err)
	}
	exp := s.now().Add(NonceTTL)
	if err := s.putNonce(nonce, pendingNonce{formID: form.ID, expires: exp}); err != nil {
		return nil, err
	}
	tbs := &capb.RegFormTBS{FormId: form.ID, Brand: form.Brand, CaNonce: nonce, NonceExpires: exp.Unix()}
	for _, f := range form.Fields {
		tbs.Fields = append(tbs.Fields, &capb.FormField{Name: f.Name, Label: f.Label, Required: f.Required, MaxLength: uint32(f.MaxLength)})
	}
	signed, err := s.signCCA(ctRegForm, tbs)
	if err != nil {
		return nil, s.internal(ctx, "RegFormReq", err)
	}
	return &capb.RegFormResponse{Signed: signed}, nil
}

func (s *Server) putNonce(n []byte, p pendingNonce) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if len(s.nonces) >= MaxPendingNonces {
		for k, v := range s.nonces {
			if !now.Before(v.expires) {
				delete(s.nonces, k)
			}
		}
		if len(s.nonces) >= MaxPendingNonces {
			return refuse(codeUnavailable, "BUSY", "too many registrations in progress")
		}
	}
	s.nonces[string(n)] = p
	return nil
}

// takeNonce consumes a CA nonce (single use, even if the request then fails:
// the wallet asks for a new form).
func (s *Server) takeNonce(n []byte) (pendingNonce, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.nonces[string(n)]
	if !ok {
		return pendingNonce{}, false
	}
	delete(s.nonces, string(n))
	return p, s.now().Before(p.expires)
}

// parseSigned parses and verifies a SignedData request from an untrusted
// client, whose signer certificate is embedded, and returns its content and
// that (not yet validated) certificate.
func parseSigned(der []byte, ct uint64) ([]byte, *x509.Certificate, time.Time, error) {
	if len(der) == 0 || len(der) > MaxRequestSize {
		return nil, nil, time.Time{}, refuse(codeInvalid, "BAD_REQUEST", "signed request of %d bytes, want 1..%d", len(der), MaxRequestSize)
	}
	sd, err := cms.Limits{MaxSize: MaxRequestSize, MaxCertificates: 4, MaxRecipients: 1}.ParseSignedData(der)
	if err != nil {
		return nil, nil, time.Time{}, refuse(codeInvalid, "BAD_REQUEST", "signed request: %v", err)
	}
	if !sd.ContentType().Equal(cms.ProtocolContentType(ct)) || sd.Detached() {
		return nil, nil, time.Time{}, refuse(codeInvalid, "BAD_REQUEST", "unexpected content type")
	}
	signer, err := sd.Verify(cms.VerifyOptions{})
	if err != nil {
		return nil, nil, time.Time{}, refuse(codePermission, "BAD_SIGNATURE", "request signature: %v", err)
	}
	return sd.Content(), signer, sd.SigningTime(), nil
}

// CertReq implements capb.CAServer: the cardholder certificate request.
func (s *Server) CertReq(ctx context.Context, req *capb.CertReqRequest) (*capb.CertReqResponse, error) {
	content, signer, _, err := parseSigned(req.GetSigned(), ctCertReq)
	if err != nil {
		return nil, err
	}
	var tbs capb.CertReqTBS
	if err := proto.Unmarshal(content, &tbs); err != nil {
		return nil, refuse(codeInvalid, "BAD_REQUEST", "certificate request: %v", err)
	}
	if len(tbs.Csr) == 0 || len(tbs.Csr) > MaxCSRSize {
		return nil, refuse(codeInvalid, "BAD_CSR", "CSR of %d bytes", len(tbs.Csr))
	}
	csr, err := x509.ParseCertificateRequest(tbs.Csr)
	if err != nil {
		return nil, refuse(codeInvalid, "BAD_CSR", "parse CSR: %v", err)
	}
	if _, err := pki.CheckPublicKey(csr.PublicKey); err != nil {
		return nil, refuse(codeInvalid, "KEY_NOT_ALLOWED", "%v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, refuse(codePermission, "BAD_PROOF_OF_POSSESSION", "CSR signature: %v", err)
	}
	// The request is signed by the key being certified: proof of possession
	// over the whole request, including the envelope.
	if !pubEqual(csr.PublicKey, signer.PublicKey) {
		return nil, refuse(codePermission, "BAD_PROOF_OF_POSSESSION", "request not signed by the key of the CSR")
	}
	pn, ok := s.takeNonce(tbs.CaNonce)
	if !ok {
		return nil, refuse(codeFailedPrecondition, "NONCE_UNKNOWN", "CA nonce unknown, used or expired; ask for a new registration form")
	}
	if pn.formID != tbs.FormId {
		return nil, refuse(codeInvalid, "BAD_REQUEST", "form id does not match the nonce")
	}
	form, _ := formByID(s.cfg.Forms, pn.formID)
	if len(tbs.Envelope) == 0 || len(tbs.Envelope) > MaxRequestSize {
		return nil, refuse(codeInvalid, "BAD_REQUEST", "no card data envelope")
	}
	plain, err := s.openCardData(ctx, tbs.Envelope)
	if err != nil {
		return nil, err
	}
	var acct capb.AccountInfo
	if err := proto.Unmarshal(plain, &acct); err != nil {
		// Only a sender who made the envelope (and knows its plaintext) gets here:
		// anything altered in transit fails the GCM tag in openCardData.
		return nil, refuse(codeInvalid, "BAD_ENVELOPE", "card data: %v", err)
	}
	if subtle.ConstantTimeCompare(acct.CaNonce, tbs.CaNonce) != 1 {
		return nil, refuse(codeInvalid, "BAD_ENVELOPE", "card data envelope belongs to another request")
	}
	if err := pki.ValidatePAN(acct.Pan); err != nil {
		return nil, refuse(codeInvalid, "BAD_CARD_DATA", "%v", err)
	}
	if err := pki.ValidateExpiry(acct.Expiry); err != nil {
		return nil, refuse(codeInvalid, "BAD_CARD_DATA", "%v", err)
	}
	if err := form.checkFields(acct.Fields); err != nil {
		return nil, refuse(codeInvalid, "BAD_FORM", "%v", err)
	}
	masked := pki.MaskPAN(acct.Pan)
	if err := s.cfg.Ledger.Check(ctx, acct.Pan, acct.Expiry, acct.Fields, s.now()); err != nil {
		s.log.InfoContext(ctx, "cardholder registration refused by issuer", "card", masked, "why", err.Error())
		switch {
		case errors.Is(err, ErrCardExpired):
			return nil, refuse(codeFailedPrecondition, "CARD_EXPIRED", "card %s expired", masked)
		case errors.Is(err, ErrCardBlocked):
			return nil, refuse(codePermission, "CARD_BLOCKED", "card %s blocked by the issuer", masked)
		case errors.Is(err, ErrCardMismatch):
			return nil, refuse(codePermission, "CARD_DATA_MISMATCH", "card %s: account data does not match", masked)
		default:
			return nil, refuse(codeNotFound, "CARD_UNKNOWN", "card %s not known to the issuer", masked)
		}
	}
	cert, err := s.cfg.Hierarchy.CCA.IssueCardholder(ctx, CardholderRequest{CSR: tbs.Csr, PAN: acct.Pan, Expiry: acct.Expiry,
		WalletSecret: acct.WalletSecret, CANonce: tbs.CaNonce})
	if err != nil {
		return nil, s.caStatus(ctx, "CertReq", err)
	}
	h := sha256.Sum256(req.GetSigned())
	signed, err := s.signCCA(ctCertRes, &capb.CertResTBS{Certificate: cert.Raw, Chain: ders(s.cfg.Hierarchy.CCA.Chain()[:2]), RequestHash: h[:]})
	if err != nil {
		return nil, s.internal(ctx, "CertReq", err)
	}
	return &capb.CertReqResponse{Signed: signed}, nil
}

// openCardData opens the cardholder's card-data envelope with the one cipher
// policy of cms (AuthEnvelopedData with AES-256-GCM, RSAES-OAEP key transport),
// the same the gateway applies. Structure, recipient and content type are
// checked before the token is used; every failure after that is one refusal
// with one text (cms.ErrDecrypt), so the envelope's sender learns nothing about
// where decryption failed.
func (s *Server) openCardData(ctx context.Context, der []byte) ([]byte, error) {
	env, err := cms.Limits{MaxSize: MaxRequestSize, MaxRecipients: 4}.ParseEnvelope(der)
	if err != nil {
		return nil, refuse(codeInvalid, "BAD_ENVELOPE", "card data envelope: %v", err)
	}
	if want := cms.ProtocolContentType(ctAcctInfo); !env.ContentType().Equal(want) {
		return nil, refuse(codeInvalid, "BAD_ENVELOPE", "card data envelope carries content type %s, want %s", env.ContentType(), want)
	}
	plain, err := env.Decrypt(s.cfg.CCAKeyExchange, withDecryptContext(ctx, s.cfg.CCADecrypter))
	switch {
	case errors.Is(err, cms.ErrNoRecipient):
		return nil, refuse(codePermission, "WRONG_RECIPIENT", "card data is not enveloped to this CA")
	case errors.Is(err, cms.ErrDecrypt):
		s.log.InfoContext(ctx, "card data envelope did not open", "why", errors.Unwrap(err))
		return nil, refuse(codeInvalid, "BAD_ENVELOPE", "card data envelope: %v", cms.ErrDecrypt)
	case err != nil:
		return nil, refuse(codeInvalid, "BAD_ENVELOPE", "card data envelope: %v", err)
	}
	return plain, nil
}

func (s *Server) entityCA(roleName string) (*Authority, pki.Role, error) {
	r, err := pki.ParseRole(roleName)
	if err != nil || (r != pki.RoleMerchant && r != pki.RoleGateway) {
		return nil, 0, refuse(codePermission, "ROLE_NOT_ALLOWED", "registration with an enrollment secret is for merchants and gateways")
	}
	return s.cfg.Hierarchy.Issuing(r), r, nil
}

// KeyExchangeChallenge implements capb.CAServer.
func (s *Server) KeyExchangeChallenge(ctx context.Context, req *capb.KeyExchangeChallengeRequest) (*capb.KeyExchangeChallengeResponse, error) {
	a, role, err := s.entityCA(req.GetRole())
	if err != nil {
		return nil, err
	}
	if len(req.GetPublicKey()) == 0 || len(req.GetPublicKey()) > MaxCSRSize {
		return nil, refuse(codeInvalid, "BAD_REQUEST", "public key of %d bytes", len(req.GetPublicKey()))
	}
	ch, err := a.KeyExchangeChallenge(ctx, role, req.GetId(), req.GetPublicKey())
	if err != nil {
		return nil, s.caStatus(ctx, "KeyExchangeChallenge", err)
	}
	return &capb.KeyExchangeChallengeResponse{Ciphertext: ch.Ciphertext, Ephemeral: ch.Ephemeral}, nil
}

// EntityCertReq implements capb.CAServer.
func (s *Server) EntityCertReq(ctx context.Context, req *capb.EntityCertRequest) (*capb.EntityCertResponse, error) {
	a, role, err := s.entityCA(req.GetRole())
	if err != nil {
		return nil, err
	}
	if len(req.GetSecret()) > 128 {
		return nil, refuse(codePermission, "ENROLLMENT_INVALID", "no pending enrollment with this secret")
	}
	req2 := EntityRequest{Role: role, ID: req.GetId(), Secret: req.GetSecret(),
		SignatureCSR: req.GetSignatureCsr(), KeyExchangeCSR: req.GetKeyExchangeCsr(),
		KeyExchangeKey: req.GetKeyExchangeKey(), KeyExchangeProof: req.GetKeyExchangeProof()}
	if s.cfg.Pending != nil {
		acc, err := a.AcceptEntity(ctx, req2)
		if err != nil {
			return nil, s.caStatus(ctx, "EntityCertReq", err)
		}
		id, err := s.cfg.Pending.Add(*acc, s.now())
		if err != nil {
			return nil, s.internal(ctx, "EntityCertReq", err)
		}
		s.log.InfoContext(ctx, "entity request pending approval", "role", role.String(), "id", req.GetId(), "request", id)
		return &capb.EntityCertResponse{Status: capb.Status_STATUS_PENDING, RequestId: id}, nil
	}
	certs, err := a.IssueEntity(ctx, req2)
	if err != nil {
		return nil, s.caStatus(ctx, "EntityCertReq", err)
	}
	return &capb.EntityCertResponse{Status: capb.Status_STATUS_ISSUED, SignatureCertificate: certs.Signature.Raw,
		KeyExchangeCertificate: certs.KeyExchange.Raw, Chain: ders(a.Chain()[:2])}, nil
}

// authenticate verifies a request signed by an end-entity certificate this
// service issued, valid and unrevoked now, and returns it with its issuer.
func (s *Server) authenticate(ctx context.Context, der []byte, ct uint64) ([]byte, *x509.Certificate, *Authority, error) {
	content, signer, at, err := parseSigned(der, ct)
	if err != nil {
		return nil, nil, nil, err
	}
	now := s.now()
	if at.IsZero() || at.Before(now.Add(-MaxSigningSkew)) || at.After(now.Add(MaxSigningSkew)) {
		return nil, nil, nil, refuse(codePermission, "STALE_REQUEST", "signing time too far from now")
	}
	role, err := pki.RoleOf(signer)
	if err != nil || role.IsCA() {
		return nil, nil, nil, refuse(codePermission, "ROLE_NOT_ALLOWED", "signer is not an end entity")
	}
	purpose, err := pki.PurposeOf(signer)
	if err != nil || purpose != pki.PurposeSignature {
		return nil, nil, nil, refuse(codePermission, "WRONG_KEY_USAGE", "requests are signed with a signature certificate")
	}
	a := s.cfg.Hierarchy.Issuing(role)
	if a == nil {
		return nil, nil, nil, refuse(codePermission, "ROLE_NOT_ALLOWED", "no issuing CA for %s", role)
	}
	if _, err := s.verifier.Verify(ctx, signer, a.Chain()[:2], pki.Expect{Role: role, Purpose: pki.PurposeSignature}, now); err != nil {
		return nil, nil, nil, pkiStatus(err)
	}
	return content, signer, a, nil
}

// Renew implements capb.CAServer.
func (s *Server) Renew(ctx context.Context, req *capb.RenewRequest) (*capb.RenewResponse, error) {
	content, cur, a, err := s.authenticate(ctx, req.GetSigned(), ctRenew)
	if err != nil {
		return nil, err
	}
	var tbs capb.RenewTBS
	if err := proto.Unmarshal(content, &tbs); err != nil {
		return nil, refuse(codeInvalid, "BAD_REQUEST", "renewal: %v", err)
	}
	cert, err := a.Renew(ctx, cur, tbs.Csr, 0)
	if err != nil {
		return nil, s.caStatus(ctx, "Renew", err)
	}
	return &capb.RenewResponse{Certificate: cert.Raw, Chain: ders(a.Chain()[:2])}, nil
}

// Revoke implements capb.CAServer: a holder revokes its own certificate.
func (s *Server) Revoke(ctx context.Context, req *capb.RevokeRequest) (*capb.RevokeResponse, error) {
	content, cur, a, err := s.authenticate(ctx, req.GetSigned(), ctRevoke)
	if err != nil {
		return nil, err
	}
	var tbs capb.RevokeTBS
	if err := proto.Unmarshal(content, &tbs); err != nil {
		return nil, refuse(codeInvalid, "BAD_REQUEST", "revocation: %v", err)
	}
	if len(tbs.Serial) == 0 || len(tbs.Serial) > 20 || new(big.Int).SetBytes(tbs.Serial).Cmp(cur.SerialNumber) != 0 {
		return nil, refuse(codePermission, "NOT_OWNER", "a holder revokes only the certificate it signs with")
	}
	if err := a.Revoke(ctx, cur.SerialNumber, int(tbs.Reason)); err != nil {
		return nil, s.caStatus(ctx, "Revoke", err)
	}
	return &capb.RevokeResponse{}, nil
}

// CertInquiry implements capb.CAServer: the state of a request held for
// approval, with its certificates once issued.
func (s *Server) CertInquiry(ctx context.Context, req *capb.CertInquiryRequest) (*capb.EntityCertResponse, error) {
	if !ValidRequestID(req.GetRequestId()) {
		return nil, refuse(codeInvalid, "BAD_REQUEST", "malformed request id")
	}
	if s.cfg.Pending == nil {
		return nil, refuse(codeNotFound, "UNKNOWN_REQUEST", "no pending request with this id")
	}
	r, err := s.cfg.Pending.Get(req.GetRequestId())
	if errors.Is(err, ErrNotFound) {
		return nil, refuse(codeNotFound, "UNKNOWN_REQUEST", "no pending request with this id")
	}
	if err != nil {
		return nil, s.internal(ctx, "CertInquiry", err)
	}
	switch r.State {
	case PendingWaiting:
		return &capb.EntityCertResponse{Status: capb.Status_STATUS_PENDING, RequestId: r.ID}, nil
	case PendingRejected:
		return nil, refuse(codePermission, "REQUEST_REJECTED", "the operator rejected request %s", r.ID)
	}
	a := s.cfg.Hierarchy.Issuing(r.Accepted.Role)
	return &capb.EntityCertResponse{Status: capb.Status_STATUS_ISSUED, RequestId: r.ID, SignatureCertificate: r.Signature,
		KeyExchangeCertificate: r.KeyExchange, Chain: ders(a.Chain()[:2])}, nil
}

// GetCRL implements capb.CAServer.
func (s *Server) GetCRL(ctx context.Context, req *capb.GetCRLRequest) (*capb.GetCRLResponse, error) {
	r, err := pki.ParseRole(req.GetCa())
	if err != nil || !r.IsCA() {
		return nil, refuse(codeInvalid, "BAD_REQUEST", "ca must be root, brand, cca, mca or pca")
	}
	crl, err := s.crls.byRole(ctx, r)
	if err != nil {
		return nil, s.internal(ctx, "GetCRL", err)
	}
	return &capb.GetCRLResponse{Crl: crl.Raw}, nil
}

func allDigits(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// decryptContext carries the request's context into token decryption.
type contextDecrypter interface {
	crypto.Decrypter
	DecryptContext(ctx context.Context, msg []byte, opts crypto.DecrypterOpts) ([]byte, error)
}

type ctxDecrypter struct {
	contextDecrypter
	ctx context.Context
}

func (d ctxDecrypter) Decrypt(_ ioReader, msg []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	return d.DecryptContext(d.ctx, msg, opts)
}

func withDecryptContext(ctx context.Context, d crypto.Decrypter) crypto.Decrypter {
	if cd, ok := d.(contextDecrypter); ok {
		return ctxDecrypter{contextDecrypter: cd, ctx: ctx}
	}
	return d
}

// crlCache signs a CRL per CA when the cached one is half-way to nextUpdate
// or the CA's revocations changed (also by another process sharing the store).
type crlCache struct {
	h        *Hierarchy
	rootFile string
	rootMu   sync.Mutex
	rootCRL  *x509.RevocationList
	clock    func() time.Time
	mu       sync.Mutex
	cached   map[pki.Role]cachedCRL
}

type cachedCRL struct {
	crl     *x509.RevocationList
	revoked int
}

func newCRLCache(h *Hierarchy, rootCRL *x509.RevocationList, clock func() time.Time) *crlCache {
	return &crlCache{h: h, rootCRL: rootCRL, clock: clock, cached: map[pki.Role]cachedCRL{}}
}

// offlineRoot returns the newest root CRL known: the one given at start or a newer
// one (signed by the same root, with a higher number) found in rootFile.
func (c *crlCache) offlineRoot() (*x509.RevocationList, error) {
	c.rootMu.Lock()
	defer c.rootMu.Unlock()
	if c.rootFile != "" {
		if crl, err := ReadCRL(c.rootFile); err == nil && crl.Number != nil && c.h.Brand != nil &&
			(c.rootCRL == nil || crl.Number.Cmp(c.rootCRL.Number) > 0) {
			root := c.h.Brand.Chain()[len(c.h.Brand.Chain())-1]
			if crl.CheckSignatureFrom(root) == nil {
				c.rootCRL = crl
			}
		}
	}
	if c.rootCRL == nil {
		return nil, pki.ErrNoCRL
	}
	return c.rootCRL, nil
}

func (c *crlCache) authority(r pki.Role) *Authority {
	switch r {
	case pki.RoleRoot:
		return c.h.Root
	case pki.RoleBrand:
		return c.h.Brand
	case pki.RoleCCA:
		return c.h.CCA
	case pki.RoleMCA:
		return c.h.MCA
	case pki.RolePCA:
		return c.h.PCA
	}
	return nil
}

// CRL implements pki.CRLSource.
func (c *crlCache) CRL(ctx context.Context, issuer *x509.Certificate) (*x509.RevocationList, error) {
	r, err := pki.RoleOf(issuer)
	if err != nil {
		return nil, err
	}
	return c.byRole(ctx, r)
}

func (c *crlCache) byRole(ctx context.Context, r pki.Role) (*x509.RevocationList, error) {
	a := c.authority(r)
	if a == nil {
		if r == pki.RoleRoot {
			return c.offlineRoot()
		}
		return nil, pki.ErrNoCRL
	}
	revs, err := a.Store().Revocations(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock()
	if e, ok := c.cached[r]; ok && e.revoked == len(revs) {
		half := e.crl.ThisUpdate.Add(e.crl.NextUpdate.Sub(e.crl.ThisUpdate) / 2)
		if now.Before(half) {
			return e.crl, nil
		}
	}
	crl, err := a.CRL(ctx)
	if err != nil {
		return nil, err
	}
	c.cached[r] = cachedCRL{crl: crl, revoked: len(revs)}
	return crl, nil
}
