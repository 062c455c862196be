// Package hsm gives setpay access to any PKCS#11 token — SoftHSM in development, a
// network HSM or a TPM in production — by configuration alone. Keys are generated inside
// the token, sensitive and never extractable, with one usage each, and are used through
// crypto.Signer, crypto.Decrypter and an ECDH method. Sessions are pooled per token with
// cached object handles, and lost sessions or logins are recovered transparently.
package hsm

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// Module is a loaded PKCS#11 library. A process should open each library once and share
// the Module: C_Initialize and C_Finalize are per process, not per handle.
type Module struct {
	path   string
	ctx    PKCS11
	raw    *pkcs11.Ctx // the loaded library; nil when the Module runs on another PKCS11
	owned  bool        // false when something else in the process had already initialised it
	logger *slog.Logger

	mu     sync.Mutex
	closed bool

	// opMu is held shared around every PKCS#11 call the Module's tokens make and
	// exclusively to re-initialise the library, so no call runs during C_Finalize (SoftHSM
	// frees what a running call uses) and no session handle from before a
	// re-initialisation is used after it, when the module may hand the same number to a
	// new session. epoch counts re-initialisations: sessions and object handles are only
	// valid in the epoch they were obtained in. down is set while the last C_Initialize
	// failed, so the library is not initialised.
	opMu  sync.RWMutex
	epoch atomic.Uint64
	down  atomic.Bool

	// reMu serialises re-initialisations and guards their backoff.
	reMu       sync.Mutex
	nextTry    time.Time
	backoff    time.Duration
	lastReinit error
	now        func() time.Time
	minBackoff time.Duration
	maxBackoff time.Duration
}

// Re-initialisation backoff: the first attempt after the module was last fine is
// immediate; each further one waits twice as long as the one before, up to the maximum.
const (
	DefaultMinReinitBackoff = 500 * time.Millisecond
	DefaultMaxReinitBackoff = 10 * time.Second
)

// TokenInfo describes a token present in a slot.
type TokenInfo struct {
	Slot         uint
	Label        string
	Serial       string
	Manufacturer string
	Model        string
	Initialized  bool
}

// OpenModule loads and initialises the PKCS#11 library at path. If another component
// of the process (crypto11, say) initialised it first, the Module shares it and leaves
// finalisation to that owner.
func OpenModule(path string, logger *slog.Logger) (*Module, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if path == "" {
		return nil, fmt.Errorf("hsm: no PKCS#11 module path configured: %w", ErrModule)
	}
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("hsm: cannot load PKCS#11 module %s (missing file or not a PKCS#11 library): %w", path, ErrModule)
	}
	m, err := NewModule(path, ctx, logger)
	if err != nil {
		ctx.Destroy()
		return nil, err
	}
	return m, nil
}

// NewModule initialises p, a PKCS#11 implementation already at hand, as the Module
// named name (a path, for errors and logs). OpenModule uses it with the library it
// loaded; tests use it with a fake. Close finalises p (when this Module initialised it)
// and, if p has a Destroy method, as *pkcs11.Ctx does, calls it.
func NewModule(name string, p PKCS11, logger *slog.Logger) (*Module, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if p == nil {
		return nil, fmt.Errorf("hsm: no PKCS#11 implementation for %s: %w", name, ErrModule)
	}
	m := &Module{path: name, ctx: p, owned: true, logger: logger, now: time.Now,
		minBackoff: DefaultMinReinitBackoff, maxBackoff: DefaultMaxReinitBackoff}
	m.raw, _ = p.(*pkcs11.Ctx)
	if err := p.Initialize(); err != nil {
		if c, ok := CKR(err); ok && c == pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
			m.owned = false
		} else {
			return nil, fmt.Errorf("hsm: initialise %s: %w: %w", name, ErrModule, err)
		}
	}
	return m, nil
}

// Path is the library's file path.
func (m *Module) Path() string { return m.path }

// Close finalises the library if this Module initialised it. Tokens opened from it
// must be closed first.
func (m *Module) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	m.opMu.Lock()
	defer m.opMu.Unlock()
	var err error
	if m.owned && !m.down.Load() {
		err = m.ctx.Finalize()
	}
	if d, ok := m.ctx.(interface{ Destroy() }); ok {
		d.Destroy()
	}
	if err != nil {
		return fmt.Errorf("hsm: finalise %s: %w", m.path, err)
	}
	return nil
}

// Tokens lists the slots with a token present.
func (m *Module) Tokens() ([]TokenInfo, error) {
	m.opMu.RLock()
	defer m.opMu.RUnlock()
	return m.tokens(false)
}

// tokens lists the tokens; with lenient, a slot whose token cannot be described (SoftHSM
// answers CKR_GENERAL_ERROR for a token whose directory went away) is left out instead
// of failing the list. The caller holds opMu.
func (m *Module) tokens(lenient bool) ([]TokenInfo, error) {
	slots, err := m.ctx.GetSlotList(true)
	if err != nil {
		return nil, &Error{Op: "list slots", Err: err}
	}
	out := make([]TokenInfo, 0, len(slots))
	for _, s := range slots {
		ti, err := m.ctx.GetTokenInfo(s)
		if err != nil {
			if lenient {
				continue
			}
			return nil, &Error{Op: fmt.Sprintf("token info of slot %d", s), Err: err}
		}
		out = append(out, tokenInfo(s, ti))
	}
	return out, nil
}

func tokenInfo(slot uint, ti pkcs11.TokenInfo) TokenInfo {
	return TokenInfo{
		Slot:         slot,
		Label:        strings.TrimRight(ti.Label, " \x00"),
		Serial:       strings.TrimRight(ti.SerialNumber, " \x00"),
		Manufacturer: strings.TrimRight(ti.ManufacturerID, " \x00"),
		Model:        strings.TrimRight(ti.Model, " \x00"),
		Initialized:  ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0,
	}
}

// reinitialize finalises and initialises the library again, for a token that is gone
// from it: SoftHSM, for one, reads its token directory only in C_Initialize, so a
// token whose directory was moved away and back stays invisible until then. seen is
// the epoch the caller last saw: when another caller re-initialised since, and the
// library is up, nothing is done. Attempts are spaced by a doubling backoff, so a
// token that stays away costs one attempt per interval, not one per operation; within
// the interval the last attempt's error is returned at once. Every session and object
// handle of every Token of the Module is void afterwards; the Tokens notice by the
// epoch and find their token and keys again.
func (m *Module) reinitialize(seen uint64) error {
	m.reMu.Lock()
	defer m.reMu.Unlock()
	if m.epoch.Load() != seen && !m.down.Load() {
		return nil
	}
	if !m.owned {
		return fmt.Errorf("hsm: module %s was initialised by another component of the process, which must re-initialise it: %w", m.path, ErrTokenUnavailable)
	}
	now := m.now()
	if now.Before(m.nextTry) {
		if m.lastReinit != nil {
			return m.lastReinit
		}
		return &Error{Op: "re-initialise module " + m.path, Err: fmt.Errorf("%w: re-initialised %v ago without bringing the token back", ErrTokenUnavailable, m.backoff-m.nextTry.Sub(now))}
	}
	if m.backoff == 0 {
		m.backoff = m.minBackoff
	} else {
		m.backoff = min(2*m.backoff, m.maxBackoff)
	}
	m.nextTry = now.Add(m.backoff)

	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return fmt.Errorf("hsm: module %s: %w", m.path, ErrClosed)
	}
	m.opMu.Lock()
	ferr := m.ctx.Finalize()
	if c, ok := CKR(ferr); ok && c == pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED {
		ferr = nil
	}
	err := m.ctx.Initialize()
	if c, ok := CKR(err); ok && c == pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
		err = nil // the C_Finalize failed and left it initialised; sessions may remain
	}
	m.epoch.Add(1)
	m.down.Store(err != nil)
	m.opMu.Unlock()
	if err != nil {
		m.lastReinit = &Error{Op: "re-initialise module " + m.path, Err: fmt.Errorf("%w (next attempt in %v): %w", ErrTokenUnavailable, m.backoff, err)}
		m.logger.Warn("PKCS#11 module re-initialisation failed", "module", m.path, "ckr", ckrName(err), "finalize_ckr", ckrName(ferr), "retry_in", m.backoff)
		return m.lastReinit
	}
	m.lastReinit = nil
	m.logger.Info("PKCS#11 module re-initialised", "module", m.path, "finalize_ckr", ckrName(ferr))
	return nil
}

// settled resets the re-initialisation backoff once a token works again.
func (m *Module) settled() {
	m.reMu.Lock()
	defer m.reMu.Unlock()
	m.backoff, m.nextTry, m.lastReinit = 0, time.Time{}, nil
}

// sameToken tells whether two descriptions are of the same token. The serial alone is
// not enough: some modules give every token the same one (tpm2-pkcs11 answers
// 0000000000000000 for all), so the label must match too.
func sameToken(a, b TokenInfo) bool {
	return a.Initialized && b.Initialized && a.Serial == b.Serial && a.Label == b.Label
}

// findSame finds the one initialised token that is the same as want (sameToken) in the
// current epoch, skipping slots that cannot be described. Two candidates are no
// answer: reattaching to the wrong one would sign with another token's keys. The
// caller holds opMu shared.
func (m *Module) findSame(want TokenInfo) (TokenInfo, bool) {
	tokens, err := m.tokens(true)
	if err != nil {
		return TokenInfo{}, false
	}
	var found []TokenInfo
	for _, t := range tokens {
		if sameToken(t, want) {
			found = append(found, t)
		}
	}
	if len(found) != 1 {
		return TokenInfo{}, false
	}
	return found[0], true
}

// call runs one PKCS#11 call outside any Token, under opMu.
func (m *Module) call(f func() error) error {
	m.opMu.RLock()
	defer m.opMu.RUnlock()
	return f()
}

// Selector picks one token: by label, serial or slot (exactly one of them).
type Selector struct {
	Label  string
	Serial string
	Slot   *uint
}

func (s Selector) String() string {
	switch {
	case s.Label != "":
		return "token=" + s.Label
	case s.Serial != "":
		return "serial=" + s.Serial
	case s.Slot != nil:
		return fmt.Sprintf("slot-id=%d", *s.Slot)
	}
	return "(no token selected)"
}

// Find returns the one initialised token matching sel.
func (m *Module) Find(sel Selector) (TokenInfo, error) {
	n := 0
	for _, set := range []bool{sel.Label != "", sel.Serial != "", sel.Slot != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return TokenInfo{}, fmt.Errorf("hsm: select a token by exactly one of label, serial or slot: %w", ErrBadRequest)
	}
	tokens, err := m.Tokens()
	if err != nil {
		return TokenInfo{}, err
	}
	var found []TokenInfo
	for _, t := range tokens {
		if !t.Initialized {
			continue
		}
		if (sel.Label != "" && t.Label == sel.Label) || (sel.Serial != "" && t.Serial == sel.Serial) || (sel.Slot != nil && t.Slot == *sel.Slot) {
			found = append(found, t)
		}
	}
	switch len(found) {
	case 0:
		return TokenInfo{}, fmt.Errorf("hsm: no token %s in module %s: %w", sel, m.path, ErrTokenNotFound)
	case 1:
		return found[0], nil
	default:
		return TokenInfo{}, fmt.Errorf("hsm: %d tokens match %s in module %s; select it by another of label, serial or slot: %w", len(found), sel, m.path, ErrBadRequest)
	}
}

// InitToken initialises the first uninitialised token of the module with label, sets
// its SO PIN and user PIN, and returns its slot. It is how dev and CI tokens are made;
// production tokens are initialised in a key ceremony with the vendor's tools.
func (m *Module) InitToken(label, soPIN, userPIN string) (uint, error) {
	if label == "" || len(label) > 32 {
		return 0, fmt.Errorf("hsm: token label must be 1 to 32 bytes: %w", ErrBadRequest)
	}
	if _, err := m.Find(Selector{Label: label}); err == nil {
		return 0, fmt.Errorf("hsm: token %q already exists: %w", label, ErrKeyExists)
	} else if !errors.Is(err, ErrTokenNotFound) {
		return 0, err
	}
	tokens, err := m.Tokens()
	if err != nil {
		return 0, err
	}
	var slot *uint
	for _, t := range tokens {
		if !t.Initialized {
			s := t.Slot
			slot = &s
			break
		}
	}
	if slot == nil {
		return 0, fmt.Errorf("hsm: module %s has no uninitialised token: %w", m.path, ErrTokenNotFound)
	}
	if err := m.call(func() error { return m.ctx.InitToken(*slot, soPIN, label) }); err != nil {
		return 0, &Error{Op: "initialise token", Token: label, Err: err}
	}
	// SoftHSM renumbers slots after C_InitToken, so look the token up again by label.
	ti, err := m.Find(Selector{Label: label})
	if err != nil {
		return 0, err
	}
	m.opMu.RLock()
	defer m.opMu.RUnlock()
	sh, err := m.ctx.OpenSession(ti.Slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return 0, &Error{Op: "open session", Token: label, Err: err}
	}
	defer func() { _ = m.ctx.CloseSession(sh) }()
	if err := m.ctx.Login(sh, pkcs11.CKU_SO, soPIN); err != nil {
		return 0, &Error{Op: "SO login", Token: label, Err: err}
	}
	defer func() { _ = m.ctx.Logout(sh) }()
	if err := m.ctx.InitPIN(sh, userPIN); err != nil {
		return 0, &Error{Op: "set user PIN", Token: label, Err: err}
	}
	return ti.Slot, nil
}

// Raw exposes the loaded PKCS#11 library for benchmarks and diagnostics that must
// compare against, or do, what this package does not wrap; it is nil for a Module made
// by NewModule on something else. It is not for key operations in product code.
func (m *Module) Raw() *pkcs11.Ctx { return m.raw }
