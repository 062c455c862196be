package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
)

// Issuer is the card issuer the gateway asks for a decision. Authorize must be
// idempotent per key: asked again for the same key it returns the first decision and
// holds funds once. The gateway relies on it: it asks at most once per claim, but a
// claim left by a replica that died mid-call is taken over after Config.ClaimLease and
// the issuer asked again with the same key (AuthKey), as a failed call's retry is. A
// real issuer link must therefore pass the key as the acquirer's idempotency key and
// keep it at least as long as merchants retry; Ledger remembers it per process only.
type Issuer interface {
	Authorize(key string, pan, expiry string, amount int64, currency string, now time.Time) (Decision, error)
}

// Decision is an issuer's answer.
type Decision struct {
	Result   setpb.AuthResult
	AuthCode string // set when approved
}

// Card is one account in the issuer stand-in's ledger.
type Card struct {
	PAN      string `yaml:"pan"`
	Expiry   string `yaml:"expiry"`   // YYYYMM the issuer has on file
	Currency string `yaml:"currency"` // ISO 4217
	Balance  int64  `yaml:"balance"`  // available funds, minor units
	Limit    int64  `yaml:"limit"`    // per-transaction limit; 0 means none
	Blocked  bool   `yaml:"blocked"`
}

type account struct {
	expiry, currency string
	balance, limit   int64
	blocked          bool
}

// Ledger is the issuer stand-in: an in-memory card ledger keyed by a keyed hash of the
// PAN (it never keeps a PAN), with per-request decisions remembered so a retry holds
// funds once.
type Ledger struct {
	key       []byte
	mu        sync.Mutex
	accounts  map[string]*account
	decisions map[string]Decision
}

// NewLedger returns a ledger holding cards; hashKey keys the PAN hashes.
func NewLedger(hashKey []byte, cards []Card) (*Ledger, error) {
	if len(hashKey) < 16 {
		return nil, fmt.Errorf("gateway: ledger hash key must be at least 16 bytes")
	}
	l := &Ledger{key: append([]byte(nil), hashKey...), accounts: map[string]*account{}, decisions: map[string]Decision{}}
	for i, c := range cards {
		if err := pki.ValidatePAN(c.PAN); err != nil {
			return nil, fmt.Errorf("gateway: ledger card %d: %w", i, err)
		}
		if err := pki.ValidateExpiry(c.Expiry); err != nil {
			return nil, fmt.Errorf("gateway: ledger card %d (%s): %w", i, pki.MaskPAN(c.PAN), err)
		}
		if c.Balance < 0 || c.Limit < 0 || len(c.Currency) != 3 {
			return nil, fmt.Errorf("gateway: ledger card %d (%s): balance, limit or currency invalid", i, pki.MaskPAN(c.PAN))
		}
		l.accounts[l.hash(c.PAN)] = &account{expiry: c.Expiry, currency: c.Currency, balance: c.Balance, limit: c.Limit, blocked: c.Blocked}
	}
	return l, nil
}

func (l *Ledger) hash(pan string) string {
	m := hmac.New(sha256.New, l.key)
	m.Write([]byte(pan))
	return hex.EncodeToString(m.Sum(nil))
}

// Authorize implements Issuer. The order of checks is the issuer's: unknown card,
// blocked, expired (on file, or the PI's expiry differs from the one on file),
// per-transaction limit, then funds.
func (l *Ledger) Authorize(key, pan, expiry string, amount int64, currency string, now time.Time) (Decision, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d, ok := l.decisions[key]; ok {
		return d, nil
	}
	d := Decision{}
	a, ok := l.accounts[l.hash(pan)]
	switch {
	case !ok || a.currency != currency:
		d.Result = setpb.AuthResult_DECLINED_UNKNOWN_CARD
	case a.blocked:
		d.Result = setpb.AuthResult_DECLINED_BLOCKED_CARD
	case a.expiry != expiry || a.expiry < now.UTC().Format("200601"):
		d.Result = setpb.AuthResult_DECLINED_EXPIRED_CARD
	case a.limit > 0 && amount > a.limit:
		d.Result = setpb.AuthResult_DECLINED_OVER_LIMIT
	case amount > a.balance:
		d.Result = setpb.AuthResult_DECLINED_INSUFFICIENT_FUNDS
	default:
		code, err := authCode()
		if err != nil {
			return Decision{}, err
		}
		a.balance -= amount
		d = Decision{Result: setpb.AuthResult_APPROVED, AuthCode: code}
	}
	l.decisions[key] = d
	return d, nil
}

// Balance reports a card's available funds (for tests and the demo).
func (l *Ledger) Balance(pan string) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.accounts[l.hash(pan)]
	if !ok {
		return 0, false
	}
	return a.balance, true
}

func authCode() (string, error) {
	b, err := setproto.Random(4)
	if err != nil {
		return "", err
	}
	n := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) % 1_000_000
	s := strconv.FormatUint(uint64(n), 10)
	for len(s) < 6 {
		s = "0" + s
	}
	return s, nil
}
