package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/merchant/shop"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/softhsm"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/wallet"
	"github.com/setpay/setpay/wallet/webui"
)

// runDemo is the README's main job: a whole SET system in one process on an embedded
// SoftHSM token directory and embedded SQLite stores under --var, with a readable
// transcript. Each run starts from fresh tokens and stores, so running it twice works.
func runDemo(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay demo", env)
	varDir := fs.String("var", "./var/demo", "directory for the embedded tokens and stores: new, empty, or made by an earlier demo")
	web := fs.Bool("web", false, "after the transcript, serve the storefront, the merchant console and Alice's wallet UI on loopback until interrupted (Ctrl-C)")
	var at demoWebListens
	fs.StringVar(&at.shop, "shop-listen", "127.0.0.1:8443", "with --web: the storefront's address")
	fs.StringVar(&at.console, "console-listen", "127.0.0.1:8444", "with --web: the merchant console's address")
	fs.StringVar(&at.wallet, "wallet-listen", webui.DefaultListen, "with --web: the wallet UI's address (loopback only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected arguments %q", fs.Args())
	}
	began := time.Now()
	root := mustAbs(*varDir)
	if err := resetDemoDir(root); err != nil {
		return err
	}
	d, err := softhsm.Create(filepath.Join(root, "softhsm"))
	if err != nil {
		return err
	}
	if err := d.Activate(); err != nil {
		return err
	}
	pin, err := d.EnsurePIN()
	if err != nil {
		return err
	}
	path, err := softhsm.FindModule()
	if err != nil {
		return err
	}
	mod, err := hsm.OpenModule(path, env.logger)
	if err != nil {
		return err
	}
	defer mod.Close()
	tokens := map[string]*hsm.Token{}
	defer func() {
		for _, t := range tokens {
			_ = t.Close()
		}
	}()
	for _, label := range []string{"setpay-ca-root", "setpay-ca", "setpay-gateway", "setpay-merchant", "setpay-wallet", "setpay-tls"} {
		if err := softhsm.InitToken(mod, label, pin); err != nil {
			return err
		}
		tok, err := mod.OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: label}, PIN: hsm.PINSource("file:" + d.PINFile()), Logger: env.logger})
		if err != nil {
			return err
		}
		tokens[label] = tok
	}
	cards := []system.CardSpec{
		{Name: "Alice", PAN: "4111111111111111", Expiry: "203012", Balance: 500_00},
		{Name: "Bob", PAN: "5555555555554444", Expiry: "202911", Balance: 10_00},
		{Name: "Carol", PAN: "4012888888881881", Expiry: "203106", Balance: 900_00, Blocked: true},
	}
	offers := []merchant.Offer{
		{ID: "book", Description: "Applied Cryptography, 2nd edition (hardcover)", Amount: 49_90, Currency: "EUR"},
		{ID: "coffee", Description: "Single-origin coffee beans, 1 kg", Amount: 24_50, Currency: "EUR", Sale: true},
	}
	w := env.stdout
	fmt.Fprintf(w, "SET demo: every CA, gateway, merchant and cardholder private key is in a PKCS#11 token\n")
	fmt.Fprintf(w, "(SoftHSM2 at %s), services speak gRPC over TLS on loopback, stores are SQLite in %s.\n\n", d.Root, root)
	b, err := system.Build(ctx, system.Config{
		CARoot: tokens["setpay-ca-root"], CA: tokens["setpay-ca"], Gateway: tokens["setpay-gateway"],
		Merchant: tokens["setpay-merchant"], Wallet: tokens["setpay-wallet"], TLS: tokens["setpay-tls"],
		GatewayDSN: "sqlite:" + filepath.Join(root, "gateway.db"), MerchantDSN: "sqlite:" + filepath.Join(root, "merchant.db"),
		GatewayID: "gw-eu-1", MerchantID: "bookshop-42", Offers: offers, Cards: cards, Logger: env.logger,
		MerchantOfferBook: func(db store.DB) merchant.OfferBook {
			if !*web {
				return nil
			}
			return shop.NewBook(db) // the storefront's checkouts
		},
	}, nil, nil)
	if err != nil {
		return err
	}
	defer b.Close()

	fmt.Fprintf(w, "PKI   root -> brand -> CCA / MCA / PCA   (keys in tokens setpay-ca-root, setpay-ca)\n")
	ent := func(role string, e *system.Entity, issuer string) {
		fmt.Fprintf(w, "      %-8s %-12s signature key    %s  (certificate from the %s)\n", role, e.ID, shortURI(e.SignKey.URI()), issuer)
		fmt.Fprintf(w, "      %-8s %-12s key-exchange key %s  (RSA-2048, cannot sign)\n", "", "", shortURI(e.KXKey.URI()))
	}
	ent("gateway", b.GatewayEnt, "PCA")
	ent("merchant", b.MerchantEnt, "MCA")
	for _, c := range b.Cardholders {
		fmt.Fprintf(w, "      card     %-12s %s  key %s  (certificate from the CCA, names no PAN)\n", c.Name, pki.MaskPAN(c.Identity.Card.PAN), shortURI(c.Key.URI()))
	}
	fmt.Fprintf(w, "gRPC  gateway %s (mutual TLS), merchant %s (TLS); TLS keys in each party's token, TLS CA key in setpay-tls\n", b.GatewayAddr, b.MerchantAddr)

	runs := []struct {
		card  int
		offer string
	}{{0, "book"}, {0, "coffee"}, {1, "book"}, {2, "coffee"}}
	var xids []string
	for i, r := range runs {
		xid, err := demoPurchase(ctx, w, b, i+1, b.Cardholders[r.card], offers, r.offer)
		if err != nil {
			return err
		}
		xids = append(xids, xid)
	}
	if err := demoLifecycle(ctx, w, b, xids[0]); err != nil {
		return err
	}
	var auths []*store.Authorization
	if err := b.GatewayDB.View(ctx, func(ctx context.Context, tx store.Tx) error {
		for _, x := range xids {
			a, err := tx.GetAuthorization(ctx, b.MerchantEnt.ID, x)
			if err != nil {
				return err
			}
			auths = append(auths, a)
		}
		return nil
	}); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nGateway store (PAN kept only as a hash keyed in the gateway's token, %s, and its last 4 digits):\n", shortURI(b.PANKey.URI()))
	for _, a := range auths {
		fmt.Fprintf(w, "  %s  %-17s %8s %s  %-10s captured %8s  credited %8s  %s\n", a.XID, a.PANMask, money(a.Amount), a.Currency,
			a.Status, money(a.CapturedTotal), money(a.CreditedTotal), a.DeclineReason)
	}
	n, err := b.GatewayDB.VerifyAudit(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Audit: %d private-key operations in the gateway's hash chain, verified (setpay audit verify --store sqlite:%s)\n",
		n, filepath.Join(root, "gateway.db"))
	cmds, err := exportServeConfigs(root, d, path, b, offers)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\ndone in %.1fs\n", time.Since(began).Seconds())
	fmt.Fprintf(w, "\nThe same parties as separate processes, on these tokens and stores (configs written to %s):\n", root)
	for _, c := range cmds {
		fmt.Fprintf(w, "  %s\n", c)
	}
	fmt.Fprintf(w, "\n%s\n", demoGuideNote)
	if *web {
		return serveDemoWeb(ctx, env, root, b, tokens["setpay-wallet"], offers, at)
	}
	return nil
}

// demoGuideNote ends the demo's transcript: the demo is one process; the operator's
// guide is how the parties run as separate services.
const demoGuideNote = "This demo runs every party in one process. To run the CA, gateway and merchant as separate\n" +
	"services from an empty directory, each on its own token, follow docs/operate.md (make test runs it as written)."

// demoMarker marks a directory as the demo's own: only such a directory (or a new or
// empty one) is reset, so a demo run where a real CA keeps its tokens deletes nothing.
const demoMarker = ".setpay-demo"

// demoOwned is what the demo creates in its directory, and all that it resets.
var demoOwned = []string{"softhsm", "pki", "wallet-alice", "wallet-alice.pass", "wallet-bob", "wallet-bob.pass", "console-users", "console-password", "gateway.yaml", "merchant.yaml", "issuer-ledger.yaml",
	"gateway.db", "gateway.db-wal", "gateway.db-shm", "merchant.db", "merchant.db-wal", "merchant.db-shm"}

// resetDemoDir prepares root for a demo run: a missing or empty directory is created
// and marked; a marked one has the demo's own files removed; anything else is refused
// untouched.
func resetDemoDir(root string) error {
	entries, err := os.ReadDir(root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(root, 0o700); err != nil {
			return fmt.Errorf("demo: create %s: %w", root, err)
		}
	case err != nil:
		return fmt.Errorf("demo: --var %s: %w", root, err)
	case len(entries) == 0:
	default:
		st, err := os.Lstat(filepath.Join(root, demoMarker))
		if err != nil || !st.Mode().IsRegular() {
			return fmt.Errorf("demo: %s holds files the demo did not make (no %s marker); refusing to reset it: "+
				"give --var a new or empty directory", root, demoMarker)
		}
		for _, p := range demoOwned {
			if err := os.RemoveAll(filepath.Join(root, p)); err != nil {
				return fmt.Errorf("demo: reset %s: %w", p, err)
			}
		}
	}
	marker := "made by `setpay demo`, which deletes and recreates in this directory: " + strings.Join(demoOwned, " ") + "\n"
	if err := os.WriteFile(filepath.Join(root, demoMarker), []byte(marker), 0o600); err != nil {
		return fmt.Errorf("demo: mark %s: %w", root, err)
	}
	return nil
}

// exportServeConfigs writes the certificates, CRLs, the gateway and merchant YAML
// configurations and Alice's wallet directory so that `setpay gateway serve`,
// `setpay merchant serve` and `setpay wallet buy` run on the demo's tokens, and
// returns the commands to do so.
func exportServeConfigs(root string, d softhsm.Dir, module string, b *system.Bed, offers []merchant.Offer) ([]string, error) {
	pkiDir := filepath.Join(root, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"root.pem":                pki.EncodePEM(b.H.Root.Certificate()),
		"ca-chain.pem":            pki.EncodePEM(b.CACerts()...),
		"crls.pem":                pki.EncodeCRLPEM(b.CRLs.All()...),
		"gateway-sign.pem":        pki.EncodePEM(b.GatewayEnt.Sign.Certificates()...),
		"gateway-kx.pem":          pki.EncodePEM(append([]*x509.Certificate{b.GatewayEnt.KXCert}, b.GatewayEnt.Sign.Chain...)...),
		"merchant-sign.pem":       pki.EncodePEM(b.MerchantEnt.Sign.Certificates()...),
		"merchant-kx.pem":         pki.EncodePEM(append([]*x509.Certificate{b.MerchantEnt.KXCert}, b.MerchantEnt.Sign.Chain...)...),
		"tls-ca.pem":              pki.EncodePEM(b.TLS.Certificate()),
		"gateway-tls.pem":         pki.EncodePEM(b.GatewayTLS.Cert),
		"merchant-tls.pem":        pki.EncodePEM(b.MerchantTLS.Cert),
		"merchant-client-tls.pem": pki.EncodePEM(b.MerchantClientTLS.Cert),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(pkiDir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	in := func(n string) string { return filepath.Join(pkiDir, n) }
	common := func(e *system.Entity, token, listen, sign, kx, store, tlsCert string, tlsKey any) partyConfig {
		var c partyConfig
		c.Module, c.Token, c.PINSource, c.Listen = module, token, "file:"+d.PINFile(), listen
		c.SignKey, c.SignCert, c.KXKey, c.KXCert = e.SignKey.URI(), in(sign), e.KXKey.URI(), in(kx)
		c.Root, c.CAChain, c.CRLs, c.Store = in("root.pem"), []string{in("ca-chain.pem")}, []string{in("crls.pem")}, "sqlite:"+filepath.Join(root, store)
		c.TLS.Cert, c.TLS.Key = in(tlsCert), setproto.KeyURI(tlsKey)
		return c
	}
	// Shipped configs come with limits: a rate of 0 would let one client fill the
	// services (issue 12, finding 11).
	gwLimits, merLimits := demoLimits()
	gw := gatewayConfig{partyConfig: common(b.GatewayEnt, "setpay-gateway", "127.0.0.1:7501", "gateway-sign.pem", "gateway-kx.pem", "gateway.db", "gateway-tls.pem", b.GatewayTLS.Key),
		PANHashKey: b.PANKey.URI(), LedgerFile: filepath.Join(root, "issuer-ledger.yaml")}
	gw.TLS.ClientCA = in("tls-ca.pem")
	gw.Limits = gwLimits
	mc := merchantConfig{partyConfig: common(b.MerchantEnt, "setpay-merchant", "127.0.0.1:7502", "merchant-sign.pem", "merchant-kx.pem", "merchant.db", "merchant-tls.pem", b.MerchantTLS.Key),
		Brand: system.Brand, Offers: offers, ChallengeKey: b.ChallengeKey.URI()}
	mc.Limits = merLimits
	mc.Gateway.Address, mc.Gateway.ServerName, mc.Gateway.KXCert, mc.Gateway.TLSCA = "127.0.0.1:7501", "127.0.0.1", in("gateway-kx.pem"), in("tls-ca.pem")
	mc.Gateway.ClientCert, mc.Gateway.ClientKey = in("merchant-client-tls.pem"), setproto.KeyURI(b.MerchantClientTLS.Key)
	// The issuer stand-in's card numbers are the issuer's data, in a file of their own
	// that the gateway's files never include.
	for name, v := range map[string]any{"gateway.yaml": gw, "merchant.yaml": mc, "issuer-ledger.yaml": b.LedgerCards} {
		y, err := yaml.Marshal(v)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(root, name), y, 0o600); err != nil {
			return nil, err
		}
	}
	// Alice's and Bob's wallets: token wallets in the layout `setpay wallet register`
	// writes, each with its passphrase file (Bob's card declines an order above 10.00:
	// the browser tests' declined purchase).
	var wdir, passFile string
	for _, ch := range b.Cardholders[:2] {
		d, p, err := exportWallet(root, b, ch)
		if err != nil {
			return nil, err
		}
		if wdir == "" {
			wdir, passFile = d, p
		}
	}
	return []string{
		"export SOFTHSM2_CONF=" + d.ConfPath(),
		"setpay gateway serve --config " + filepath.Join(root, "gateway.yaml") + " &",
		"setpay merchant serve --config " + filepath.Join(root, "merchant.yaml") + " &",
		"setpay wallet buy --softhsm-dir " + d.Root + " --token setpay-wallet --wallet " + wdir + " --passphrase-file " + passFile +
			" --merchant 127.0.0.1:7502 --merchant-ca " + in("tls-ca.pem") + " --crls " + in("crls.pem") + " --offer book",
		"setpay merchant orders --config " + filepath.Join(root, "merchant.yaml") + "   # then: merchant capture --xid XID, credit, batch close ...",
	}, nil
}

// exportWallet writes ch's wallet directory, wallet-<name>, and its passphrase file,
// wallet-<name>.pass, under root, and returns their paths.
func exportWallet(root string, b *system.Bed, ch *system.Cardholder) (dir, passFile string, err error) {
	pass, err := setproto.NewID()
	if err != nil {
		return "", "", err
	}
	card, err := wallet.SealCard(ch.Identity.Card, b.H.Root.Certificate(), []byte(pass))
	if err != nil {
		return "", "", err
	}
	dir = filepath.Join(root, "wallet-"+strings.ToLower(ch.Name))
	if err := os.RemoveAll(dir); err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	for name, data := range map[string][]byte{
		wallet.FileKeyLabel: []byte(ch.Key.Label() + "\n"), wallet.FileCard: card,
		wallet.FileMaskedPAN: []byte(pki.MaskPAN(ch.Identity.Card.PAN) + "\n"),
		wallet.FileChain:     pki.EncodePEM(ch.Identity.Chain...), wallet.FileRoot: pki.EncodePEM(b.H.Root.Certificate()),
		wallet.FileCert: pki.EncodePEM(ch.Identity.Cert),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return "", "", err
		}
	}
	passFile = dir + ".pass"
	if err := os.WriteFile(passFile, []byte(pass+"\n"), 0o600); err != nil {
		return "", "", err
	}
	return dir, passFile, nil
}

// demoLifecycle captures the authorization-only purchase xid in a batch, refunds part
// of it, closes the batch and shows its totals: each request signed by the
// merchant's token key and enveloped to the gateway, each answer signed by the
// gateway and enveloped back.
func demoLifecycle(ctx context.Context, w io.Writer, b *system.Bed, xid string) error {
	m, g := b.Merchant, b.GatewayEnt
	var o *store.Order
	if err := b.MerchantDB.View(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		o, err = tx.GetOrder(ctx, xid)
		return err
	}); err != nil {
		return err
	}
	refund := o.Amount / 5
	fmt.Fprintf(w, "\nAfter the purchases: merchant -> gateway requests signed by %s, enveloped to the gateway;\n", shortURI(b.MerchantEnt.SignKey.URI()))
	fmt.Fprintf(w, "answers signed by %s, enveloped to the merchant; each pair ID answered exactly once\n", shortURI(g.SignKey.URI()))
	batch := "batch-" + time.Now().UTC().Format("20060102")
	if _, err := m.Batch(ctx, "", batch, setpb.BatchAction_BATCH_OPEN); err != nil {
		return err
	}
	fmt.Fprintf(w, "  BatchAdmin  open %s\n", batch)
	c, err := m.Capture(ctx, merchant.LifecycleInput{XID: xid, Amount: o.Amount, BatchID: batch})
	if err != nil {
		return err
	}
	t := c.Response.GetTransaction()
	fmt.Fprintf(w, "  Capture     purchase 1 (%s), %s %s with the capture token from its authorization: %s\n",
		xid, money(c.Response.GetAmount()), t.GetCurrency(), t.GetStatus())
	cr, err := m.Credit(ctx, merchant.LifecycleInput{XID: xid, Amount: refund, BatchID: batch})
	if err != nil {
		return err
	}
	t = cr.Response.GetTransaction()
	fmt.Fprintf(w, "  Credit      partial refund of %s %s: captured %s, credited %s\n", money(refund), t.GetCurrency(),
		money(t.GetCapturedTotal()), money(t.GetCreditedTotal()))
	closed, err := m.Batch(ctx, "", batch, setpb.BatchAction_BATCH_CLOSE)
	if err != nil {
		return err
	}
	bs := closed.Response.GetBatch()
	fmt.Fprintf(w, "  BatchAdmin  close %s: %s, %d items\n", batch, bs.GetStatus(), bs.GetItemCount())
	for _, bt := range bs.GetTotals() {
		fmt.Fprintf(w, "              total %-8s %s %3d item(s) %10s\n", bt.GetType(), bt.GetCurrency(), bt.GetCount(), money(bt.GetAmount()))
	}
	inq, err := m.GatewayInquiry(ctx, "", xid)
	if err != nil {
		return err
	}
	t = inq.Response.GetTransaction()
	fmt.Fprintf(w, "  Inquiry     %s at the gateway: %s, authorized %s, captured %s, credited %s, %d items\n", xid, t.GetStatus(),
		money(t.GetAuthorizedAmount()), money(t.GetCapturedTotal()), money(t.GetCreditedTotal()), len(t.GetItems()))
	return nil
}

func money(minor int64) string { return fmt.Sprintf("%d.%02d", minor/100, minor%100) }

func demoPurchase(ctx context.Context, w io.Writer, b *system.Bed, n int, ch *system.Cardholder, offers []merchant.Offer, offerID string) (string, error) {
	var offer merchant.Offer
	for _, o := range offers {
		if o.ID == offerID {
			offer = o
		}
	}
	kind := "authorization only"
	if offer.Sale {
		kind = "sale: authorize and capture"
	}
	fmt.Fprintf(w, "\nPurchase %d: %s (%s) buys %q for %s %s (%s)\n", n, ch.Name, pki.MaskPAN(ch.Identity.Card.PAN), offer.Description, money(offer.Amount), offer.Currency, kind)
	wal, err := b.WalletFor(ch.Identity)
	if err != nil {
		return "", err
	}
	s, err := wal.Start(ctx, offerID)
	if err != nil {
		return "", err
	}
	m, g := b.MerchantEnt, b.GatewayEnt
	fmt.Fprintf(w, "  1 PInitReq  wallet -> merchant   brand, language, wallet challenge (not signed)\n")
	fmt.Fprintf(w, "  2 PInitRes  merchant -> wallet   XID %s, signed by %s\n", s.Offer.GetXid(), shortURI(m.SignKey.URI()))
	fmt.Fprintf(w, "                                   wallet verified merchant %q (MCA) and gateway %q key exchange (PCA)\n", s.Offer.GetMerchantId(), s.Offer.GetGatewayId())
	req, err := wal.Prepare(s)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(w, "  3 PReq      wallet -> merchant   dual signature H(H(PI)||H(OI)) by %s\n", shortURI(ch.Key.URI()))
	fmt.Fprintf(w, "                                   OI (order, amount) readable by the merchant; PI (card) enveloped to the gateway:\n")
	fmt.Fprintf(w, "                                   RSA-OAEP-SHA1 + AES-256-GCM, only %s can open it\n", shortURI(g.KXKey.URI()))
	fmt.Fprintf(w, "  4 AuthReq   merchant -> gateway  signed by %s, enveloped to the gateway, PI forwarded unopened\n", shortURI(m.SignKey.URI()))
	rc, err := wal.Send(ctx, s, req)
	if err != nil {
		fmt.Fprintf(w, "  refused: %v\n", err)
		return s.Offer.GetXid(), nil
	}
	res := rc.Result.String()
	if rc.Approved() {
		res += ", auth code " + rc.AuthCode
		if rc.Captured {
			res += ", captured"
		}
	}
	fmt.Fprintf(w, "  5 AuthRes   gateway -> merchant  opened with %s; dual signature, card binding, amounts, XID checked;\n", shortURI(g.KXKey.URI()))
	fmt.Fprintf(w, "                                   issuer: %s; signed by %s, enveloped to the merchant\n", res, shortURI(g.SignKey.URI()))
	fmt.Fprintf(w, "  6 PRes      merchant -> wallet   signed by %s; wallet verified: %s\n", shortURI(m.SignKey.URI()), rc.Result)
	inq, err := wal.Inquire(ctx, rc.XID)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(w, "  7 Inquiry   wallet -> merchant   signed by the cardholder; merchant answers (signed): order %s\n", inq.GetState())
	if rc.Result == setpb.AuthResult_AUTH_RESULT_UNSPECIFIED {
		return "", errors.New("demo: no result")
	}
	return rc.XID, nil
}

// shortURI drops the CKA_ID from a key URI for the transcript: token and label name it.
func shortURI(u string) string {
	var out []string
	for _, p := range strings.Split(u, ";") {
		if !strings.HasPrefix(p, "id=") && !strings.HasPrefix(p, "type=") {
			out = append(out, p)
		}
	}
	return strings.Join(out, ";")
}

// demoLimits are the limits of the configs the demo writes: the gateway serves a few
// merchants (told apart by their TLS certificates) with much traffic each; the
// merchant serves many wallets (by host), each with a handful of requests per
// purchase. Messages: a purchase request holds up to three protocol blobs of
// setproto.MaxMessageSize.
func demoLimits() (gateway, merchant limitsConfig) {
	gateway = limitsConfig{MaxMessageBytes: 1 << 20, MaxConcurrentStreams: 64, RatePerSecond: 200, RateBurst: 400, RateMaxClients: 1000}
	merchant = limitsConfig{MaxMessageBytes: 1 << 20, MaxConcurrentStreams: 16, RatePerSecond: 5, RateBurst: 20, RateMaxClients: 100_000}
	return gateway, merchant
}
