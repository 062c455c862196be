package store

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"math/big"
	"time"
)

// Tx is the set of typed record operations available inside a transaction.
// Every write runs in a savepoint: a method that returns an error has
// changed nothing, and the transaction can go on (e.g. to store a refusal).
type Tx interface {
	// Gateway: authorizations.
	InsertAuthorization(ctx context.Context, a *Authorization) error
	GetAuthorization(ctx context.Context, merchantID, xid string) (*Authorization, error)
	// SetAuthorizationStatus moves the status from `from` to `to`; ErrConflict
	// when the current status is not `from`.
	SetAuthorizationStatus(ctx context.Context, merchantID, xid string, from, to AuthStatus) error
	// ReverseAuthorization lowers the authorized amount by amount (never below
	// the captured total; ErrLimitExceeded otherwise). Reaching zero sets
	// status reversed.
	ReverseAuthorization(ctx context.Context, merchantID, xid string, amount int64) (*Authorization, error)

	// Gateway: captures and credits.
	// InsertCapture adds c to the authorization's captured total, enforcing in
	// SQL captured_total + amount <= authorized_amount (ErrLimitExceeded),
	// status authorized/partially_captured (ErrConflict), same currency
	// (ErrConflict) and c.CreatedAt < expires_at (ErrExpired); with a BatchID
	// the batch must be open (ErrConflict). Returns the updated authorization.
	InsertCapture(ctx context.Context, c *Capture) (*Authorization, error)
	GetCapture(ctx context.Context, merchantID, captureID string) (*Capture, error)
	ListCaptures(ctx context.Context, merchantID, xid string) ([]Capture, error)
	// InsertCredit enforces credited_total + amount <= captured_total.
	InsertCredit(ctx context.Context, c *Credit) (*Authorization, error)
	GetCredit(ctx context.Context, merchantID, creditID string) (*Credit, error)
	ListCredits(ctx context.Context, merchantID, xid string) ([]Credit, error)

	// Gateway: batches.
	OpenBatch(ctx context.Context, b *Batch) error
	GetBatch(ctx context.Context, merchantID, batchID string) (*Batch, error)
	// CloseBatch closes an open batch; ErrConflict if already closed.
	CloseBatch(ctx context.Context, merchantID, batchID string, at time.Time) error
	// BatchTotals sums the batch's items by currency and type.
	BatchTotals(ctx context.Context, merchantID, batchID string) ([]BatchTotal, error)
	// ListBatchItems lists the batch's captures, credits and reversals in
	// the order they were made.
	ListBatchItems(ctx context.Context, merchantID, batchID string) ([]BatchItem, error)

	// Gateway: reversals. InsertReversal records r and applies it:
	// TxnAuthReversal lowers the authorized amount (ReverseAuthorization's
	// rules); TxnCaptureReversal lowers the capture's and the authorization's
	// captured total, never below what was credited (ErrLimitExceeded) nor
	// more than the capture (ErrLimitExceeded); TxnCreditReversal likewise for
	// a credit. An unknown target is ErrNotFound, another currency or a
	// closed batch ErrConflict. Returns the updated authorization.
	InsertReversal(ctx context.Context, r *Reversal) (*Authorization, error)
	ListReversals(ctx context.Context, merchantID, xid string) ([]Reversal, error)

	// Merchant: orders.
	InsertOrder(ctx context.Context, o *Order) error
	GetOrder(ctx context.Context, xid string) (*Order, error)
	GetOrderByMerchantOrderID(ctx context.Context, merchantOrderID string) (*Order, error)
	// ListOrders lists up to limit orders (state "" for every state), newest first.
	ListOrders(ctx context.Context, state OrderState, limit int) ([]Order, error)
	// ListOrdersOfOffer lists up to limit orders of one offer (merchant order IDs
	// offerID/XID), newest first.
	ListOrdersOfOffer(ctx context.Context, offerID string, limit int) ([]Order, error)
	SetOrderState(ctx context.Context, xid string, from, to OrderState, at time.Time) error
	// SetOrderCaptureToken keeps the capture token the gateway issued with
	// the order's authorization.
	SetOrderCaptureToken(ctx context.Context, xid string, token []byte) error

	// CA.
	InsertCertificate(ctx context.Context, c *Certificate) error
	GetCertificate(ctx context.Context, issuer, serial string) (*Certificate, error)
	// Revoke records a revocation: ErrNotFound for an unknown certificate,
	// ErrConflict if already revoked.
	Revoke(ctx context.Context, r *Revocation) error
	GetRevocation(ctx context.Context, issuer, serial string) (*Revocation, error)
	ListRevocations(ctx context.Context, issuer string) ([]Revocation, error)
	// NextCRLNumber returns 1, 2, 3, ... per issuer.
	NextCRLNumber(ctx context.Context, issuer string) (int64, error)
	InsertEnrollmentSecret(ctx context.Context, e *EnrollmentSecret) error
	// ConsumeEnrollmentSecret marks the secret used once. Unknown ID or wrong
	// hash: ErrNotFound (indistinguishable on purpose); used: ErrConflict;
	// expired: ErrExpired.
	ConsumeEnrollmentSecret(ctx context.Context, id string, secretHash []byte, now time.Time) (*EnrollmentSecret, error)

	// Audit: append within the caller's transaction, so the record commits
	// together with the state change it describes.
	AppendAudit(ctx context.Context, r AuditRecord) (AuditRecord, error)
}

// AuthStatus is an authorization's state.
type AuthStatus string

// Authorization states.
const (
	AuthAuthorized        AuthStatus = "authorized"
	AuthDeclined          AuthStatus = "declined"
	AuthReversed          AuthStatus = "reversed"
	AuthPartiallyCaptured AuthStatus = "partially_captured"
	AuthCaptured          AuthStatus = "captured"
	AuthExpired           AuthStatus = "expired"
)

func (s AuthStatus) valid() bool {
	switch s {
	case AuthAuthorized, AuthDeclined, AuthReversed, AuthPartiallyCaptured, AuthCaptured, AuthExpired:
		return true
	}
	return false
}

// Authorization is a gateway authorization, keyed by (MerchantID, XID).
// Amounts are minor units of Currency.
type Authorization struct {
	MerchantID       string
	XID              string
	Amount           int64  // requested
	Currency         string // ISO 4217 alphabetic code
	AuthorizedAmount int64
	CapturedTotal    int64 // maintained by InsertCapture; ignored on insert
	CreditedTotal    int64 // maintained by InsertCredit; ignored on insert
	Status           AuthStatus
	DeclineReason    string
	AuthCode         string
	PANHash          []byte // PANHasher.HashPAN(pan): 32 bytes (empty on rows migration 0004 erased)
	PANHashKey       string // PANHasher.KeyID(): which key made PANHash; hashes are compared only under one key
	PANMask          string // MaskPAN(pan): last 4 digits only
	CardExpiry       string // YYYYMM
	CaptureTokenID   string
	CreatedAt        time.Time
	ExpiresAt        time.Time
}

// CaptureStatus is a capture's or credit's state.
type CaptureStatus string

// Capture and credit states.
const (
	CaptureAccepted CaptureStatus = "accepted"
	CaptureSettled  CaptureStatus = "settled"
)

// Capture is one capture against an authorization.
type Capture struct {
	MerchantID string
	CaptureID  string
	XID        string
	Amount     int64
	Currency   string
	Status     CaptureStatus // empty means CaptureAccepted
	BatchID    string        // empty: not in a batch
	CreatedAt  time.Time
	// ReversedAmount is how much of it capture reversals undid; ignored on insert.
	ReversedAmount int64
}

// Credit is one credit (refund) against a captured authorization.
type Credit struct {
	MerchantID string
	CreditID   string
	XID        string
	Amount     int64
	Currency   string
	Status     CaptureStatus // empty means CaptureAccepted
	BatchID    string
	CreatedAt  time.Time
	// ReversedAmount is how much of it credit reversals undid; ignored on insert.
	ReversedAmount int64
}

// BatchStatus is a batch's state.
type BatchStatus string

// Batch states.
const (
	BatchOpen   BatchStatus = "open"
	BatchClosed BatchStatus = "closed"
)

// Batch groups captures and credits for settlement.
type Batch struct {
	MerchantID string
	BatchID    string
	Status     BatchStatus // set by OpenBatch/CloseBatch
	ItemCount  int64       // captures + credits added
	OpenedAt   time.Time
	ClosedAt   time.Time // zero while open
}

// TxnType names the kind of a batch item.
type TxnType string

// Batch item kinds.
const (
	TxnCapture         TxnType = "capture"
	TxnCredit          TxnType = "credit"
	TxnAuthReversal    TxnType = "auth_reversal" // never in a batch: no money moved
	TxnCaptureReversal TxnType = "capture_reversal"
	TxnCreditReversal  TxnType = "credit_reversal"
)

// Reversal undoes part of an authorization, a capture or a credit. Its ID is
// the pair ID of the request that made it.
type Reversal struct {
	MerchantID string
	ReversalID string
	XID        string
	Type       TxnType // TxnAuthReversal, TxnCaptureReversal or TxnCreditReversal
	TargetID   string  // the capture or credit reversed; the XID for an authorization
	Amount     int64
	Currency   string
	BatchID    string // empty: not in a batch (always empty for TxnAuthReversal)
	CreatedAt  time.Time
}

// BatchItem is one capture, credit or reversal in a batch.
type BatchItem struct {
	Type      TxnType
	ID        string
	XID       string
	TargetID  string // reversals only
	Amount    int64
	Currency  string
	CreatedAt time.Time
}

// BatchTotal is the sum of one batch's items of one currency and type.
type BatchTotal struct {
	Currency string
	Type     TxnType
	Count    int64
	Amount   int64
}

// OrderState is a merchant order's state; callers may use their own values.
type OrderState string

// Common order states.
const (
	OrderCreated    OrderState = "created"
	OrderAuthorized OrderState = "authorized"
	OrderCaptured   OrderState = "captured"
	OrderCancelled  OrderState = "cancelled"
	OrderRefunded   OrderState = "refunded"
)

// Order is a merchant's order, keyed by XID.
type Order struct {
	XID             string
	MerchantOrderID string
	DescriptionHash []byte
	Amount          int64
	Currency        string
	State           OrderState
	CreatedAt       time.Time
	UpdatedAt       time.Time
	CaptureToken    []byte // set by SetOrderCaptureToken; ignored on insert
	// Cardholder is the SHA-256 thumbprint of the cardholder certificate whose
	// purchase request created the order (empty on orders of older versions).
	Cardholder []byte
}

// Certificate is one certificate a CA issued, keyed by (Issuer, Serial).
type Certificate struct {
	Issuer   string // issuer identity, e.g. the CA's name or key ID
	Serial   string // SerialHex(serial)
	Role     string
	Subject  string
	NotAfter time.Time
	DER      []byte
	IssuedAt time.Time
	// KeyHash is the SHA-256 of the certified SubjectPublicKeyInfo (KeyHashOf):
	// a key already certified by any CA of this store is refused (ErrKeyCertified).
	KeyHash []byte
}

// Revocation records that a certificate was revoked.
type Revocation struct {
	Issuer    string
	Serial    string
	Reason    int // RFC 5280 CRLReason
	RevokedAt time.Time
}

// EnrollmentSecret is a one-time secret for certificate enrollment. Only a
// hash of the secret is stored.
type EnrollmentSecret struct {
	ID         string
	Role       string
	SecretHash []byte
	ExpiresAt  time.Time
	UsedAt     time.Time // zero until consumed
}

// AuditRecord is one private-key operation in the hash chain. Seq, PrevHash
// and Hash are assigned on append.
type AuditRecord struct {
	Seq      int64
	Time     time.Time // stored with microsecond precision
	Actor    string
	KeyURI   string // PKCS#11 URI of the key (no PIN)
	Purpose  string
	XID      string
	Details  string
	PrevHash []byte
	Hash     []byte
}

// PANHash returns HMAC-SHA256(key, pan) with a key held in memory. It is for
// lookups whose key is random per process and never written anywhere (the CA's
// account ledger); what is stored uses a PANHasher, whose key stays in a token.
// The key must be at least 16 bytes.
func PANHash(key []byte, pan string) ([]byte, error) {
	if len(key) < 16 {
		return nil, invalidf("PAN hash key must be at least 16 bytes")
	}
	if !validPAN(pan) {
		return nil, invalidf("PAN must be 12..19 digits")
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(pan))
	return m.Sum(nil), nil
}

// MaskPAN keeps the last 4 digits and stars the rest (the PAN's length stays).
// PCI DSS permits first 6 / last 4 for display, but a truncation next to a hash of
// the same PAN narrows a guess; with last 4 only, the first 6 (the BIN, which tells
// little about the card) stay unknown too. See docs/protocol.md.
func MaskPAN(pan string) (string, error) {
	if !validPAN(pan) {
		return "", invalidf("PAN must be 12..19 digits")
	}
	b := []byte(pan)
	for i := 0; i < len(b)-4; i++ {
		b[i] = '*'
	}
	return string(b), nil
}

// SerialHex is the canonical text form of a certificate serial number.
func SerialHex(serial *big.Int) string { return serial.Text(16) }

func validPAN(pan string) bool {
	if len(pan) < 12 || len(pan) > 19 {
		return false
	}
	for i := 0; i < len(pan); i++ {
		if pan[i] < '0' || pan[i] > '9' {
			return false
		}
	}
	return true
}

// validMask accepts digits only in the last 4 positions, so neither a full PAN
// nor its BIN can slip into the pan_mask column.
func validMask(m string) bool {
	if len(m) < 12 || len(m) > 19 {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		edge := i >= len(m)-4
		switch {
		case c == '*':
		case c >= '0' && c <= '9' && edge:
		default:
			return false
		}
	}
	return true
}

func validCurrency(c string) bool {
	if len(c) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if c[i] < 'A' || c[i] > 'Z' {
			return false
		}
	}
	return true
}

func validExpiry(e string) bool {
	if len(e) != 6 {
		return false
	}
	for i := 0; i < 6; i++ {
		if e[i] < '0' || e[i] > '9' {
			return false
		}
	}
	month := (e[4]-'0')*10 + (e[5] - '0')
	return month >= 1 && month <= 12
}

func checkMoney(what string, amount int64, currency string, positive bool) error {
	if amount < 0 || (positive && amount == 0) {
		return invalidf("%s amount %d out of range", what, amount)
	}
	if !validCurrency(currency) {
		return invalidf("%s currency %q is not an ISO 4217 code", what, currency)
	}
	return nil
}

func (a *Authorization) validate() error {
	if err := checkID("merchant ID", a.MerchantID); err != nil {
		return err
	}
	if err := checkID("XID", a.XID); err != nil {
		return err
	}
	if err := checkMoney("authorization", a.Amount, a.Currency, false); err != nil {
		return err
	}
	if a.AuthorizedAmount < 0 || a.AuthorizedAmount > a.Amount {
		return invalidf("authorized amount %d outside 0..%d", a.AuthorizedAmount, a.Amount)
	}
	if !a.Status.valid() {
		return invalidf("authorization status %q", a.Status)
	}
	if len(a.PANHash) != panHashSize {
		return invalidf("PAN hash must be %d bytes", panHashSize)
	}
	if a.PANHashKey == "" || len(a.PANHashKey) > 1024 || a.PANHashKey == LegacyPANHashKey {
		return invalidf("PAN hash key must name the key that made the hash (1..1024 bytes)")
	}
	if !validMask(a.PANMask) {
		return invalidf("PAN mask is not a masked PAN (last 4 digits at most)")
	}
	if !validExpiry(a.CardExpiry) {
		return invalidf("card expiry %q: want YYYYMM", a.CardExpiry)
	}
	if a.CreatedAt.IsZero() || a.ExpiresAt.IsZero() {
		return invalidf("authorization times must be set")
	}
	return nil
}
