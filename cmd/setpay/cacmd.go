package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/secretfile"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/metrics"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/wallet"
)

// caFileConfig is what `ca init` records in <ca-dir>/ca.yaml so the other ca
// commands need only the directory and the token flags.
type caFileConfig struct {
	Store     string `yaml:"store"`
	RootToken string `yaml:"root_token"`
	// The CA token: module or softhsm_dir; token, token_serial or token_slot; pin_source; max_sessions.
	tokenConfig `yaml:",inline"`

	Brand   string `yaml:"brand"`
	TLSName string `yaml:"tls_name"`
	// CRLValidity is nextUpdate - thisUpdate of each CA's CRLs (Go durations, keys
	// root, brand, cca, mca, pca; a CA left out gets ca.DefaultCRLValidityFor).
	CRLValidity map[string]string `yaml:"crl_validity,omitempty"`
}

// crlValidities parses crl_validity (validate has checked it).
func (f *caFileConfig) crlValidities() ca.CRLValidities {
	out := ca.CRLValidities{}
	for name, v := range f.CRLValidity {
		r, err := pki.ParseRole(name)
		d, derr := time.ParseDuration(v)
		if err == nil && derr == nil {
			out[r] = d
		}
	}
	return out
}

// defaultCRLValidity is what `ca init` writes in ca.yaml, ready to edit.
func defaultCRLValidity() map[string]string {
	out := map[string]string{}
	for _, r := range []pki.Role{pki.RoleRoot, pki.RoleBrand, pki.RoleCCA, pki.RoleMCA, pki.RolePCA} {
		out[r.String()] = ca.DefaultCRLValidityFor(r).String()
	}
	return out
}

const caConfigFile = "ca.yaml"

// caFlags are shared by the ca subcommands.
type caFlags struct {
	tf        *tokenFlags
	out       string
	storeDSN  string
	rootToken string
}

// caFlagsOn registers the token flags and the CA flags on fs; dirFlag names the CA
// directory flag, "ca-dir" for every ca command (init included: --out is a file).
func caFlagsOn(fs *flagSet, dirFlag string) *caFlags {
	c := &caFlags{tf: tokenFlagsOn(fs)}
	fs.StringVar(&c.out, dirFlag, "./var/ca", "CA directory (certificates, CRLs, ca.yaml)")
	fs.StringVar(&c.storeDSN, "store", "", "store DSN, sqlite:PATH or postgres://... (default: from <ca-dir>/ca.yaml)")
	fs.StringVar(&c.rootToken, "root-token", "", "token holding the root key (default: from <ca-dir>/ca.yaml for init/crl; serve keeps the root offline unless given)")
	return c
}

// defaults fills unset flags from ca.yaml (whose store path is relative to it).
func (c *caFlags) defaults() (caFileConfig, error) {
	var fc caFileConfig
	if err := loadConfig(filepath.Join(c.out, caConfigFile), &fc); err != nil {
		return fc, fmt.Errorf("%w (run `setpay ca init` first or pass --ca-dir)", err)
	}
	if c.storeDSN == "" {
		c.storeDSN = fc.Store
	}
	c.tf.defaultFrom(fc.tokenConfig)
	return fc, nil
}

// dsnRelativeTo records a sqlite: DSN relative to dir (ca.yaml's directory).
func dsnRelativeTo(dir, dsn string) (string, error) {
	path, ok := strings.CutPrefix(dsn, "sqlite:")
	if !ok {
		return dsn, nil
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	absPath, err := filepath.Abs(strings.TrimPrefix(path, "//"))
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(absDir, absPath)
	if err != nil {
		return "sqlite:" + absPath, nil
	}
	return "sqlite:" + rel, nil
}

// caStores opens the durable store of every CA, keyed by role name.
func caStores(db store.DB) (func(pki.Role) ca.Store, error) {
	m := map[pki.Role]ca.Store{}
	for _, r := range []pki.Role{pki.RoleRoot, pki.RoleBrand, pki.RoleCCA, pki.RoleMCA, pki.RolePCA} {
		s, err := ca.NewDBStore(db, r.String())
		if err != nil {
			return nil, err
		}
		m[r] = s
	}
	return func(r pki.Role) ca.Store { return m[r] }, nil
}

// openCA opens the module, the CA token (and the root token if named), the
// store, and loads the CA directory.
// openedCA is a loaded CA with the token and store it runs on, so a service can
// follow their health.
type openedCA struct {
	*ca.Loaded
	tok *hsm.Token
	db  *store.Store
}

func (c *caFlags) openCA(ctx context.Context, env *cliEnv, withRoot bool) (*openedCA, func(), error) {
	fc, err := c.defaults()
	if err != nil {
		return nil, nil, err
	}
	if withRoot && c.rootToken == "" {
		c.rootToken = fc.RootToken
	}
	if c.storeDSN == "" {
		return nil, nil, usageErrorf("--store is required")
	}
	mod, tok, err := c.tf.open(ctx, env)
	if err != nil {
		return nil, nil, err
	}
	closers := []func(){func() { _ = mod.Close() }, func() { _ = tok.Close() }}
	cleanup := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	var rootTok *hsm.Token
	if c.rootToken != "" {
		rootTok, err = mod.OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: c.rootToken}, PIN: hsm.PINSource(c.tf.pinSource), Logger: env.logger})
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		closers = append(closers, func() { _ = rootTok.Close() })
	}
	db, err := store.Open(ctx, c.storeDSN, store.MustExist())
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("store: %w", err)
	}
	closers = append(closers, func() { _ = db.Close() })
	stores, err := caStores(db)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	l, err := ca.LoadDir(ctx, ca.LoadConfig{Dir: c.out, RootToken: rootTok, Token: tok, NewStore: stores, Logger: env.logger,
		CRLValidity: fc.crlValidities()})
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return &openedCA{Loaded: l, tok: tok, db: db}, cleanup, nil
}

func runCAInit(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay ca init", env)
	c := caFlagsOn(fs, "ca-dir")
	brand := fs.String("brand", "SETPay", "brand name in CA common names")
	org := fs.String("org", "SETPay", "subject O of every certificate")
	tlsName := fs.String("tls-name", "127.0.0.1", "DNS name or IP address of the CA service's TLS certificate")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.rootToken == "" {
		c.rootToken = "setpay-root"
	}
	if !c.tf.selected() {
		c.tf.token = "setpay-ca"
	}
	if c.storeDSN == "" {
		return usageErrorf("--store is required (e.g. sqlite:./var/setpay.db)")
	}
	mod, tok, err := c.tf.open(ctx, env)
	if err != nil {
		return err
	}
	defer mod.Close()
	defer tok.Close()
	rootTok, err := mod.OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: c.rootToken}, PIN: hsm.PINSource(c.tf.pinSource), Logger: env.logger})
	if err != nil {
		return fmt.Errorf("root token: %w", err)
	}
	defer rootTok.Close()
	db, err := store.Open(ctx, c.storeDSN)
	if err != nil {
		return err
	}
	defer db.Close()
	stores, err := caStores(db)
	if err != nil {
		return err
	}
	fc := caFileConfig{CRLValidity: defaultCRLValidity()}
	h, err := ca.InitDir(ctx, ca.InitConfig{RootToken: rootTok, Token: tok, Dir: c.out, NewStore: stores,
		Brand: *brand, Org: *org, TLSName: *tlsName, CRLValidity: fc.crlValidities(), Logger: env.logger})
	if err != nil {
		return err
	}
	// ca.yaml names the store relative to itself, so any directory finds the same store.
	recorded, err := dsnRelativeTo(c.out, c.storeDSN)
	if err != nil {
		return err
	}
	fc.Store, fc.RootToken, fc.tokenConfig, fc.Brand, fc.TLSName = recorded, c.rootToken, c.tf.recorded(c.out), *brand, *tlsName
	b, err := yaml.Marshal(fc)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.out, caConfigFile), b, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "CA hierarchy created in tokens %q (root) and %q; certificates and CRLs in %s\n", c.rootToken, tok.Label(), c.out)
	for _, a := range h.Authorities() {
		fmt.Fprintf(env.stdout, "  %-6s %s serial %s\n", a.Role(), a.Certificate().Subject.CommonName, a.Certificate().SerialNumber.Text(16))
	}
	return nil
}

// demoCards is the issuer stand-in's ledger when --cards is not given
// (well-known test card numbers).
var demoCards = []ca.LedgerCard{
	{PAN: "4111111111111111", Expiry: "203012", PostalCode: "75001"},
	{PAN: "5555555555554444", Expiry: "203012", PostalCode: "10115"},
	{PAN: "4012888888881881", Expiry: "203012", PostalCode: "75001", Blocked: true},
	{PAN: "4000056655665556", Expiry: "202001", PostalCode: "75001"},
}

func runCAServe(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay ca serve", env)
	c := caFlagsOn(fs, "ca-dir")
	listen := fs.String("listen", "127.0.0.1:7440", "address to listen on")
	cardsFile := fs.String("cards", "", "YAML list of cards the issuer stand-in knows (pan, expiry, postal_code, blocked); default: demo cards")
	approval := fs.Bool("require-approval", false, "hold merchant and gateway requests until 'setpay ca approve'")
	crlCheck := fs.Duration("crl-check", time.Minute, "how often the CRLs are checked: each online CA's is re-signed once half its validity has passed, and the CRL files rewritten")
	metricsListen := fs.String("metrics-listen", "", "address to serve Prometheus /metrics on (CRL expiry per CA); empty: none")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *crlCheck <= 0 {
		return usageErrorf("--crl-check must be a positive duration")
	}
	cards := demoCards
	if *cardsFile != "" {
		cards = nil
		if err := loadYAML(*cardsFile, &cards); err != nil {
			return err
		}
	}
	ledger, err := ca.NewCardLedger(cards)
	if err != nil {
		return err
	}
	l, cleanup, err := c.openCA(ctx, env, false)
	if err != nil {
		return err
	}
	defer cleanup()
	var pending *ca.PendingQueue
	if *approval {
		if pending, err = ca.NewPendingQueue(filepath.Join(c.out, "pending")); err != nil {
			return err
		}
	}
	srv, err := ca.NewServer(ca.ServerConfig{Hierarchy: l.Hierarchy, RootCRL: l.RootCRL, RootCRLFile: filepath.Join(c.out, ca.CRLFileName(pki.RoleRoot)),
		CCASigner: l.CCASigner, CCAKeyExchange: l.CCAKX, CCADecrypter: l.CCAKXKey, Ledger: ledger, Pending: pending, Logger: env.logger})
	if err != nil {
		return err
	}
	// The CRL files and GetCRL never carry an expired CRL of an online CA while the
	// CA runs; the offline root's expiry is announced in the log well before.
	pub, err := ca.NewCRLPublisher(ca.CRLPublisherConfig{Dir: c.out, Server: srv, Logger: env.logger})
	if err != nil {
		return err
	}
	if err := pub.Publish(ctx); err != nil {
		env.logger.Warn("CRL publication failed; files keep their CRLs", "err", err)
	}
	go pub.Run(ctx, *crlCheck)
	// Like the other services, the CA is NOT_SERVING while its token or store is
	// unusable, and SERVING again by itself.
	hw := newHealthWatcher(env.logger, storePing(l.db), l.tok)
	go hw.run(ctx)
	if *metricsListen != "" {
		reg := metrics.New()
		reg.WatchToken(l.tok)
		reg.SetReadiness(hw.ready)
		if err := errors.Join(registerBuildInfo(reg.Prometheus()), reg.Prometheus().Register(caCRLCollector{pub})); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		addr, err := reg.Serve(ctx, *metricsListen, env.logger)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "metrics on http://%s/metrics\n", addr)
	}
	gs, health := tlsrpc.NewGRPCServer(ca.ServerTLSConfig(l.TLS), 2*ca.MaxRequestSize)
	srv.Register(gs)
	hw.bind(health)
	return serveUntilDone(ctx, env, gs, health, *listen, fmt.Sprintf("CA (TLS name %s)", l.TLS.Cert.Subject.CommonName))
}

func runCAApprove(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay ca approve", env)
	c := caFlagsOn(fs, "ca-dir")
	reqID := fs.String("request", "", "request id to decide (without it: list the requests)")
	reject := fs.Bool("reject", false, "reject instead of approving")
	asJSON := fs.Bool("json", false, "print JSON (machine-readable): the list as an array, a decision as one object")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The CA directory must be a CA's (ca.yaml), not a misspelt path to create a queue in.
	if _, err := c.defaults(); err != nil {
		return err
	}
	q, err := ca.NewPendingQueue(filepath.Join(c.out, "pending"))
	if err != nil {
		return err
	}
	if *reqID == "" {
		list, err := q.List()
		if err != nil {
			return err
		}
		if *asJSON {
			out := make([]pendingJSON, 0, len(list))
			for _, r := range list {
				out = append(out, newPendingJSON(r))
			}
			return writeListJSON(env.stdout, out)
		}
		for _, r := range list {
			fmt.Fprintf(env.stdout, "%s  %-8s %-8s %s  %s\n", r.ID, r.State, r.Accepted.Role, r.Accepted.ID, r.CreatedAt.Format(time.RFC3339))
		}
		return nil
	}
	l, cleanup, err := c.openCA(ctx, env, false)
	if err != nil {
		return err
	}
	defer cleanup()
	r, err := q.Decide(ctx, l.Hierarchy, *reqID, !*reject, time.Now())
	if err != nil {
		return err
	}
	if *asJSON {
		return writeListJSON(env.stdout, newPendingJSON(r))
	}
	fmt.Fprintf(env.stdout, "request %s (%s %s): %s\n", r.ID, r.Accepted.Role, r.Accepted.ID, r.State)
	return nil
}

// pendingJSON is one request of `ca approve --json`.
type pendingJSON struct {
	ID        string     `json:"id"`
	State     string     `json:"state"`
	Role      string     `json:"role"`
	EntityID  string     `json:"entity_id"`
	CreatedAt time.Time  `json:"created_at"`
	DecidedAt *time.Time `json:"decided_at,omitempty"`
}

func newPendingJSON(r ca.PendingRequest) pendingJSON {
	p := pendingJSON{ID: r.ID, State: r.State, Role: r.Accepted.Role.String(), EntityID: r.Accepted.ID, CreatedAt: r.CreatedAt}
	if !r.DecidedAt.IsZero() {
		d := r.DecidedAt
		p.DecidedAt = &d
	}
	return p
}

func runCAEnroll(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay ca enroll", env)
	c := caFlagsOn(fs, "ca-dir")
	roleName := fs.String("role", "", "merchant or gateway")
	id := fs.String("id", "", "merchant or gateway id")
	outFile := fs.String("out", "", "write the secret to this new file (mode 0600) instead of stdout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	role, err := pki.ParseRole(*roleName)
	if err != nil || (role != pki.RoleMerchant && role != pki.RoleGateway) {
		return usageErrorf("--role must be merchant or gateway")
	}
	l, cleanup, err := c.openCA(ctx, env, false)
	if err != nil {
		return err
	}
	defer cleanup()
	secret, err := l.Hierarchy.Issuing(role).Enroll(ctx, role, *id)
	if err != nil {
		return err
	}
	if *outFile != "" {
		// Created 0600 whatever the umask, and never over an existing file.
		return secretfile.Create(*outFile, []byte(secret+"\n"))
	}
	// stdout carries the secret alone (a shell redirect creates the file with the
	// umask's mode: prefer --out).
	fmt.Fprintln(env.stdout, secret)
	return nil
}

var reasonNames = map[string]int{
	"unspecified": ca.RevokeUnspecified, "keyCompromise": ca.RevokeKeyCompromise, "cACompromise": ca.RevokeCACompromise,
	"affiliationChanged": ca.RevokeAffiliationChanged, "superseded": ca.RevokeSuperseded,
	"cessationOfOperation": ca.RevokeCessationOfOperation, "privilegeWithdrawn": ca.RevokePrivilegeWithdrawn,
	"aACompromise": ca.RevokeAACompromise,
}

func runCARevoke(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay ca revoke", env)
	c := caFlagsOn(fs, "ca-dir")
	serialHex := fs.String("serial", "", "serial number in hex")
	reasonName := fs.String("reason", "unspecified", "RFC 5280 reason: keyCompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn, ...")
	if err := fs.Parse(args); err != nil {
		return err
	}
	serial, ok := new(big.Int).SetString(strings.TrimPrefix(strings.ToLower(*serialHex), "0x"), 16)
	if !ok || serial.Sign() <= 0 || serial.BitLen() > 160 {
		return usageErrorf("--serial must be a positive hex number")
	}
	reason, ok := reasonNames[*reasonName]
	if !ok {
		n, err := strconv.Atoi(*reasonName)
		if err != nil {
			return usageErrorf("unknown --reason %q", *reasonName)
		}
		reason = n
	}
	l, cleanup, err := c.openCA(ctx, env, false)
	if err != nil {
		return err
	}
	defer cleanup()
	for _, a := range []*ca.Authority{l.Hierarchy.CCA, l.Hierarchy.MCA, l.Hierarchy.PCA, l.Hierarchy.Brand} {
		if _, err := a.Store().GetIssued(ctx, serial); err != nil {
			continue
		}
		if err := a.Revoke(ctx, serial, reason); err != nil {
			return err
		}
		// The new CRL goes to <ca>.crl and the bundle crls.pem at once (each replaced
		// atomically), so a service reading the files sees the revocation on its next
		// refresh; the CA service's GetCRL serves it from the next request.
		crl, err := a.CRL(ctx)
		if err != nil {
			return fmt.Errorf("revoked %s, but the new CRL could not be signed: %w", serial.Text(16), err)
		}
		if _, err := ca.PublishCRLs(c.out, map[pki.Role]*x509.RevocationList{a.Role(): crl}); err != nil {
			return fmt.Errorf("revoked %s, but the CRL files could not be written (run `setpay ca crl --issuer %s`): %w", serial.Text(16), a.Role(), err)
		}
		fmt.Fprintf(env.stdout, "revoked %s (issued by %s); new CRL number %s in %s and %s\n", serial.Text(16), a.Role(), crl.Number,
			filepath.Join(c.out, ca.CRLFileName(a.Role())), filepath.Join(c.out, ca.FileCRLs))
		return nil
	}
	return fmt.Errorf("serial %s was not issued by this CA", serial.Text(16))
}

func runCACRL(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay ca crl", env)
	c := caFlagsOn(fs, "ca-dir")
	which := fs.String("issuer", "pca", "the issuing CA whose CRL to sign and publish as <ca-dir>/<issuer>.crl and crls.pem: root, brand, cca, mca or pca (root needs the root token: --root-token, default ca.yaml's root_token)")
	outFile := fs.String("out", "", "file to write the PEM CRL to as well (default stdout)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	role, err := pki.ParseRole(*which)
	if err != nil || !role.IsCA() {
		return usageErrorf("--issuer must be root, brand, cca, mca or pca")
	}
	l, cleanup, err := c.openCA(ctx, env, role == pki.RoleRoot)
	if err != nil {
		return err
	}
	defer cleanup()
	a := l.Hierarchy.ByRole(role)
	if a == nil {
		return errors.New("the root token is needed for the root CRL (--root-token)")
	}
	crl, err := a.CRL(ctx)
	if err != nil {
		return err
	}
	// Published in the CA directory too: <issuer>.crl and the bundle services read
	// (a running `ca serve` serves a newer root CRL from there at once).
	if _, err := ca.PublishCRLs(c.out, map[pki.Role]*x509.RevocationList{role: crl}); err != nil {
		return err
	}
	env.logger.Info("CRL published", "ca", role.String(), "number", crl.Number.String(), "next_update", crl.NextUpdate.UTC().Format(time.RFC3339),
		"file", filepath.Join(c.out, ca.CRLFileName(role)))
	out := pki.EncodeCRLPEM(crl)
	if *outFile == "" {
		_, err = env.stdout.Write(out)
		return err
	}
	return os.WriteFile(*outFile, out, 0o644)
}

// regFlags are the registration clients' connection flags.
type regFlags struct {
	addr, root, tlsCA, serverName string
}

// regFlagsOn registers the registration clients' connection flags on fs.
func regFlagsOn(fs *flagSet) *regFlags {
	r := &regFlags{}
	fs.StringVar(&r.addr, "ca", "127.0.0.1:7440", "CA service address")
	fs.StringVar(&r.root, "ca-root", "./var/ca/root.pem", "the trusted SET root certificate (from the CA, out of band)")
	fs.StringVar(&r.tlsCA, "ca-tls", "./var/ca/tls-ca.pem", "trust anchor of the CA service's TLS certificate")
	fs.StringVar(&r.serverName, "ca-name", "", "TLS name of the CA service (default: the host of --ca)")
	return r
}

func (r *regFlags) dial() (*ca.Client, func(), error) {
	roots, err := ca.ReadPEMFile(r.root)
	if err != nil {
		return nil, nil, err
	}
	tlsRoots, err := ca.ReadPEMFile(r.tlsCA)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range tlsRoots {
		pool.AddCert(c)
	}
	name := r.serverName
	if name == "" {
		host, _, err := net.SplitHostPort(r.addr)
		if err != nil {
			return nil, nil, usageErrorf("--ca: %w", err)
		}
		name = host
	}
	conn, err := grpc.NewClient(r.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: name})),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4<<20)))
	if err != nil {
		return nil, nil, err
	}
	c, err := ca.NewClient(conn, roots[0], nil)
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return c, func() { _ = conn.Close() }, nil
}

// readSecret reads a secret from a file or an environment variable, never argv.
func readSecret(file, envName, what string) ([]byte, error) {
	var b []byte
	if file != "" {
		// Only the owner may read a secret's file (secretfile.Read refuses others,
		// naming the path and the mode).
		var err error
		if b, err = secretfile.Read(file, 4096); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	} else {
		b = []byte(os.Getenv(envName))
	}
	b = []byte(strings.TrimRight(string(b), "\r\n"))
	if len(b) == 0 {
		return nil, fmt.Errorf("no %s: give a file or set $%s", what, envName)
	}
	return b, nil
}

func runEntityRegister(ctx context.Context, env *cliEnv, args []string, role pki.Role) error {
	fs := newFlags("setpay "+role.String()+" register", env)
	tf := tokenFlagsOn(fs)
	rf := regFlagsOn(fs)
	id := fs.String("id", "", role.String()+" id, as enrolled")
	secretFile := fs.String("secret-file", "", "file holding the enrollment secret (default: $SETPAY_ENROLL_SECRET)")
	kxAlg := fs.String("kx-alg", string(hsm.RSA2048), "key-exchange key algorithm: rsa2048, rsa3072 or ecdsa-p256")
	out := fs.String("dir", "./var/"+role.String(), "directory to write the "+role.String()+"'s certificates, trust files and "+role.String()+".yaml into")
	caChain := fs.String("ca-chain", "", "file of the CA certificates (brand, CCA, MCA, PCA) from the CA, out of band (default: chain.pem next to --ca-root)")
	reqID := fs.String("request", "", "ask about a request the CA held for approval (same keys, no secret needed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := pki.ValidateEntityID(*id); err != nil {
		return usageErrorf("--id: %w", err)
	}
	var secret []byte
	if *reqID == "" {
		s, err := readSecret(*secretFile, "SETPAY_ENROLL_SECRET", "enrollment secret")
		if err != nil {
			return err
		}
		secret = s
	}
	mod, tok, err := tf.open(ctx, env)
	if err != nil {
		return err
	}
	defer mod.Close()
	defer tok.Close()
	// Keys are found again if a previous attempt made them (a retry after a
	// network failure must not leave orphan keys).
	key := func(label string, alg hsm.Algorithm, usage hsm.Usage) (*hsm.Key, error) {
		if k, err := tok.FindKey(ctx, label); err == nil {
			return k, nil
		}
		return tok.GenerateKey(ctx, hsm.KeySpec{Label: label, Algorithm: alg, Usage: usage})
	}
	sigLabel, kxLabel := role.String()+"-"+*id+"-sig", role.String()+"-"+*id+"-kx"
	sig, err := key(sigLabel, hsm.ECDSAP256, hsm.UsageSign)
	if err != nil {
		return err
	}
	kx, err := key(kxLabel, hsm.Algorithm(*kxAlg), hsm.UsageKeyExchange)
	if err != nil {
		return err
	}
	client, closeConn, err := rf.dial()
	if err != nil {
		return err
	}
	defer closeConn()
	// The trust files are read, checked and fetched before the CA is asked for
	// certificates: once it has issued them (and spent the secret) only local writes
	// are left, so a registration never ends with certificates nobody saved.
	now := time.Now()
	if *caChain == "" {
		*caChain = filepath.Join(filepath.Dir(rf.root), ca.FileChain)
	}
	cas, err := caSet(ctx, client, *caChain, nil, now)
	if err != nil {
		return err
	}
	crls, err := fetchCRLs(ctx, client, client.Root(), cas, now)
	if err != nil {
		return err
	}
	tlsRoots, err := ca.ReadPEMFile(rf.tlsCA)
	if err != nil {
		return fmt.Errorf("--ca-tls: %w", err)
	}
	reg := ca.EntityRegistration{Role: role, ID: *id, Secret: string(secret), SignatureKey: sig, KeyExchangeKey: kx}
	var res *ca.EntityResult
	if *reqID != "" {
		res, err = client.Inquire(ctx, *reqID, reg)
	} else {
		res, err = client.RegisterEntity(ctx, reg)
	}
	if err != nil {
		return err
	}
	if res.Pending {
		fmt.Fprintf(env.stdout, "request %s is pending the CA operator's approval; afterwards run the same command with --request %s\n", res.RequestID, res.RequestID)
		return nil
	}
	for _, c := range res.Chain {
		if !slices.ContainsFunc(cas, c.Equal) {
			cas = append(cas, c)
		}
	}
	sigChain := append([]*x509.Certificate{res.Signature}, res.Chain...)
	kxChain := append([]*x509.Certificate{res.KeyExchange}, res.Chain...)
	files := map[string][]byte{
		regFileSign:    pki.EncodePEM(sigChain...),
		regFileKX:      pki.EncodePEM(kxChain...),
		regFileChain:   pki.EncodePEM(res.Chain...),
		regFileCAChain: pki.EncodePEM(cas...),
		regFileRoot:    pki.EncodePEM(client.Root()),
		regFileCRLs:    pki.EncodeCRLPEM(crls...),
		regFileTLSCA:   pki.EncodePEM(tlsRoots...),
		regFileKeys:    []byte(fmt.Sprintf("token: %s\nsignature_key: %s\nkey_exchange_key: %s\n", tok.Label(), sigLabel, kxLabel)),
	}
	rc := regConfig{Role: role.String(), ID: *id, Date: now.UTC().Format(time.RFC3339),
		Token: tok.Label(), TokenYAML: tokenYAML(tf.recorded(*out), tf), TokenFlags: tokenFlagsText(tf),
		SignKey: sig.URI(), KXKey: kx.URI(), Store: "sqlite:" + role.String() + ".db", CAAddress: rf.addr, CAServerName: rf.serverName,
		TLSLabel: role.String() + "-" + *id + "-tls", ClientTLSLbl: role.String() + "-" + *id + "-client-tls",
		Brand: strings.TrimSuffix(caOfRole(cas, pki.RoleBrand).Subject.CommonName, " Brand CA")}
	rc.TLSKey, rc.ClientTLSKey = tlsKeyURI(rc.Token, rc.TLSLabel), tlsKeyURI(rc.Token, rc.ClientTLSLbl)
	cfg, err := renderRegConfig(rc)
	if err != nil {
		return err
	}
	cfgName, err := writeRegFiles(*out, files, role.String()+".yaml", cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s %s registered: signature serial %s, key-exchange serial %s; certificates in %s\n",
		role, *id, res.Signature.SerialNumber.Text(16), res.KeyExchange.SerialNumber.Text(16), *out)
	if cfgName != role.String()+".yaml" {
		fmt.Fprintf(env.stdout, "%s exists and was left alone: the new configuration is %s\n", filepath.Join(*out, role.String()+".yaml"), filepath.Join(*out, cfgName))
	} else {
		fmt.Fprintf(env.stdout, "configuration %s: fill in its TODO fields, then `setpay %s serve --config %s`\n", filepath.Join(*out, cfgName), role, filepath.Join(*out, cfgName))
	}
	return nil
}

func runMerchantRegister(ctx context.Context, env *cliEnv, args []string) error {
	return runEntityRegister(ctx, env, args, pki.RoleMerchant)
}

func runGatewayRegister(ctx context.Context, env *cliEnv, args []string) error {
	return runEntityRegister(ctx, env, args, pki.RoleGateway)
}

// walletCardFile is the card to register (YAML). It holds a PAN: keep it
// private and delete it after registration; the wallet keeps the card sealed.
type walletCardFile struct {
	PAN            string `yaml:"pan"`
	Expiry         string `yaml:"expiry"`
	PostalCode     string `yaml:"postal_code"`
	CardholderName string `yaml:"cardholder_name"`
}

func runWalletRegister(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay wallet register", env)
	tf := tokenFlagsOn(fs)
	rf := regFlagsOn(fs)
	cardFile := fs.String("card-file", "", "YAML file with pan, expiry (YYYYMM), postal_code, cardholder_name")
	out := fs.String("wallet", "./var/wallet", "wallet directory to create")
	passFile := fs.String("passphrase-file", "", "file holding the wallet passphrase (default: $SETPAY_WALLET_PASSPHRASE)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cardFile == "" {
		return usageErrorf("--card-file is required")
	}
	var card walletCardFile
	if err := loadYAML(*cardFile, &card); err != nil {
		return err
	}
	pass, err := readSecret(*passFile, "SETPAY_WALLET_PASSPHRASE", "wallet passphrase")
	if err != nil {
		return err
	}
	opts := wallet.RegisterOptions{Dir: *out, Passphrase: pass}
	// With token flags the wallet key lives in a PKCS#11 token.
	if tf.selected() || tf.softhsmDir != "" {
		mod, tok, err := tf.open(ctx, env)
		if err != nil {
			return err
		}
		defer mod.Close()
		defer tok.Close()
		opts.KeyLabel = "wallet-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		k, err := tok.GenerateKey(ctx, hsm.KeySpec{Label: opts.KeyLabel, Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
		if err != nil {
			return err
		}
		opts.Key = k
	}
	client, closeConn, err := rf.dial()
	if err != nil {
		return err
	}
	defer closeConn()
	fields := map[string]string{"postal_code": card.PostalCode}
	if card.CardholderName != "" {
		fields["cardholder_name"] = card.CardholderName
	}
	id, err := wallet.Register(ctx, client, wallet.CardInput{PAN: card.PAN, Expiry: card.Expiry, Fields: fields}, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "card %s registered: certificate %s serial %s in %s\n", pki.MaskPAN(card.PAN),
		id.Cert.Subject.CommonName, id.Cert.SerialNumber.Text(16), *out)
	return nil
}
