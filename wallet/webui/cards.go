package webui

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/wallet"
)

// cardsDir holds the cards registered after the first (which is the wallet
// directory itself, as `setpay wallet register` makes it).
const cardsDir = "cards"

// card is what the UI shows of a registered card: never more than the masked
// number.
type card struct {
	ID       string // "main" for Dir itself, else the name under Dir/cards
	Dir      string
	Masked   string // "" until the card is first unlocked (older wallets)
	Cert     *x509.Certificate
	Root     *x509.Certificate // root.pem (the sealed card file binds it; Load checks)
	Chain    []*x509.Certificate
	NotAfter time.Time
	Token    bool // the key is in a token
}

// Label is the card's name on pages.
func (c card) Label() string {
	if c.Masked != "" {
		return c.Masked
	}
	return "card " + c.ID + " (number shown after its first unlock)"
}

func (c card) rootFP() [32]byte { return sha256.Sum256(c.Root.Raw) }

// cards lists the wallet's registered cards (a directory with cert.pem).
func (s *Server) cards() ([]card, error) {
	dirs := []struct{ id, dir string }{{"main", s.cfg.Dir}}
	ents, err := os.ReadDir(filepath.Join(s.cfg.Dir, cardsDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("wallet directory: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() && validCardID(e.Name()) {
			dirs = append(dirs, struct{ id, dir string }{e.Name(), filepath.Join(s.cfg.Dir, cardsDir, e.Name())})
		}
	}
	var out []card
	for _, d := range dirs {
		c, err := readCard(d.id, d.dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("card %s: %w", d.id, err)
		}
		out = append(out, *c)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID == "main" && out[j].ID != "main" })
	return out, nil
}

func validCardID(id string) bool {
	if id == "main" {
		return true
	}
	if len(id) == 0 || len(id) > 40 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func readPEM(path string) ([]*x509.Certificate, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > wallet.MaxSealedSize {
		return nil, fmt.Errorf("%s too large", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return pki.ParsePEMCertificates(b)
}

func readCard(id, dir string) (*card, error) {
	certs, err := readPEM(filepath.Join(dir, wallet.FileCert))
	if err != nil {
		return nil, err
	}
	chain, err := readPEM(filepath.Join(dir, wallet.FileChain))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", wallet.FileChain, err)
	}
	roots, err := readPEM(filepath.Join(dir, wallet.FileRoot))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", wallet.FileRoot, err)
	}
	if len(roots) != 1 {
		return nil, fmt.Errorf("%s holds %d certificates, want the one root", wallet.FileRoot, len(roots))
	}
	masked, err := wallet.MaskedPAN(dir)
	if err != nil {
		return nil, err
	}
	_, tokErr := os.Stat(filepath.Join(dir, wallet.FileKeyLabel))
	return &card{ID: id, Dir: dir, Masked: masked, Cert: certs[0], Root: roots[0], Chain: chain,
		NotAfter: certs[0].NotAfter, Token: tokErr == nil}, nil
}

func (s *Server) card(id string) (*card, error) {
	cs, err := s.cards()
	if err != nil {
		return nil, err
	}
	for i := range cs {
		if cs[i].ID == id {
			return &cs[i], nil
		}
	}
	return nil, fmt.Errorf("no card %q in this wallet", id)
}

func (s *Server) handleHome(w http.ResponseWriter, r *http.Request, sess *session) {
	cs, err := s.cards()
	if err != nil {
		s.internal(w, r, sess, err)
		return
	}
	s.render(w, r, sess, http.StatusOK, "home", page{Title: "Your wallet", Data: struct {
		Cards []card
		Dir   string
	}{cs, s.cfg.Dir}})
}

type registerForm struct {
	Expiry, PostalCode, Name string
	Configured               bool
}

func (s *Server) handleRegisterForm(w http.ResponseWriter, r *http.Request, sess *session) {
	s.render(w, r, sess, http.StatusOK, "register", page{Title: "Register a card", Data: registerForm{Configured: s.cfg.Registrar != nil}})
}

// handleRegister registers a card with the CCA. The card number is read once and
// never written back to a page: a refused form comes back without it.
func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request, sess *session) {
	pan := strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' {
			return -1
		}
		return r
	}, r.PostFormValue("pan"))
	f := registerForm{Expiry: strings.TrimSpace(r.PostFormValue("expiry")), PostalCode: strings.TrimSpace(r.PostFormValue("postal_code")),
		Name: strings.TrimSpace(r.PostFormValue("cardholder_name")), Configured: s.cfg.Registrar != nil}
	refuse := func(msg string) {
		s.render(w, r, sess, http.StatusUnprocessableEntity, "register", page{Title: "Register a card", Message: msg, Data: f})
	}
	if s.cfg.Registrar == nil {
		refuse("Registration is not configured: start `setpay wallet ui` with --ca, --ca-root and --ca-tls.")
		return
	}
	pass := r.PostFormValue("passphrase")
	expiry, err := normalizeExpiry(f.Expiry)
	switch {
	case pki.ValidatePAN(pan) != nil:
		refuse("Card number: not a valid card number (12 to 19 digits with a correct check digit). Enter it again.")
		return
	case err != nil:
		refuse("Expiry: " + err.Error())
		return
	case f.PostalCode == "":
		refuse("Postal code: required (the card issuer checks it).")
		return
	case len(pass) < wallet.MinPassphraseLen:
		refuse(fmt.Sprintf("Passphrase: at least %d characters.", wallet.MinPassphraseLen))
		return
	case pass != r.PostFormValue("passphrase2"):
		refuse("Passphrase: the two entries differ.")
		return
	}
	dir, id, err := s.newCardDir()
	if err != nil {
		s.internal(w, r, sess, err)
		return
	}
	fields := map[string]string{"postal_code": f.PostalCode}
	if f.Name != "" {
		fields["cardholder_name"] = f.Name
	}
	ctx, cancel := s.rpcContext(r)
	defer cancel()
	_, err = s.cfg.Registrar.Register(ctx, wallet.CardInput{PAN: pan, Expiry: expiry, Fields: fields}, wallet.RegisterOptions{Dir: dir, Passphrase: []byte(pass)})
	if err != nil {
		if id != "main" {
			_ = os.Remove(dir) // only if Register left it empty
		}
		msg := strings.ReplaceAll(err.Error(), pan, pki.MaskPAN(pan))
		s.cfg.Logger.InfoContext(r.Context(), "card registration refused", "card", pki.MaskPAN(pan), "err", msg)
		refuse("The card authority did not register card " + pki.MaskPAN(pan) + ": " + msg)
		return
	}
	s.cfg.Logger.InfoContext(r.Context(), "card registered", "card", pki.MaskPAN(pan), "dir", dir)
	s.setFlash(sess, "Card "+pki.MaskPAN(pan)+" is registered.")
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// newCardDir is where a new card goes: the wallet directory itself while it holds
// no card, else a new directory under cards/.
func (s *Server) newCardDir() (string, string, error) {
	if _, err := os.Stat(filepath.Join(s.cfg.Dir, wallet.FileCert)); errors.Is(err, os.ErrNotExist) {
		return s.cfg.Dir, "main", nil
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	id := "card-" + hex.EncodeToString(b)
	if err := os.MkdirAll(filepath.Join(s.cfg.Dir, cardsDir), 0o700); err != nil {
		return "", "", err
	}
	return filepath.Join(s.cfg.Dir, cardsDir, id), id, nil
}

// normalizeExpiry accepts YYYYMM, MM/YY and MM/YYYY.
func normalizeExpiry(v string) (string, error) {
	v = strings.TrimSpace(v)
	if m, y, ok := strings.Cut(v, "/"); ok {
		m, y = strings.TrimSpace(m), strings.TrimSpace(y)
		if len(m) == 1 {
			m = "0" + m
		}
		if len(y) == 2 {
			y = "20" + y
		}
		v = y + m
	}
	if err := pki.ValidateExpiry(v); err != nil {
		return "", errors.New("want the month and year on the card, as MM/YY or YYYYMM")
	}
	return v, nil
}
