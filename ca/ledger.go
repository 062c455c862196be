package ca

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/store"
)

// Card refusals of the issuer stand-in. They are errors so the service can
// map them to gRPC codes; none of them names the PAN.
var (
	ErrCardUnknown  = errors.New("ca: card not known to the issuer")
	ErrCardExpired  = errors.New("ca: card expired")
	ErrCardBlocked  = errors.New("ca: card blocked")
	ErrCardMismatch = errors.New("ca: card data does not match the issuer's records")
)

// LedgerCard is one card the issuer stand-in knows, as read from
// configuration or demo data. The PAN is hashed when loaded and then dropped.
type LedgerCard struct {
	PAN        string `yaml:"pan" json:"pan"`
	Expiry     string `yaml:"expiry" json:"expiry"` // YYYYMM
	Blocked    bool   `yaml:"blocked" json:"blocked"`
	PostalCode string `yaml:"postal_code" json:"postal_code"`
}

type ledgerEntry struct {
	expiry, postal string
	blocked        bool
}

// CardLedger is the card issuer stand-in the CCA asks before certifying a
// cardholder: is the card known, unexpired and not blocked, and does the
// account data match. It keeps only keyed hashes of PANs (store.PANHash with a
// per-process random key), never the PAN.
type CardLedger struct {
	key   []byte
	cards map[string]ledgerEntry
}

// NewCardLedger hashes the cards' PANs and keeps their state.
func NewCardLedger(cards []LedgerCard) (*CardLedger, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("ca: ledger key: %w", err)
	}
	l := &CardLedger{key: key, cards: make(map[string]ledgerEntry, len(cards))}
	for i, c := range cards {
		if err := pki.ValidatePAN(c.PAN); err != nil {
			return nil, fmt.Errorf("ca: ledger card %d: %w", i, err)
		}
		if err := pki.ValidateExpiry(c.Expiry); err != nil {
			return nil, fmt.Errorf("ca: ledger card %d (%s): %w", i, pki.MaskPAN(c.PAN), err)
		}
		h, err := store.PANHash(key, c.PAN)
		if err != nil {
			return nil, fmt.Errorf("ca: ledger card %d: %w", i, err)
		}
		l.cards[string(h)] = ledgerEntry{expiry: c.Expiry, postal: strings.TrimSpace(c.PostalCode), blocked: c.Blocked}
	}
	return l, nil
}

// Check decides whether the card may be certified at now.
func (l *CardLedger) Check(_ context.Context, pan, expiry string, fields map[string]string, now time.Time) error {
	h, err := store.PANHash(l.key, pan)
	if err != nil {
		return ErrCardUnknown
	}
	e, ok := l.cards[string(h)]
	if !ok {
		return ErrCardUnknown
	}
	if subtle.ConstantTimeCompare([]byte(e.expiry), []byte(expiry)) != 1 {
		return ErrCardMismatch
	}
	end, err := expiryEnd(e.expiry)
	if err != nil || !now.Before(end) {
		return ErrCardExpired
	}
	if e.blocked {
		return ErrCardBlocked
	}
	if e.postal != "" && subtle.ConstantTimeCompare([]byte(e.postal), []byte(strings.TrimSpace(fields["postal_code"]))) != 1 {
		return ErrCardMismatch
	}
	return nil
}

// RegForm is the registration form of a card brand's BIN range: which
// account data the cardholder must supply with the certificate request.
type RegForm struct {
	ID          string
	Brand       string
	BINPrefixes []string // "" matches every BIN
	Fields      []FormFieldSpec
}

// FormFieldSpec is one field of a RegForm.
type FormFieldSpec struct {
	Name, Label string
	Required    bool
	MaxLength   int
}

// DefaultRegForms is the demo brand's form: postal code (checked against the
// issuer's records) and an optional cardholder name.
func DefaultRegForms(brand string) []RegForm {
	return []RegForm{{ID: "std-v1", Brand: brand, BINPrefixes: []string{""}, Fields: []FormFieldSpec{
		{Name: "postal_code", Label: "Billing postal code", Required: true, MaxLength: 10},
		{Name: "cardholder_name", Label: "Name on card", MaxLength: 64},
	}}}
}

func findForm(forms []RegForm, bin string) (RegForm, bool) {
	best, bestLen := RegForm{}, -1
	for _, f := range forms {
		for _, p := range f.BINPrefixes {
			if strings.HasPrefix(bin, p) && len(p) > bestLen {
				best, bestLen = f, len(p)
			}
		}
	}
	return best, bestLen >= 0
}

func formByID(forms []RegForm, id string) (RegForm, bool) {
	for _, f := range forms {
		if f.ID == id {
			return f, true
		}
	}
	return RegForm{}, false
}

// checkFields validates the answers against the form: required present,
// lengths bounded, nothing unknown.
func (f RegForm) checkFields(fields map[string]string) error {
	known := map[string]FormFieldSpec{}
	for _, s := range f.Fields {
		known[s.Name] = s
		if s.Required && strings.TrimSpace(fields[s.Name]) == "" {
			return fmt.Errorf("field %q is required", s.Name)
		}
	}
	for k, v := range fields {
		s, ok := known[k]
		if !ok {
			return fmt.Errorf("field %q is not on form %s", k, f.ID)
		}
		if s.MaxLength > 0 && len(v) > s.MaxLength {
			return fmt.Errorf("field %q longer than %d", k, s.MaxLength)
		}
	}
	return nil
}
