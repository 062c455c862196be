package hsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/miekg/pkcs11"
)

// DefaultMaxSessions bounds the sessions one Token opens. Signing throughput grows with
// sessions up to the token's parallelism; real HSMs also cap sessions per client.
const DefaultMaxSessions = 32

// TokenConfig says which token to use and how to log in to it. A real HSM is a different
// TokenConfig, never different code.
type TokenConfig struct {
	Selector
	PIN         PINSource
	MaxSessions int // 0 means DefaultMaxSessions
	Logger      *slog.Logger
}

// session is a pooled PKCS#11 session; gen records the pool generation it was opened
// in, so sessions from before a recovery are closed instead of reused.
type session struct {
	h   pkcs11.SessionHandle
	gen uint64
}

// Token is a logged-in token with a pool of sessions. It is safe for concurrent use.
//
// The pool keeps one session per concurrent operation, created on demand up to
// MaxSessions and reused without locks on the fast path. A session is never shared by two
// goroutines, because a PKCS#11 session holds one active operation at a time.
type Token struct {
	mod    *Module
	info   TokenInfo
	pin    string // kept for logging in again after a recovery; never printed
	logger *slog.Logger

	idle  chan *session
	slots chan struct{} // one element per open session; capacity is MaxSessions

	// gen is the session generation; recover bumps it so sessions opened before a loss
	// are closed rather than reused. mu makes "check gen, push to idle" atomic against
	// the bump: release holds it shared, recover and Close exclusively.
	mu      sync.RWMutex
	gen     atomic.Uint64
	closed  bool
	mechs   map[uint]pkcs11.MechanismInfo
	probeMu sync.Mutex
	probes  map[string]error
	// pubUsageRefused records that the module refuses usage attributes on public key
	// templates (tpm2-pkcs11 does); see generateKeyPair.
	pubUsageRefused atomic.Bool
	// allowedRefused records that the module refuses CKA_ALLOWED_MECHANISMS.
	allowedRefused atomic.Bool
	stats          Stats
	observers      []Observer

	// live maps each session handle this Token holds open to its session, and reused
	// records handles the module gave out again while a session of ours still held
	// them; both under hmu, which also covers C_OpenSession and C_CloseSession.
	// Modules reuse the handles of closed sessions (tpm2-pkcs11 at once), so after a
	// C_CloseAllSessions from elsewhere a new session can get the handle a goroutine
	// still holds: two goroutines would share one session, operations would cross
	// (CKR_OPERATION_NOT_INITIALIZED) and tpm2-pkcs11 crashes. Such a new session is
	// left to the old holder, closed when that discards its session, and never pooled.
	hmu    sync.Mutex
	live   map[pkcs11.SessionHandle]*session
	reused map[pkcs11.SessionHandle]bool
}

// Stats counts what a Token did; read them with Token.Stats.
type Stats struct {
	Operations   atomic.Uint64
	Errors       atomic.Uint64
	Recoveries   atomic.Uint64
	Logins       atomic.Uint64
	SessionsOpen atomic.Int64
}

// Observer sees every key operation, for metrics. It must be fast and must not block.
type Observer interface {
	ObserveOp(token, key, op, mechanism string, seconds float64, err error)
}

// OpenToken finds the token, reads its PIN from the configured source, logs in and
// reads the mechanism list.
func (m *Module) OpenToken(ctx context.Context, cfg TokenConfig) (*Token, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	info, err := m.Find(cfg.Selector)
	if err != nil {
		return nil, err
	}
	pin, err := cfg.PIN.Resolve()
	if err != nil {
		return nil, fmt.Errorf("hsm: token %q: %w", info.Label, err)
	}
	max := cfg.MaxSessions
	if max <= 0 {
		max = DefaultMaxSessions
	}
	logger := cfg.Logger
	if logger == nil {
		logger = m.logger
	}
	t := &Token{
		mod:    m,
		info:   info,
		pin:    pin,
		logger: logger.With("token", info.Label),
		idle:   make(chan *session, max),
		slots:  make(chan struct{}, max),
		probes: map[string]error{},
		live:   map[pkcs11.SessionHandle]*session{},
		reused: map[pkcs11.SessionHandle]bool{},
	}
	mechs, err := m.ctx.GetMechanismList(info.Slot)
	if err != nil {
		return nil, &Error{Op: "list mechanisms", Token: info.Label, Err: err}
	}
	t.mechs = make(map[uint]pkcs11.MechanismInfo, len(mechs))
	for _, mech := range mechs {
		mi, err := m.ctx.GetMechanismInfo(info.Slot, []*pkcs11.Mechanism{mech})
		if err != nil {
			continue // a mechanism whose info cannot be read is treated as absent
		}
		t.mechs[mech.Mechanism] = mi
	}
	// The list should be complete, but tpm2-pkcs11 1.9 leaves out CKM_RSA_PKCS_PSS while
	// answering C_GetMechanismInfo for it; ask directly about the ones setpay uses.
	for _, mech := range usedMechanisms {
		if _, ok := t.mechs[mech]; ok {
			continue
		}
		mi, err := m.ctx.GetMechanismInfo(info.Slot, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)})
		if err == nil && mi.Flags != 0 {
			t.mechs[mech] = mi
		}
	}
	// Open the first session now so a wrong PIN fails here, clearly, not on first use.
	s, err := t.acquire(ctx, false)
	if err != nil {
		return nil, err
	}
	t.release(s, false)
	return t, nil
}

// usedMechanisms are the mechanisms setpay's key operations need.
var usedMechanisms = []uint{
	pkcs11.CKM_EC_KEY_PAIR_GEN, pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, pkcs11.CKM_ECDSA, pkcs11.CKM_RSA_PKCS,
	pkcs11.CKM_RSA_PKCS_PSS, pkcs11.CKM_RSA_PKCS_OAEP, pkcs11.CKM_ECDH1_DERIVE,
}

// Info describes the token.
func (t *Token) Info() TokenInfo { return t.info }

// Label is the token label.
func (t *Token) Label() string { return t.info.Label }

// Module is the module the token lives in.
func (t *Token) Module() *Module { return t.mod }

// Stats exposes the token's counters.
func (t *Token) Stats() *Stats { return &t.stats }

// AddObserver registers a metrics observer; call it before the token is in use.
func (t *Token) AddObserver(o Observer) { t.observers = append(t.observers, o) }

// SessionsIdle is the number of open sessions waiting in the pool.
func (t *Token) SessionsIdle() int { return len(t.idle) }

// Close closes every session of this Token. Keys obtained from it stop working.
func (t *Token) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.gen.Add(1)
	t.mu.Unlock()
	t.drain()
	return nil
}

// acquire takes an idle session, or opens one when fewer than MaxSessions are open, or
// waits for one to come back. With fresh, it always opens a new session, closing an
// idle one if that is what it takes to stay within MaxSessions: a retry after a lost
// session must not take an idle session the same event killed, which the generation
// check cannot always tell (a session of a newer generation than the failed one may
// have died in the same event).
func (t *Token) acquire(ctx context.Context, fresh bool) (*session, error) {
	for fresh {
		select {
		case t.slots <- struct{}{}:
			s, err := t.open()
			if err != nil {
				<-t.slots
				return nil, err
			}
			return s, nil
		case s := <-t.idle:
			t.discard(s)
		case <-ctx.Done():
			return nil, fmt.Errorf("hsm: token %q: waiting for a session: %w", t.info.Label, ctx.Err())
		}
	}
	for {
		var s *session
		select {
		case s = <-t.idle:
		default:
			select {
			case s = <-t.idle:
			case t.slots <- struct{}{}:
				s, err := t.open()
				if err != nil {
					<-t.slots
					return nil, err
				}
				return s, nil
			case <-ctx.Done():
				return nil, fmt.Errorf("hsm: token %q: waiting for a session: %w", t.info.Label, ctx.Err())
			}
		}
		if s.gen == t.gen.Load() {
			return s, nil
		}
		t.discard(s) // opened before a recovery
	}
}

func (t *Token) open() (*session, error) {
	t.mu.RLock()
	gen, closed := t.gen.Load(), t.closed
	t.mu.RUnlock()
	if closed {
		return nil, &Error{Op: "open session", Token: t.info.Label, Err: ErrClosed}
	}
	s, err := t.openHandle(gen)
	if err != nil {
		return nil, err
	}
	h := s.h
	// Login state belongs to the application, not the session: after the first login
	// every further C_Login answers CKR_USER_ALREADY_LOGGED_IN, which is success here.
	if err := t.mod.ctx.Login(h, pkcs11.CKU_USER, t.pin); err != nil {
		c, _ := CKR(err)
		if c != pkcs11.CKR_USER_ALREADY_LOGGED_IN {
			t.closeHandle(s)
			if c == pkcs11.CKR_PIN_INCORRECT || c == pkcs11.CKR_PIN_INVALID || c == pkcs11.CKR_PIN_LEN_RANGE {
				return nil, &Error{Op: "login", Token: t.info.Label, Err: fmt.Errorf("%w: %w", ErrPINIncorrect, err)}
			}
			return nil, &Error{Op: "login", Token: t.info.Label, Err: err}
		}
	} else {
		t.stats.Logins.Add(1)
	}
	t.stats.SessionsOpen.Add(1)
	return s, nil
}

// openHandle opens a session whose handle no other session of ours holds.
func (t *Token) openHandle(gen uint64) (*session, error) {
	t.hmu.Lock()
	defer t.hmu.Unlock()
	for range 2*cap(t.slots) + 2 {
		h, err := t.mod.ctx.OpenSession(t.info.Slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			return nil, &Error{Op: "open session", Token: t.info.Label, Err: err}
		}
		if _, held := t.live[h]; held {
			// Our session with this handle is gone; its holder will find out and close
			// the handle, which then closes this new session.
			t.reused[h] = true
			continue
		}
		s := &session{h: h, gen: gen}
		t.live[h] = s
		return s, nil
	}
	return nil, &Error{Op: "open session", Token: t.info.Label, Err: fmt.Errorf("module keeps handing out session handles still in use: %w", ErrModule)}
}

// closeHandle closes the session's handle if the session still owns it.
func (t *Token) closeHandle(s *session) {
	t.hmu.Lock()
	defer t.hmu.Unlock()
	if t.live[s.h] != s {
		return
	}
	delete(t.live, s.h)
	delete(t.reused, s.h)
	_ = t.mod.ctx.CloseSession(s.h)
}

// release returns a session to the pool, or closes it when it is broken or from a
// generation before the last recovery.
func (t *Token) release(s *session, broken bool) {
	if !broken {
		t.mu.RLock()
		if !t.closed && s.gen == t.gen.Load() {
			t.idle <- s // cannot block: at most cap(slots) sessions exist
			t.mu.RUnlock()
			return
		}
		t.mu.RUnlock()
	}
	t.discard(s)
}

func (t *Token) discard(s *session) {
	t.closeHandle(s)
	t.stats.SessionsOpen.Add(-1)
	<-t.slots
}

func (t *Token) drain() {
	for {
		select {
		case s := <-t.idle:
			t.discard(s)
		default:
			return
		}
	}
}

// recover starts a new session generation after a session or login was lost. Only the
// first caller from a generation drains the pool; later ones just retry.
func (t *Token) recover(gen uint64, cause error) {
	t.mu.Lock()
	if t.gen.Load() != gen || t.closed {
		t.mu.Unlock()
		return
	}
	t.gen.Add(1)
	t.mu.Unlock()
	t.stats.Recoveries.Add(1)
	t.logger.Warn("PKCS#11 sessions lost; reopening and logging in again", "ckr", ckrName(cause))
	t.drain()
}

// do runs op on a pooled session. When the module reports a lost session, login or
// token, it reopens sessions, logs in again and retries op once, on a new session.
func (t *Token) do(ctx context.Context, op func(pkcs11.SessionHandle) error) error {
	for attempt := 0; ; attempt++ {
		s, err := t.acquire(ctx, attempt > 0)
		if err != nil {
			if recoverable(err) && attempt == 0 {
				// The session opened for this attempt was lost before its login (a
				// C_CloseAllSessions in between): the same event as any other.
				t.recover(t.gen.Load(), err)
				continue
			}
			return err
		}
		err = op(s.h)
		if err == nil {
			t.release(s, false)
			return nil
		}
		if c, ok := CKR(err); ok && c == pkcs11.CKR_OPERATION_ACTIVE && attempt == 0 {
			// A module that leaves an operation active after it failed (tpm2-pkcs11 does,
			// against the standard) has spoilt this session; use another.
			t.release(s, true)
			continue
		}
		if c, ok := CKR(err); ok && c == pkcs11.CKR_OPERATION_NOT_INITIALIZED {
			// Every op here initialises its operation itself, so the module dropped it
			// between C_*Init and the call: tpm2-pkcs11 does when the login goes away in
			// between. By the time we ask, another goroutine may have logged the
			// application in again, so the session state cannot tell; a retry on
			// another session is safe either way, and recovers when the login is gone.
			lost := t.loggedOut(s.h)
			t.release(s, true)
			if attempt > 0 {
				return err
			}
			if lost {
				t.recover(s.gen, err)
			}
			continue
		}
		if recoverable(err) || (staleHandle(err) && t.loggedOut(s.h)) {
			t.release(s, true)
			if attempt == 0 {
				t.recover(s.gen, err)
				continue
			}
			return err
		}
		t.release(s, false)
		return err
	}
}

// loggedOut tells whether the session lost its login: tokens hide private objects then,
// so a lost login often surfaces as an invalid object handle rather than
// CKR_USER_NOT_LOGGED_IN.
func (t *Token) loggedOut(h pkcs11.SessionHandle) bool {
	info, err := t.mod.ctx.GetSessionInfo(h)
	if err != nil {
		return recoverable(err)
	}
	return info.State == pkcs11.CKS_RO_PUBLIC_SESSION || info.State == pkcs11.CKS_RW_PUBLIC_SESSION
}

// HasMechanism reports whether the token lists mech with all the given CKF_ flags
// (CKF_SIGN, CKF_DECRYPT, CKF_DERIVE, ...).
func (t *Token) HasMechanism(mech uint, flags uint) bool {
	mi, ok := t.mechs[mech]
	return ok && mi.Flags&flags == flags
}

// requireMechanism turns a missing mechanism into a clear error naming it.
func (t *Token) requireMechanism(mech uint, flags uint, name string) error {
	if t.HasMechanism(mech, flags) {
		return nil
	}
	return fmt.Errorf("hsm: token %q (%s %s) does not offer %s: %w", t.info.Label, t.info.Manufacturer, t.info.Model, name, ErrUnsupported)
}

// probe runs a trial once per token and remembers its answer, for parameters that the
// mechanism list cannot describe (OAEP with SHA-256, say).
func (t *Token) probe(name string, trial func() error) error {
	t.probeMu.Lock()
	defer t.probeMu.Unlock()
	if err, ok := t.probes[name]; ok {
		return err
	}
	err := trial()
	if err != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || recoverable(err)) {
		return err // not an answer about the token: try again next time
	}
	t.probes[name] = err
	return err
}

// RestrictsMechanisms reports whether the token accepted CKA_ALLOWED_MECHANISMS on the
// keys this Token generated, so the token itself refuses other mechanisms.
func (t *Token) RestrictsMechanisms() bool { return !t.allowedRefused.Load() }
