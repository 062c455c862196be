package webui_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/ca/catest"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/softhsm/softhsmtest"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/system/systemtest"
	"github.com/setpay/setpay/wallet"
	"github.com/setpay/setpay/wallet/webui"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

const pass = "correct horse battery staple"

var cards = systemtest.Cards()

// bedCRLs hands the UI the bed's current CRLs, as --crls files would.
type bedCRLs struct{ b *system.Bed }

func (c bedCRLs) FetchCRLs(context.Context) ([]*x509.RevocationList, error) {
	return c.b.CRLs.All(), nil
}
func (c bedCRLs) String() string { return "the bed's CRLs" }

// bedRegistrar registers cards with the bed's CCA (the CA service's issuing code)
// and writes the wallet directory as wallet.Register does.
type bedRegistrar struct {
	t   *testing.T
	b   *system.Bed
	tok *hsm.Token
}

func (r bedRegistrar) Register(ctx context.Context, c wallet.CardInput, opts wallet.RegisterOptions) (*wallet.Identity, error) {
	spec := system.CardSpec{Name: "new", PAN: c.PAN, Expiry: c.Expiry}
	ch, err := r.b.IssueCardholder(ctx, r.tok, spec)
	if err != nil {
		return nil, err
	}
	writeWallet(r.t, opts.Dir, r.b, ch, opts.Passphrase)
	return &ch.Identity, nil
}

// writeWallet writes a token wallet directory for ch, in the layout `wallet
// register` writes.
func writeWallet(t *testing.T, dir string, b *system.Bed, ch *system.Cardholder, passphrase []byte) {
	t.Helper()
	sealed, err := wallet.SealCard(ch.Identity.Card, b.H.Root.Certificate(), passphrase)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(dir, 0o700))
	for name, data := range map[string][]byte{
		wallet.FileKeyLabel: []byte(ch.Key.Label() + "\n"), wallet.FileCard: sealed,
		wallet.FileMaskedPAN: []byte(pki.MaskPAN(ch.Identity.Card.PAN) + "\n"),
		wallet.FileChain:     pki.EncodePEM(ch.Identity.Chain...), wallet.FileRoot: pki.EncodePEM(b.H.Root.Certificate()),
		wallet.FileCert: pki.EncodePEM(ch.Identity.Cert),
	} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), data, 0o600))
	}
}

type uiEnv struct {
	t      *testing.T
	b      *system.Bed
	merTok *hsm.Token
	dir    string
	srv    *webui.Server
	http   *httptest.Server
	now    time.Time
}

func newUIEnv(t *testing.T, withCard bool) *uiEnv {
	t.Helper()
	caTok, tok, merTok := softhsmtest.NewToken(t), softhsmtest.NewToken(t), softhsmtest.NewToken(t)
	d := t.TempDir()
	ctx := context.Background()
	b, err := system.Build(ctx, system.Config{
		CARoot: caTok, CA: caTok, Gateway: softhsmtest.NewToken(t), Merchant: merTok, Wallet: tok, TLS: tok,
		GatewayDSN: "sqlite:" + filepath.Join(d, "gw.db"), MerchantDSN: "sqlite:" + filepath.Join(d, "mer.db"),
		GatewayID: "gw-1", MerchantID: "shop-1", Offers: systemtest.Offers(), Cards: cards,
	}, nil, nil)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	e := &uiEnv{t: t, b: b, merTok: merTok, dir: filepath.Join(d, "wallet"), now: time.Now().Truncate(time.Second)}
	if withCard {
		writeWallet(t, e.dir, b, b.Cardholders[systemtest.Alice], []byte(pass))
	}
	var conns []*grpc.ClientConn
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	dial := func(_ context.Context, endpoint, serverName string) (setpb.MerchantClient, error) {
		c, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(nil, b.TLS.Pool(), serverName))))
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
		return setpb.NewMerchantClient(c), nil
	}
	e.srv, err = webui.New(webui.Config{Dir: e.dir, Merchants: dial, CRLs: []pki.CRLFetcher{bedCRLs{b}},
		Registrar: bedRegistrar{t: t, b: b, tok: tok},
		FindKey:   func(ctx context.Context, label string) (crypto.Signer, error) { return tok.FindKey(ctx, label) }})
	require.NoError(t, err)
	e.http = httptest.NewServer(e.srv.Handler())
	t.Cleanup(e.http.Close)
	return e
}

// initiation is a signed initiation of offer for the bed's merchant.
func (e *uiEnv) initiation(offer string, mutate ...func(*setproto.Initiation)) []byte {
	e.t.Helper()
	var o *struct {
		amount int64
		desc   string
	}
	for _, x := range systemtest.Offers() {
		if x.ID == offer {
			o = &struct {
				amount int64
				desc   string
			}{x.Amount, x.Description}
		}
	}
	require.NotNil(e.t, o, "offer %s", offer)
	in := setproto.Initiation{Endpoint: e.b.MerchantAddr, ServerName: "127.0.0.1", MerchantID: "shop-1", Brands: []string{system.Brand},
		Amount: o.amount, Currency: "EUR", Description: o.desc, OfferID: offer, OrderRef: "ord-1",
		IssuedAt: e.now, ExpiresAt: e.now.Add(30 * time.Minute)}
	for _, m := range mutate {
		m(&in)
	}
	f, err := setproto.SignInitiation(context.Background(), e.b.MerchantEnt.Sign, in)
	require.NoError(e.t, err)
	return f
}

// browser is a client with a cookie jar, as a browser is.
type browser struct {
	t    *testing.T
	e    *uiEnv
	c    *http.Client
	csrf string
}

func (e *uiEnv) browser(login bool) *browser {
	e.t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(e.t, err)
	b := &browser{t: e.t, e: e, c: &http.Client{Jar: jar}}
	if login {
		code, body := b.get("/?token=" + url.QueryEscape(e.srv.Token()))
		require.Equal(e.t, http.StatusOK, code, body)
		_, _ = b.get("/receive") // a page with a form: its CSRF token
	}
	return b
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
var pendingRE = regexp.MustCompile(`name="pending" value="([^"]+)"`)

func (b *browser) keep(resp *http.Response) (int, string) {
	b.t.Helper()
	body, err := io.ReadAll(resp.Body)
	require.NoError(b.t, resp.Body.Close())
	require.NoError(b.t, err)
	if m := csrfRE.FindSubmatch(body); m != nil {
		b.csrf = string(m[1])
	}
	return resp.StatusCode, string(body)
}

func (b *browser) get(path string) (int, string) {
	b.t.Helper()
	resp, err := b.c.Get(b.e.http.URL + path)
	require.NoError(b.t, err)
	return b.keep(resp)
}

func (b *browser) post(path string, form url.Values) (int, string) {
	b.t.Helper()
	if form.Get("csrf") == "" && b.csrf != "" {
		form.Set("csrf", b.csrf)
	}
	resp, err := b.c.PostForm(b.e.http.URL+path, form)
	require.NoError(b.t, err)
	return b.keep(resp)
}

func (b *browser) upload(file []byte) (int, string) {
	b.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	require.NoError(b.t, mw.WriteField("csrf", b.csrf))
	fw, err := mw.CreateFormFile("initiation", "order.setpay")
	require.NoError(b.t, err)
	_, err = fw.Write(file)
	require.NoError(b.t, err)
	require.NoError(b.t, mw.Close())
	resp, err := b.c.Post(b.e.http.URL+"/receive", mw.FormDataContentType(), &buf)
	require.NoError(b.t, err)
	return b.keep(resp)
}

func link(file []byte) string {
	u, _ := url.Parse(setproto.InitiationLink("http://x", file))
	return u.RequestURI()
}

// TestWalletUIRequiresAccessToken: nothing is served without the session the
// printed URL's token makes; a wrong token makes none; the cookie is HttpOnly and
// SameSite=Lax; a shop's link followed without it says how to open the wallet.
func TestWalletUIRequiresAccessToken(t *testing.T) {
	e := newUIEnv(t, true)
	anon := e.browser(false)
	for _, p := range []string{"/", "/history", "/register", "/receive", link(e.initiation("book"))} {
		code, body := anon.get(p)
		assert.Equal(t, http.StatusForbidden, code, p)
		assert.Contains(t, body, "Open the wallet from its address", p)
		assert.NotContains(t, body, "411111", p)
	}
	code, body := anon.get("/?token=not-the-token")
	assert.Equal(t, http.StatusForbidden, code)
	assert.Contains(t, body, "This access token is not the one this wallet printed")

	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).
		Get(e.http.URL + "/?token=" + url.QueryEscape(e.srv.Token()))
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, http.StatusSeeOther, resp.StatusCode)
	assert.Equal(t, "/", resp.Header.Get("Location"), "the token leaves the address bar")
	require.Len(t, resp.Cookies(), 1)
	ck := resp.Cookies()[0]
	assert.Equal(t, webui.CookieName, ck.Name)
	assert.True(t, ck.HttpOnly)
	assert.Equal(t, http.SameSiteLaxMode, ck.SameSite)

	in := e.browser(true)
	code, body = in.get("/")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "411111******1111")
}

// TestWalletUIRefusesPostsWithoutCSRF: every form needs the session's CSRF token,
// and a form posted from another origin is refused even with it.
func TestWalletUIRefusesPostsWithoutCSRF(t *testing.T) {
	e := newUIEnv(t, true)
	b := e.browser(true)
	for _, p := range []string{"/pay", "/register", "/inquire", "/receive"} {
		code, body := b.post(p, url.Values{"csrf": {"forged"}, "passphrase": {pass}})
		assert.Equal(t, http.StatusForbidden, code, p)
		assert.Contains(t, body, "security token is missing or wrong (CSRF protection)", p)
	}
	req, err := http.NewRequest(http.MethodPost, e.http.URL+"/register", strings.NewReader(url.Values{"csrf": {b.csrf}}.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	resp, err := b.c.Do(req)
	require.NoError(t, err)
	code, body := b.keep(resp)
	assert.Equal(t, http.StatusForbidden, code)
	assert.Contains(t, body, "sent from another site")
}

// TestWalletUIListenRefusesNonLoopback: the UI listens on loopback only.
func TestWalletUIListenRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:0", "[::]:0", "example.com:0", "no-port"} {
		l, err := webui.Listen(addr)
		if assert.Error(t, err, addr) {
			assert.Contains(t, err.Error(), addr)
		} else {
			_ = l.Close()
		}
	}
	l, err := webui.Listen("127.0.0.1:0")
	require.NoError(t, err)
	assert.True(t, l.Addr().(*net.TCPAddr).IP.IsLoopback())
	require.NoError(t, l.Close())
}

// TestWalletUISecurityHeaders: every answer, page or refusal, carries the headers.
func TestWalletUISecurityHeaders(t *testing.T) {
	e := newUIEnv(t, true)
	b := e.browser(true)
	for _, p := range []string{"/", "/history", "/register", "/receive", "/static/style.css", "/nope"} {
		resp, err := b.c.Get(e.http.URL + p)
		require.NoError(t, err)
		_, _ = b.keep(resp)
		h := resp.Header
		assert.Contains(t, h.Get("Content-Security-Policy"), "default-src 'none'", p)
		assert.Contains(t, h.Get("Content-Security-Policy"), "frame-ancestors 'none'", p)
		assert.NotContains(t, h.Get("Content-Security-Policy"), "unsafe-inline", p)
		assert.Equal(t, "nosniff", h.Get("X-Content-Type-Options"), p)
		assert.Equal(t, "no-referrer", h.Get("Referrer-Policy"), p)
		assert.Equal(t, "DENY", h.Get("X-Frame-Options"), p)
	}
	// A page asked for under another host name (DNS rebinding) is refused.
	req, err := http.NewRequest(http.MethodGet, e.http.URL+"/", nil)
	require.NoError(t, err)
	req.Host = "attacker.example"
	resp, err := b.c.Do(req)
	require.NoError(t, err)
	code, _ := b.keep(resp)
	assert.Equal(t, http.StatusMisdirectedRequest, code)
}

// TestWalletUIRefusals: everything the CLI wallet refuses, the UI refuses with the
// reason in words on the page: a tampered or expired initiation, an untrusted or
// revoked merchant, a damaged file, an unreachable merchant, a wrong passphrase.
func TestWalletUIRefusals(t *testing.T) {
	e := newUIEnv(t, true)
	ctx := context.Background()
	good := e.initiation("book")
	tampered := bytes.Clone(good)
	i := bytes.Index(tampered, []byte("hardcover"))
	require.Positive(t, i)
	tampered[i] = 'H'
	expired := e.initiation("book", func(in *setproto.Initiation) {
		in.IssuedAt, in.ExpiresAt = e.now.Add(-2*time.Hour), e.now.Add(-time.Hour)
	})
	// A merchant of another hierarchy: the wallet does not trust its root.
	other := catest.New(t)
	otherKey := other.Key(t, string(hsm.ECDSAP256), hsm.UsageSign)
	otherSecret, err := other.H.MCA.Enroll(ctx, pki.RoleMerchant, "shop-1")
	require.NoError(t, err)
	otherKX := other.Key(t, string(hsm.RSA2048), hsm.UsageKeyExchange)
	spki, err := x509.MarshalPKIXPublicKey(otherKX.Public())
	require.NoError(t, err)
	ch, err := other.H.MCA.KeyExchangeChallenge(ctx, pki.RoleMerchant, "shop-1", spki)
	require.NoError(t, err)
	proof, err := pki.AnswerKXChallenge(ctx, ch, otherKX)
	require.NoError(t, err)
	issued, err := other.H.MCA.IssueEntity(ctx, ca.EntityRequest{Role: pki.RoleMerchant, ID: "shop-1", Secret: otherSecret,
		SignatureCSR: catest.CSR(t, otherKey, "shop-1"), KeyExchangeKey: spki, KeyExchangeProof: proof})
	require.NoError(t, err)
	untrusted, err := setproto.SignInitiation(ctx, setproto.Party{Key: otherKey, Cert: issued.Signature,
		Chain: []*x509.Certificate{other.H.MCA.Certificate(), other.H.Brand.Certificate()}},
		setproto.Initiation{Endpoint: e.b.MerchantAddr, ServerName: "127.0.0.1", MerchantID: "shop-1", Brands: []string{system.Brand},
			Amount: 25_00, Currency: "EUR", Description: "The SET book, hardcover", OfferID: "book", OrderRef: "o", IssuedAt: e.now, ExpiresAt: e.now.Add(time.Hour)})
	require.NoError(t, err)
	// A revoked merchant of the wallet's own hierarchy.
	revokedEnt, err := e.b.RegisterEntity(ctx, pki.RoleMerchant, "shop-2", e.merTok)
	require.NoError(t, err)
	revoked, err := setproto.SignInitiation(ctx, revokedEnt.Sign, setproto.Initiation{Endpoint: e.b.MerchantAddr, ServerName: "127.0.0.1",
		MerchantID: "shop-2", Brands: []string{system.Brand}, Amount: 25_00, Currency: "EUR", Description: "The SET book, hardcover",
		OfferID: "book", OrderRef: "o", IssuedAt: e.now, ExpiresAt: e.now.Add(time.Hour)})
	require.NoError(t, err)
	require.NoError(t, e.b.H.MCA.Revoke(ctx, revokedEnt.Sign.Cert.SerialNumber, ca.RevokeKeyCompromise))
	require.NoError(t, e.b.PublishCRLs(ctx))
	// A merchant whose payment service does not answer.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := l.Addr().String()
	require.NoError(t, l.Close())
	unreachable := e.initiation("book", func(in *setproto.Initiation) { in.Endpoint = closed })

	b := e.browser(true)
	tests := []struct {
		name   string
		file   []byte
		upload bool
		code   int
		title  string
		msg    string
	}{
		{"tampered", tampered, false, http.StatusUnprocessableEntity, "Tampered payment initiation", "This payment initiation has been altered"},
		{"tampered file", tampered, true, http.StatusUnprocessableEntity, "Tampered payment initiation", "Do not pay with it"},
		{"expired", expired, false, http.StatusUnprocessableEntity, "Expired payment initiation", "This payment initiation has expired"},
		{"untrusted merchant", untrusted, false, http.StatusUnprocessableEntity, "Untrusted merchant", "this wallet does not trust this merchant"},
		{"revoked merchant", revoked, false, http.StatusUnprocessableEntity, "Revoked certificate", "has been revoked by its certificate authority"},
		{"damaged file", []byte("not an initiation"), true, http.StatusUnprocessableEntity, "Damaged payment initiation", "not a readable payment initiation"},
		{"merchant unreachable", unreachable, false, http.StatusBadGateway, "Merchant unreachable", "cannot be reached"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var code int
			var body string
			if tt.upload {
				code, body = b.upload(tt.file)
			} else {
				code, body = b.get(link(tt.file))
			}
			assert.Equal(t, tt.code, code, body)
			assert.Contains(t, body, "<h1>"+tt.title+"</h1>")
			assert.Contains(t, body, tt.msg)
			assert.Contains(t, body, "Nothing was paid.")
			assert.NotContains(t, body, `name="pending"`, "nothing to confirm")
		})
	}

	t.Run("wrong passphrase", func(t *testing.T) {
		code, body := b.get(link(good))
		require.Equal(t, http.StatusOK, code, body)
		pend := pendingRE.FindStringSubmatch(body)
		require.NotNil(t, pend)
		code, body = b.post("/pay", url.Values{"pending": {pend[1]}, "card": {"main"}, "passphrase": {"not the passphrase"}})
		assert.Equal(t, http.StatusForbidden, code)
		assert.Contains(t, body, "Passphrase: wrong passphrase for card 411111******1111. Nothing was paid")
		assert.Contains(t, body, `name="pending" value="`+pend[1]+`"`, "the confirmation stays, to enter it again")
		bal, _ := e.b.Ledger.Balance(cards[systemtest.Alice].PAN)
		assert.Equal(t, cards[systemtest.Alice].Balance, bal, "nothing was paid")
	})
}

// TestWalletUIRegisterShowsMaskedPANOnly: a card registered through the UI is
// listed masked; the full number appears in no page, not even a refused form.
func TestWalletUIRegisterShowsMaskedPANOnly(t *testing.T) {
	e := newUIEnv(t, false)
	b := e.browser(true)
	pan := cards[systemtest.Frank].PAN
	_, body := b.get("/")
	assert.Contains(t, body, "This wallet holds no card yet")
	code, body := b.get("/register")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, `<label for="pan">Card number</label>`)
	var bodies []string
	code, body = b.post("/register", url.Values{"pan": {pan}, "expiry": {"07/31"}, "postal_code": {"75001"},
		"passphrase": {pass}, "passphrase2": {pass + "x"}})
	assert.Equal(t, http.StatusUnprocessableEntity, code)
	assert.Contains(t, body, "Passphrase: the two entries differ.")
	bodies = append(bodies, body)
	code, body = b.post("/register", url.Values{"pan": {"4111111111111112"}, "expiry": {"07/31"}, "postal_code": {"75001"},
		"passphrase": {pass}, "passphrase2": {pass}})
	assert.Equal(t, http.StatusUnprocessableEntity, code)
	assert.Contains(t, body, "Card number: not a valid card number")
	bodies = append(bodies, body)

	code, body = b.post("/register", url.Values{"pan": {pan[:4] + " " + pan[4:8] + " " + pan[8:12] + " " + pan[12:]}, "expiry": {"07/31"},
		"postal_code": {"75001"}, "cardholder_name": {"Frank"}, "passphrase": {pass}, "passphrase2": {pass}})
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "Card "+pki.MaskPAN(pan)+" is registered.")
	assert.Contains(t, body, pki.MaskPAN(pan))
	bodies = append(bodies, body)
	_, body = b.get("/")
	bodies = append(bodies, body)
	for _, body := range bodies {
		assert.NotContains(t, body, pan)
		assert.NotContains(t, body, "4111111111111112")
	}
	// The card pays.
	code, body = b.get(link(e.initiation("book")))
	require.Equal(t, http.StatusOK, code, body)
	pend := pendingRE.FindStringSubmatch(body)
	require.NotNil(t, pend)
	code, body = b.post("/pay", url.Values{"pending": {pend[1]}, "card": {"main"}, "passphrase": {pass}})
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "Approved")
	assert.NotContains(t, body, pan)
	// A second card goes under cards/.
	code, body = b.post("/register", url.Values{"pan": {cards[systemtest.Erin].PAN}, "expiry": {"203008"},
		"postal_code": {"75001"}, "passphrase": {pass}, "passphrase2": {pass}})
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, pki.MaskPAN(pan))
	assert.Contains(t, body, pki.MaskPAN(cards[systemtest.Erin].PAN))
	assert.NotContains(t, body, cards[systemtest.Erin].PAN)
}

// TestWalletUIPurchasesAndHistory: the confirmation shows the merchant and the
// gateway as verified from their certificates, the order and the amount; one UI
// makes several purchases (link and file), each verified, recorded in the history
// without the card number, and an inquiry reads the merchant's state.
func TestWalletUIPurchasesAndHistory(t *testing.T) {
	e := newUIEnv(t, true)
	b := e.browser(true)
	var xids []string
	for i, offer := range []string{"book", "coffee", "book"} {
		file := e.initiation(offer)
		var code int
		var body string
		if i == 1 {
			_, _ = b.get("/receive")
			code, body = b.upload(file)
		} else {
			code, body = b.get(link(file))
		}
		require.Equal(t, http.StatusOK, code, body)
		assert.Contains(t, body, "shop-1")
		assert.Contains(t, body, e.b.H.MCA.Certificate().Subject.CommonName, "the merchant's MCA")
		assert.Contains(t, body, e.b.H.Brand.Certificate().Subject.CommonName, "the brand")
		assert.Contains(t, body, "gw-1")
		assert.Contains(t, body, e.b.H.PCA.Certificate().Subject.CommonName, "the gateway's PCA")
		assert.Contains(t, body, e.b.MerchantEnt.Sign.Cert.NotAfter.UTC().Format("2006-01-02"), "the merchant certificate's validity")
		assert.Contains(t, body, `<label for="passphrase">`)
		if offer == "book" {
			assert.Contains(t, body, "25.00 EUR")
			assert.Contains(t, body, "The SET book, hardcover")
		}
		pend := pendingRE.FindStringSubmatch(body)
		require.NotNil(t, pend)
		code, body = b.post("/pay", url.Values{"pending": {pend[1]}, "card": {"main"}, "passphrase": {pass}})
		require.Equal(t, http.StatusOK, code, "purchase %d (%s): %s", i+1, offer, body)
		assert.Contains(t, body, "Approved: APPROVED")
		assert.Contains(t, body, "411111******1111")
		m := regexp.MustCompile(`<code id="xid">([^<]+)</code>`).FindStringSubmatch(body)
		require.NotNil(t, m)
		xids = append(xids, m[1])
		// The same confirmation cannot pay twice.
		code, body = b.post("/pay", url.Values{"pending": {pend[1]}, "card": {"main"}, "passphrase": {pass}})
		assert.Equal(t, http.StatusGone, code)
		assert.Contains(t, body, "not waiting for confirmation any more")
	}
	bal, _ := e.b.Ledger.Balance(cards[systemtest.Alice].PAN)
	assert.Equal(t, cards[systemtest.Alice].Balance-25_00-15_00-25_00, bal)

	code, body := b.get("/history")
	require.Equal(t, http.StatusOK, code)
	for _, x := range xids {
		assert.Contains(t, body, x)
	}
	assert.Contains(t, body, "not asked yet")
	hist, err := os.ReadFile(filepath.Join(e.dir, webui.HistoryFile))
	require.NoError(t, err)
	assert.NotContains(t, string(hist), cards[systemtest.Alice].PAN)
	assert.Contains(t, string(hist), "411111******1111")
	st, err := os.Stat(filepath.Join(e.dir, webui.HistoryFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	code, body = b.get("/purchase?xid=" + xids[1])
	require.Equal(t, http.StatusOK, code)
	code, body = b.post("/inquire", url.Values{"xid": {xids[1]}, "passphrase": {"wrong passphrase"}})
	assert.Equal(t, http.StatusForbidden, code)
	assert.Contains(t, body, "Passphrase: wrong passphrase")
	code, body = b.post("/inquire", url.Values{"xid": {xids[1]}, "passphrase": {pass}})
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "The merchant says: captured.")
	code, body = b.post("/inquire", url.Values{"xid": {xids[0]}, "passphrase": {pass}})
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "The merchant says: authorized.")
	_, body = b.get("/history")
	assert.Contains(t, body, "captured (")
	assert.Contains(t, body, "authorized (")
}

// proxy forwards TCP connections to a target until stopped, so a test can take a
// merchant off the network and bring it back on the same address.
type proxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	l      net.Listener
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	p := &proxy{t: t, target: target}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p.addr = l.Addr().String()
	p.serve(l)
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) serve(l net.Listener) {
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); _ = u.Close() }()
			go func() { _, _ = io.Copy(c, u); _ = c.Close() }()
		}
	}()
}

func (p *proxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		_ = p.l.Close()
		p.l = nil
	}
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *proxy) start() {
	l, err := net.Listen("tcp", p.addr)
	require.NoError(p.t, err)
	p.serve(l)
}

// TestWalletUIPayWhileMerchantUnreachable: the merchant drops off the network
// between the confirmation and the payment: the page says the merchant did not
// answer and keeps the confirmation; once it is back, paying again sends the same
// request and the card is charged once.
func TestWalletUIPayWhileMerchantUnreachable(t *testing.T) {
	e := newUIEnv(t, true)
	p := newProxy(t, e.b.MerchantAddr)
	b := e.browser(true)
	code, body := b.get(link(e.initiation("book", func(in *setproto.Initiation) { in.Endpoint = p.addr })))
	require.Equal(t, http.StatusOK, code, body)
	pend := pendingRE.FindStringSubmatch(body)
	require.NotNil(t, pend)
	p.stop()
	code, body = b.post("/pay", url.Values{"pending": {pend[1]}, "card": {"main"}, "passphrase": {pass}})
	assert.Equal(t, http.StatusBadGateway, code)
	assert.Contains(t, body, "did not answer the purchase. Try again")
	assert.Contains(t, body, `name="pending" value="`+pend[1]+`"`, "the confirmation stays")
	p.start()
	// The cardholder presses Pay again until the connection is back (gRPC reconnects
	// with a backoff).
	for i := 0; i < 100; i++ {
		code, body = b.post("/pay", url.Values{"pending": {pend[1]}, "card": {"main"}, "passphrase": {pass}})
		if code != http.StatusBadGateway {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "Approved: APPROVED")
	bal, _ := e.b.Ledger.Balance(cards[systemtest.Alice].PAN)
	assert.Equal(t, cards[systemtest.Alice].Balance-25_00, bal, "charged once")
}

// TestWalletUIDeclinedCard: with two cards the confirmation offers both; a card
// the issuer declines shows the verified decline, recorded in the history.
func TestWalletUIDeclinedCard(t *testing.T) {
	e := newUIEnv(t, true)
	writeWallet(t, filepath.Join(e.dir, "cards", "card-bob"), e.b, e.b.Cardholders[systemtest.Bob], []byte(pass))
	b := e.browser(true)
	code, body := b.get(link(e.initiation("book")))
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, `<label for="card-main" class="pan">411111******1111</label>`)
	assert.Contains(t, body, `<label for="card-card-bob" class="pan">`+pki.MaskPAN(cards[systemtest.Bob].PAN)+`</label>`)
	pend := pendingRE.FindStringSubmatch(body)
	require.NotNil(t, pend)
	code, body = b.post("/pay", url.Values{"pending": {pend[1]}, "card": {"card-bob"}, "passphrase": {pass}})
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "Not approved: DECLINED_INSUFFICIENT_FUNDS")
	assert.Contains(t, body, pki.MaskPAN(cards[systemtest.Bob].PAN))
	_, body = b.get("/history")
	assert.Contains(t, body, "DECLINED_INSUFFICIENT_FUNDS")
	assert.NotContains(t, body, cards[systemtest.Bob].PAN)
}
