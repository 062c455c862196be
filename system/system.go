// Package system wires a whole SET system in one process — CA hierarchy, a gateway,
// merchants and cardholders, every private key in a PKCS#11 token, gRPC with TLS on
// loopback, SQLite stores — for the tests and for `setpay demo`.
package system

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/gateway"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/wallet"
)

// Brand is the card brand of the test bed.
const Brand = "SETPay"

// CardSpec is a card the bed issues to a cardholder and puts in the issuer's ledger.
type CardSpec struct {
	Name         string // for transcripts
	PAN          string
	Expiry       string // what the card says (and the certificate binds)
	LedgerExpiry string // what the issuer has on file; "" means Expiry
	Balance      int64
	Limit        int64
	Blocked      bool
}

// Config configures Build.
type Config struct {
	// Tokens. CA keys go to CARoot (root) and CA (others).
	CARoot, CA, Gateway, Merchant, Wallet, TLS *hsm.Token
	// Store DSNs (sqlite:...). Gateway and merchant have separate databases.
	GatewayDSN, MerchantDSN string
	GatewayID, MerchantID   string
	Offers                  []merchant.Offer
	Cards                   []CardSpec
	Currency                string
	Logger                  *slog.Logger
	// GatewayDecided, if set, hears each new authorization decision (gateway.Config.Decided).
	GatewayDecided func(setpb.AuthResult)
	// MerchantOfferBook, if set, makes the offer book of each merchant on its store
	// (merchant.Config.OfferBook: a storefront's checkouts, as `setpay demo --web`).
	MerchantOfferBook func(store.DB) merchant.OfferBook
}

// Entity is a registered merchant or gateway: its token keys and certificates.
type Entity struct {
	ID      string
	Sign    setproto.Party
	KXKey   *hsm.Key
	KXCert  *x509.Certificate
	SignKey *hsm.Key
}

// Cardholder is a registered cardholder with its token key.
type Cardholder struct {
	Name     string
	Identity wallet.Identity
	Key      *hsm.Key
}

// Bed is a running SET system.
// PANKeyLabel is the label of the gateway's PAN hash key in its token.
const PANKeyLabel = "pan-hash"

// ChallengeKeyLabel is the label of the merchant's challenge key in its token.
const ChallengeKeyLabel = "merchant-challenge"

type Bed struct {
	cfg         Config
	H           *ca.Hierarchy
	CRLs        *pki.MemoryCRLs
	Verifier    *pki.Verifier
	TLS         *tlsrpc.TLSIssuer
	Ledger      *gateway.Ledger
	GatewayEnt  *Entity
	MerchantEnt *Entity
	Gateway     *gateway.Gateway
	Merchant    *merchant.Merchant
	GatewayDB   *store.Store
	MerchantDB  *store.Store
	// GatewayAddr and MerchantAddr are the loopback listeners (TLS).
	GatewayAddr, MerchantAddr string
	Cardholders               []*Cardholder
	// GatewayConn is the merchant's mutual-TLS connection to the gateway; MerchantConn
	// a wallet's TLS connection to the merchant.
	GatewayConn, MerchantConn *grpc.ClientConn
	// TLS identities: keys in the gateway's and the merchant's tokens.
	GatewayTLS, MerchantTLS, MerchantClientTLS tlsrpc.Identity
	// PANKey is the gateway's PAN hash key, a MAC key in its token (label PANKeyLabel);
	// PANHasher the gateway's store.PANHasher over it.
	PANKey    *hsm.SecretKey
	PANHasher store.PANHasher
	// ChallengeKey is the merchant's challenge key, a MAC key in its token (label
	// ChallengeKeyLabel); every merchant NewMerchant makes shares it, as replicas of
	// one merchant do.
	ChallengeKey *hsm.SecretKey
	LedgerCards  []gateway.Card
	closers      []func()
}

// Build sets up the CA hierarchy, registers the gateway, the merchant and the
// cardholders, and starts the gateway and merchant gRPC servers on loopback with TLS.
// Interceptors, if given, are installed on the gateway and merchant servers (tests
// use them to see what each party receives).
func Build(ctx context.Context, cfg Config, gwOpts, merOpts []grpc.ServerOption) (b *Bed, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Currency == "" {
		cfg.Currency = "EUR"
	}
	b = &Bed{cfg: cfg, CRLs: pki.NewMemoryCRLs()}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	b.H, err = ca.BuildHierarchy(ctx, ca.HierarchyConfig{RootKeys: ca.TokenKeyGenerator{Token: cfg.CARoot}, Keys: ca.TokenKeyGenerator{Token: cfg.CA},
		Org: "SETPay", Brand: Brand, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if err := b.PublishCRLs(ctx); err != nil {
		return nil, err
	}
	if b.Verifier, err = pki.NewVerifier(b.H.Root.Certificate(), b.CRLs); err != nil {
		return nil, err
	}
	if b.GatewayEnt, err = b.RegisterEntity(ctx, pki.RoleGateway, cfg.GatewayID, cfg.Gateway); err != nil {
		return nil, err
	}
	if b.MerchantEnt, err = b.RegisterEntity(ctx, pki.RoleMerchant, cfg.MerchantID, cfg.Merchant); err != nil {
		return nil, err
	}
	var cards []gateway.Card
	for _, c := range cfg.Cards {
		ch, err := b.IssueCardholder(ctx, cfg.Wallet, c)
		if err != nil {
			return nil, err
		}
		b.Cardholders = append(b.Cardholders, ch)
		le := c.LedgerExpiry
		if le == "" {
			le = c.Expiry
		}
		cards = append(cards, gateway.Card{PAN: c.PAN, Expiry: le, Currency: cfg.Currency, Balance: c.Balance, Limit: c.Limit, Blocked: c.Blocked})
	}
	// The issuer stand-in's ledger key lives in memory only; the gateway's PAN hash key
	// is made in its token and never leaves it.
	ledgerKey := make([]byte, 32)
	_, _ = rand.Read(ledgerKey)
	if b.Ledger, err = gateway.NewLedger(ledgerKey, cards); err != nil {
		return nil, err
	}
	b.LedgerCards = cards
	if b.PANKey, err = cfg.Gateway.GenerateSecretKey(ctx, hsm.KeySpec{Label: PANKeyLabel, Algorithm: hsm.HMACSHA256, Usage: hsm.UsageMAC}); err != nil {
		return nil, err
	}
	b.PANHasher = store.NewPANHasher(b.PANKey)
	// The merchant's challenge key: made in its token, or the one a bed built earlier
	// on the same token made (a merchant restarted on its token keeps its key).
	if b.ChallengeKey, err = cfg.Merchant.FindSecretKey(ctx, ChallengeKeyLabel); errors.Is(err, hsm.ErrKeyNotFound) {
		b.ChallengeKey, err = cfg.Merchant.GenerateSecretKey(ctx, hsm.KeySpec{Label: ChallengeKeyLabel, Algorithm: hsm.HMACSHA256, Usage: hsm.UsageMAC})
	}
	if err != nil {
		return nil, err
	}
	// Transport: a TLS CA in the TLS token, each service's TLS key in its own token.
	keyIn := func(tok *hsm.Token) func(string) (crypto.Signer, error) {
		return func(label string) (crypto.Signer, error) {
			return tok.GenerateKey(ctx, hsm.KeySpec{Label: label, Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
		}
	}
	k, err := keyIn(cfg.TLS)("tls-ca")
	if err != nil {
		return nil, err
	}
	if b.TLS, err = tlsrpc.NewTLSIssuer("SETPay transport CA", k, 24*time.Hour); err != nil {
		return nil, err
	}
	if b.GatewayDB, err = store.Open(ctx, cfg.GatewayDSN); err != nil {
		return nil, err
	}
	b.closers = append(b.closers, func() { _ = b.GatewayDB.Close() })
	if b.MerchantDB, err = store.Open(ctx, cfg.MerchantDSN); err != nil {
		return nil, err
	}
	b.closers = append(b.closers, func() { _ = b.MerchantDB.Close() })

	if b.Gateway, err = gateway.New(gateway.Config{Sign: b.GatewayEnt.Sign, KXCert: b.GatewayEnt.KXCert, KXKey: b.GatewayEnt.KXKey,
		Trust: b.NewTrust(), Store: b.GatewayDB, PANHashKey: b.PANHasher, Issuer: b.Ledger, Logger: cfg.Logger, Decided: cfg.GatewayDecided}); err != nil {
		return nil, err
	}
	if b.GatewayTLS, err = b.identity(keyIn(cfg.Gateway), "tls-gateway-"+cfg.GatewayID, "127.0.0.1"); err != nil {
		return nil, err
	}
	gs, _ := tlsrpc.NewGRPCServer(tlsrpc.ServerTLS(b.GatewayTLS, b.TLS.Pool()), 4<<20, append(gateway.ServerOptions(), gwOpts...)...)
	b.Gateway.Register(gs)
	if b.GatewayAddr, err = b.serve(gs); err != nil {
		return nil, err
	}
	if b.MerchantClientTLS, err = b.clientIdentity(keyIn(cfg.Merchant), "tls-client-"+cfg.MerchantID, gateway.TLSClientName(cfg.MerchantID)); err != nil {
		return nil, err
	}
	if b.GatewayConn, err = grpc.NewClient(b.GatewayAddr, grpc.WithTransportCredentials(credentials.NewTLS(
		tlsrpc.ClientTLS(&b.MerchantClientTLS, b.TLS.Pool(), "127.0.0.1")))); err != nil {
		return nil, err
	}
	b.closers = append(b.closers, func() { _ = b.GatewayConn.Close() })
	if b.Merchant, err = b.NewMerchant(ctx, b.MerchantEnt, b.MerchantDB, setpb.NewGatewayClient(b.GatewayConn)); err != nil {
		return nil, err
	}
	if b.MerchantTLS, err = b.identity(keyIn(cfg.Merchant), "tls-"+cfg.MerchantID, "127.0.0.1"); err != nil {
		return nil, err
	}
	ms, _ := tlsrpc.NewGRPCServer(&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{b.MerchantTLS.TLSCertificate()}}, 4<<20, merOpts...)
	b.Merchant.Register(ms)
	if b.MerchantAddr, err = b.serve(ms); err != nil {
		return nil, err
	}
	if b.MerchantConn, err = grpc.NewClient(b.MerchantAddr, grpc.WithTransportCredentials(credentials.NewTLS(
		tlsrpc.ClientTLS(nil, b.TLS.Pool(), "127.0.0.1")))); err != nil {
		return nil, err
	}
	b.closers = append(b.closers, func() { _ = b.MerchantConn.Close() })
	return b, nil
}

// identity is a TLS server certificate for name; clientIdentity a TLS client
// certificate (one usage each).
func (b *Bed) identity(gen func(string) (crypto.Signer, error), label, name string) (tlsrpc.Identity, error) {
	k, err := gen(label)
	if err != nil {
		return tlsrpc.Identity{}, err
	}
	return b.TLS.IssueServer(name, k, 24*time.Hour)
}

func (b *Bed) clientIdentity(gen func(string) (crypto.Signer, error), label, name string) (tlsrpc.Identity, error) {
	k, err := gen(label)
	if err != nil {
		return tlsrpc.Identity{}, err
	}
	return b.TLS.IssueClient(name, k, 24*time.Hour)
}

func (b *Bed) serve(s *grpc.Server) (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() { _ = s.Serve(lis) }()
	b.closers = append(b.closers, s.Stop)
	return lis.Addr().String(), nil
}

// Close stops the servers and closes connections and stores, in reverse order.
func (b *Bed) Close() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
	b.closers = nil
}

// PublishCRLs signs a fresh CRL on every CA.
func (b *Bed) PublishCRLs(ctx context.Context) error {
	for _, a := range b.H.Authorities() {
		crl, err := a.CRL(ctx)
		if err != nil {
			return err
		}
		if err := b.CRLs.Put(crl); err != nil {
			return err
		}
	}
	return nil
}

// CACerts are the brand, CCA, MCA and PCA certificates.
func (b *Bed) CACerts() []*x509.Certificate {
	return []*x509.Certificate{b.H.Brand.Certificate(), b.H.CCA.Certificate(), b.H.MCA.Certificate(), b.H.PCA.Certificate()}
}

// NewTrust returns a fresh trust (verifier, known CAs, empty cache) for one party.
func (b *Bed) NewTrust() *setproto.Trust {
	return &setproto.Trust{Verifier: b.Verifier, Intermediates: b.CACerts(), Cache: pki.NewCertCache(256)}
}

// RegisterEntity enrolls a merchant or gateway with its CA, generates its signature
// key (ECDSA P-256) and key-exchange key (RSA-2048, which may not sign) in tok, proves
// possession (a CSR; the CA's key-exchange challenge) and gets both certificates.
func (b *Bed) RegisterEntity(ctx context.Context, role pki.Role, id string, tok *hsm.Token) (*Entity, error) {
	auth := b.H.Issuing(role)
	if auth == nil {
		return nil, fmt.Errorf("system: no issuing CA for %s", role)
	}
	secret, err := auth.Enroll(ctx, role, id)
	if err != nil {
		return nil, err
	}
	sk, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: role.String() + "-" + id + "-sign", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	if err != nil {
		return nil, err
	}
	kk, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: role.String() + "-" + id + "-kx", Algorithm: hsm.RSA2048, Usage: hsm.UsageKeyExchange})
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}}, sk)
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(kk.Public())
	if err != nil {
		return nil, err
	}
	ch, err := auth.KeyExchangeChallenge(ctx, role, id, spki)
	if err != nil {
		return nil, err
	}
	proof, err := pki.AnswerKXChallenge(ctx, ch, kk)
	if err != nil {
		return nil, err
	}
	certs, err := auth.IssueEntity(ctx, ca.EntityRequest{Role: role, ID: id, Secret: secret, SignatureCSR: csr, KeyExchangeKey: spki, KeyExchangeProof: proof})
	if err != nil {
		return nil, err
	}
	return &Entity{ID: id, SignKey: sk, KXKey: kk, KXCert: certs.KeyExchange,
		Sign: setproto.Party{Key: sk, Cert: certs.Signature, Chain: []*x509.Certificate{auth.Certificate(), b.H.Brand.Certificate()}}}, nil
}

// IssueCardholder generates a cardholder signature key in tok and has the CCA certify
// it for the card; validity 0 means the CA's default.
func (b *Bed) IssueCardholder(ctx context.Context, tok *hsm.Token, c CardSpec) (*Cardholder, error) {
	return b.IssueCardholderFor(ctx, tok, c, 0)
}

// IssueCardholderFor is IssueCardholder with a certificate validity.
func (b *Bed) IssueCardholderFor(ctx context.Context, tok *hsm.Token, c CardSpec, validity time.Duration) (*Cardholder, error) {
	label, err := setproto.NewID()
	if err != nil {
		return nil, err
	}
	key, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: "cardholder-" + label, Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "cardholder"}}, key)
	if err != nil {
		return nil, err
	}
	ws, err := setproto.Random(32)
	if err != nil {
		return nil, err
	}
	nonce, err := b.H.CCA.NewCANonce()
	if err != nil {
		return nil, err
	}
	cert, err := b.H.CCA.IssueCardholder(ctx, ca.CardholderRequest{CSR: csr, PAN: c.PAN, Expiry: c.Expiry, WalletSecret: ws, CANonce: nonce, Validity: validity})
	if err != nil {
		return nil, err
	}
	secret, err := pki.PANSecret(ws, nonce)
	if err != nil {
		return nil, err
	}
	return &Cardholder{Name: c.Name, Key: key, Identity: wallet.Identity{Key: key, Cert: cert,
		Chain: []*x509.Certificate{b.H.CCA.Certificate(), b.H.Brand.Certificate()},
		Card:  wallet.Card{PAN: c.PAN, Expiry: c.Expiry, PANSecret: secret}}}, nil
}

// NewMerchant makes a merchant service for ent on db talking to gw.
func (b *Bed) NewMerchant(ctx context.Context, ent *Entity, db store.DB, gw setpb.GatewayClient) (*merchant.Merchant, error) {
	return merchant.New(ctx, merchant.Config{Sign: ent.Sign, KXCert: ent.KXCert, KXKey: ent.KXKey, Trust: b.NewTrust(),
		Store: db, Brand: Brand, GatewayKX: b.GatewayEnt.KXCert, GatewayChain: []*x509.Certificate{b.H.PCA.Certificate(), b.H.Brand.Certificate()},
		Gateway: gw, Offers: b.cfg.Offers, OfferBook: b.offerBook(db), ChallengeKey: b.ChallengeKey, Logger: b.cfg.Logger})
}

func (b *Bed) offerBook(db store.DB) merchant.OfferBook {
	if b.cfg.MerchantOfferBook == nil {
		return nil
	}
	return b.cfg.MerchantOfferBook(db)
}

// Wallet returns a wallet for the i-th cardholder talking to the bed's merchant.
func (b *Bed) Wallet(i int) (*wallet.Wallet, error) {
	if i < 0 || i >= len(b.Cardholders) {
		return nil, errors.New("system: no such cardholder")
	}
	return b.WalletFor(b.Cardholders[i].Identity)
}

// WalletFor returns a wallet for id talking to the bed's merchant.
func (b *Bed) WalletFor(id wallet.Identity) (*wallet.Wallet, error) {
	return wallet.New(wallet.Config{Identity: id, Trust: b.NewTrust(), Merchant: setpb.NewMerchantClient(b.MerchantConn),
		Brand: Brand, Logger: b.cfg.Logger})
}

// LocalGateway is a setpb.GatewayClient that calls a gateway in-process: tests use it
// to put several gateway instances, or one with another clock, behind a merchant.
type LocalGateway struct{ G *gateway.Gateway }

var _ setpb.GatewayClient = LocalGateway{}

// Authorize implements setpb.GatewayClient.
func (l LocalGateway) Authorize(ctx context.Context, in *setpb.Enveloped, _ ...grpc.CallOption) (*setpb.Enveloped, error) {
	return l.G.Authorize(ctx, in)
}

// Capture implements setpb.GatewayClient.
func (l LocalGateway) Capture(ctx context.Context, in *setpb.Enveloped, _ ...grpc.CallOption) (*setpb.Enveloped, error) {
	return l.G.Capture(ctx, in)
}

// AuthReversal implements setpb.GatewayClient.
func (l LocalGateway) AuthReversal(ctx context.Context, in *setpb.Enveloped, _ ...grpc.CallOption) (*setpb.Enveloped, error) {
	return l.G.AuthReversal(ctx, in)
}

// CaptureReversal implements setpb.GatewayClient.
func (l LocalGateway) CaptureReversal(ctx context.Context, in *setpb.Enveloped, _ ...grpc.CallOption) (*setpb.Enveloped, error) {
	return l.G.CaptureReversal(ctx, in)
}

// Credit implements setpb.GatewayClient.
func (l LocalGateway) Credit(ctx context.Context, in *setpb.Enveloped, _ ...grpc.CallOption) (*setpb.Enveloped, error) {
	return l.G.Credit(ctx, in)
}

// CreditReversal implements setpb.GatewayClient.
func (l LocalGateway) CreditReversal(ctx context.Context, in *setpb.Enveloped, _ ...grpc.CallOption) (*setpb.Enveloped, error) {
	return l.G.CreditReversal(ctx, in)
}

// BatchAdmin implements setpb.GatewayClient.
func (l LocalGateway) BatchAdmin(ctx context.Context, in *setpb.Enveloped, _ ...grpc.CallOption) (*setpb.Enveloped, error) {
	return l.G.BatchAdmin(ctx, in)
}

// Inquiry implements setpb.GatewayClient.
func (l LocalGateway) Inquiry(ctx context.Context, in *setpb.Enveloped, _ ...grpc.CallOption) (*setpb.Enveloped, error) {
	return l.G.Inquiry(ctx, in)
}

// NewGateway makes another gateway instance with the bed's gateway keys, on db (a
// second handle on a shared store, for replicas), with clock (nil: time.Now).
func (b *Bed) NewGateway(db store.DB, clock func() time.Time) (*gateway.Gateway, error) {
	return gateway.New(gateway.Config{Sign: b.GatewayEnt.Sign, KXCert: b.GatewayEnt.KXCert, KXKey: b.GatewayEnt.KXKey,
		Trust: b.NewTrust(), Store: db, PANHashKey: b.PANHasher, Issuer: b.Ledger, Clock: clock, Logger: b.cfg.Logger})
}
