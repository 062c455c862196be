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
	h     pkcs11.SessionHandle
	gen   uint64
	epoch uint64 // the module's epoch when it was opened; void in any other
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

	// slot is where the token is now: SoftHSM numbers slots anew at every C_Initialize.
	// attached is the module epoch slot was found in, and lost records that the token
	// was seen gone in that epoch; attachMu serialises finding it again (reattach).
	slot     atomic.Uint64
	attached atomic.Uint64
	lost     atomic.Bool
	attachMu sync.Mutex
	// agen counts the times the token was found again: object handles are cached with
	// the agen they were found in and never used in another, since a module that was
	// re-initialised (by us or by anyone) may give the same number to another object.
	agen atomic.Uint64

	// health is nil while the token is usable, else why not; healthCh is closed at the
	// next change. unusable mirrors health != nil for the operations' fast path.
	hsMu     sync.Mutex
	health   error
	healthCh chan struct{}
	unusable atomic.Bool
}

// Stats counts what a Token did; read them with Token.Stats.
type Stats struct {
	Operations   atomic.Uint64
	Errors       atomic.Uint64
	Recoveries   atomic.Uint64 // new session generations after a lost session, login or token
	Reattaches   atomic.Uint64 // times the token was found again after it was gone
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
		mod:      m,
		info:     info,
		pin:      pin,
		logger:   logger.With("token", info.Label),
		idle:     make(chan *session, max),
		slots:    make(chan struct{}, max),
		probes:   map[string]error{},
		live:     map[pkcs11.SessionHandle]*session{},
		reused:   map[pkcs11.SessionHandle]bool{},
		healthCh: make(chan struct{}),
	}
	t.slot.Store(uint64(info.Slot))
	m.opMu.RLock()
	t.attached.Store(m.epoch.Load())
	mechs, err := m.ctx.GetMechanismList(info.Slot)
	if err != nil {
		m.opMu.RUnlock()
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
	m.opMu.RUnlock()
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

// Info describes the token; Slot is where it is now (a re-initialised module may have
// renumbered it).
func (t *Token) Info() TokenInfo {
	info := t.info
	info.Slot = uint(t.slot.Load())
	return info
}

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
		if s.gen == t.gen.Load() && s.epoch == t.mod.epoch.Load() {
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
	m := t.mod
	m.opMu.RLock()
	defer m.opMu.RUnlock()
	epoch := m.epoch.Load()
	if epoch != t.attached.Load() || m.down.Load() {
		// The module was re-initialised since the token was found: its slot is unknown.
		return nil, &Error{Op: "open session", Token: t.info.Label, Err: errStaleEpoch}
	}
	s, err := t.openHandle(gen, epoch)
	if err != nil {
		return nil, err
	}
	h := s.h
	// Login state belongs to the application, not the session: after the first login
	// every further C_Login answers CKR_USER_ALREADY_LOGGED_IN, which is success here.
	if err := m.ctx.Login(h, pkcs11.CKU_USER, t.pin); err != nil {
		c, _ := CKR(err)
		if c != pkcs11.CKR_USER_ALREADY_LOGGED_IN {
			t.closeHandleLocked(s)
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

// openHandle opens a session whose handle no other session of ours holds. The caller
// holds the module's opMu shared.
func (t *Token) openHandle(gen, epoch uint64) (*session, error) {
	t.hmu.Lock()
	defer t.hmu.Unlock()
	for range 2*cap(t.slots) + 2 {
		h, err := t.mod.ctx.OpenSession(uint(t.slot.Load()), pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			return nil, &Error{Op: "open session", Token: t.info.Label, Err: err}
		}
		if old, held := t.live[h]; held && old.epoch != epoch {
			// A session from before a re-initialisation: the module closed it, and the
			// number is the new session's now. Its holder will find it void by its epoch.
			delete(t.live, h)
			delete(t.reused, h)
		} else if held {
			// Our session with this handle is gone; its holder will find out and close
			// the handle, which then closes this new session.
			t.reused[h] = true
			continue
		}
		s := &session{h: h, gen: gen, epoch: epoch}
		t.live[h] = s
		return s, nil
	}
	return nil, &Error{Op: "open session", Token: t.info.Label, Err: fmt.Errorf("module keeps handing out session handles still in use: %w", ErrModule)}
}

// closeHandle closes the session's handle if the session still owns it and the
// module has not been re-initialised since it was opened (which closed it already).
func (t *Token) closeHandle(s *session) {
	t.mod.opMu.RLock()
	defer t.mod.opMu.RUnlock()
	t.closeHandleLocked(s)
}

// closeHandleLocked is closeHandle for a caller holding the module's opMu shared.
func (t *Token) closeHandleLocked(s *session) {
	t.hmu.Lock()
	defer t.hmu.Unlock()
	if t.live[s.h] != s {
		return
	}
	delete(t.live, s.h)
	delete(t.reused, s.h)
	if s.epoch == t.mod.epoch.Load() && !t.mod.down.Load() {
		_ = t.mod.ctx.CloseSession(s.h)
	}
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
	if cause != nil {
		t.logger.Warn("PKCS#11 sessions lost; reopening and logging in again", "ckr", ckrName(cause))
	}
	t.drain()
}

// do runs op on a pooled session. When the module reports a lost session, login or
// token, it reopens sessions (finding the token again first when it was gone), logs in
// again and retries op once, on a new session.
func (t *Token) do(ctx context.Context, op func(pkcs11.SessionHandle) error) error {
	return t.doE(ctx, func(sh pkcs11.SessionHandle, _ uint64) error { return op(sh) })
}

// doE is do for ops that use object handles: op gets the token's attachment
// generation (agen) it runs in, so it can refuse a handle found in another
// (errStaleEpoch). op runs with the module's
// opMu held shared, and so must not call back into the Token.
func (t *Token) doE(ctx context.Context, op func(pkcs11.SessionHandle, uint64) error) error {
	err := t.doAttempts(ctx, op)
	switch {
	case err == nil:
		if t.unusable.Load() {
			t.setHealth(nil)
		}
	case Unavailable(err):
		t.setHealth(err)
	}
	return err
}

func (t *Token) doAttempts(ctx context.Context, op func(pkcs11.SessionHandle, uint64) error) error {
	m := t.mod
	// One retry; and one more when the token turned out gone, since finding it again
	// (reattach, at the start of the next attempt) is what that retry waits for.
	retries, goneSeen := 1, false
	gone := func(err error) bool {
		if goneSeen {
			return false
		}
		goneSeen = true
		retries++
		t.markLost(err)
		return true
	}
	for attempt := 0; ; attempt++ {
		if err := t.ensure(); err != nil {
			return err
		}
		s, err := t.acquire(ctx, attempt > 0)
		if err != nil {
			if attempt < retries && (recoverable(err) || errors.Is(err, errStaleEpoch)) {
				// The session opened for this attempt was lost before its login (a
				// C_CloseAllSessions in between), or the module was re-initialised
				// meanwhile: the same event as any other.
				t.recover(t.gen.Load(), err)
				continue
			}
			if tokenGone(err) && gone(err) {
				continue
			}
			return t.unavailableIfGone(err)
		}
		m.opMu.RLock()
		epoch := m.epoch.Load()
		if s.epoch != epoch {
			// Re-initialised between taking the session and now: it is void.
			m.opMu.RUnlock()
			t.release(s, true)
			if attempt < retries {
				continue
			}
			return fmt.Errorf("hsm: token %q: %w: the module was re-initialised during the operation", t.info.Label, ErrTokenUnavailable)
		}
		err = op(s.h, t.agen.Load())
		var c pkcs11.Error
		var isCKR bool
		var lost bool
		if err != nil {
			c, isCKR = CKR(err)
			switch {
			case isCKR && c == pkcs11.CKR_OPERATION_NOT_INITIALIZED:
				lost = t.loggedOut(s.h)
			case staleHandle(err) && !errors.Is(err, errStaleEpoch):
				lost = t.loggedOut(s.h)
			}
		}
		m.opMu.RUnlock()
		if err == nil {
			t.release(s, false)
			return nil
		}
		if isCKR && c == pkcs11.CKR_OPERATION_ACTIVE && attempt < retries {
			// A module that leaves an operation active after it failed (tpm2-pkcs11 does,
			// against the standard) has spoilt this session; use another.
			t.release(s, true)
			continue
		}
		if isCKR && c == pkcs11.CKR_OPERATION_NOT_INITIALIZED {
			// Every op here initialises its operation itself, so the module dropped it
			// between C_*Init and the call: tpm2-pkcs11 does when the login goes away in
			// between. By the time we ask, another goroutine may have logged the
			// application in again, so the session state cannot tell; a retry on
			// another session is safe either way, and recovers when the login is gone.
			t.release(s, true)
			if attempt >= retries {
				return err
			}
			if lost {
				t.recover(s.gen, err)
			}
			continue
		}
		if tokenGone(err) {
			t.release(s, true)
			if gone(err) {
				continue
			}
			return t.unavailableIfGone(err)
		}
		if recoverable(err) || (staleHandle(err) && lost) {
			t.release(s, true)
			if attempt < retries {
				t.recover(s.gen, err)
				continue
			}
			return err
		}
		t.release(s, false)
		return err
	}
}

// unavailableIfGone marks an answer meaning the token is gone as ErrTokenUnavailable,
// when the token really is not in its slot: a module that gave such an answer to one
// request while the token stays (a CKR_DEVICE_ERROR for odd input, say) gets the
// answer back as it is, so no request can make the token look unavailable.
func (t *Token) unavailableIfGone(err error) error {
	if tokenGone(err) && !Unavailable(err) && !t.present() {
		t.markLost(err)
		return fmt.Errorf("hsm: token %q: %w: %w", t.info.Label, ErrTokenUnavailable, err)
	}
	return err
}

// markLost records that the token went away; the next operation or Check finds it
// again (reattach).
func (t *Token) markLost(cause error) {
	if !t.lost.Swap(true) {
		t.logger.Warn("PKCS#11 token gone; finding it again", "ckr", ckrName(cause))
	}
}

// ensure makes sure the token is attached in the module's current epoch: found in its
// slot after any re-initialisation, and not seen gone since. The fast path is three
// atomic loads.
func (t *Token) ensure() error {
	m := t.mod
	if !t.lost.Load() && !m.down.Load() && t.attached.Load() == m.epoch.Load() {
		return nil
	}
	return t.reattach()
}

// reattach finds the token again: in the module as it is, and if it is not there, after
// re-initialising the module (bounded by the module's backoff). On success it starts a
// new session generation; keys find their objects again by CKA_ID.
func (t *Token) reattach() error {
	t.attachMu.Lock()
	defer t.attachMu.Unlock()
	m := t.mod
	if t.isClosed() {
		return &Error{Op: "find token", Token: t.info.Label, Err: ErrClosed}
	}
	if !t.lost.Load() && !m.down.Load() && t.attached.Load() == m.epoch.Load() {
		return nil // another goroutine did it
	}
	info, epoch, ok := t.lookup()
	if ok {
		t.attach(info, epoch)
		return nil
	}
	// Not in the module as it is (epoch): re-initialise it, unless another caller
	// already did since.
	if err := m.reinitialize(epoch); err != nil {
		t.lost.Store(true)
		t.setHealth(err)
		return err
	}
	if info, epoch, ok := t.lookup(); ok {
		t.attach(info, epoch)
		m.settled()
		return nil
	}
	t.lost.Store(true)
	err := &Error{Op: "find token", Token: t.info.Label,
		Err: fmt.Errorf("%w: serial %s is not in module %s", ErrTokenUnavailable, t.info.Serial, m.path)}
	t.setHealth(err)
	return err
}

// lookup finds the token in the module's current epoch, by its serial and label: first in the
// slot it was in, then in any. It answers false while the library is down. It returns
// the epoch it looked in either way.
func (t *Token) lookup() (TokenInfo, uint64, bool) {
	m := t.mod
	m.opMu.RLock()
	defer m.opMu.RUnlock()
	epoch := m.epoch.Load()
	if m.down.Load() {
		return TokenInfo{}, epoch, false
	}
	slot := uint(t.slot.Load())
	if ti, err := m.ctx.GetTokenInfo(slot); err == nil {
		if info := tokenInfo(slot, ti); sameToken(info, t.info) {
			return info, epoch, true
		}
	}
	info, ok := m.findSame(t.info)
	return info, epoch, ok
}

// present tells whether the token is still in its slot in the current epoch. SoftHSM
// keeps sessions logged in, shows no objects and answers CKR_GENERAL_ERROR to
// C_GetTokenInfo once a token's directory went away: that is how it is told apart
// from a key that was deleted.
func (t *Token) present() bool {
	m := t.mod
	m.opMu.RLock()
	defer m.opMu.RUnlock()
	if m.down.Load() || t.attached.Load() != m.epoch.Load() {
		return false
	}
	ti, err := m.ctx.GetTokenInfo(uint(t.slot.Load()))
	if err != nil {
		return false
	}
	return sameToken(tokenInfo(uint(t.slot.Load()), ti), t.info)
}

// attach records where the token is now and starts a new session generation. Cached
// object handles are void when the module was re-initialised or the token moved to
// another slot; a token found where it was, in the same epoch, keeps them (a module
// that renumbered its objects says so, and keys find theirs again by CKA_ID).
func (t *Token) attach(info TokenInfo, epoch uint64) {
	moved := uint(t.slot.Load()) != info.Slot
	again := t.attached.Load() != epoch
	if moved || again {
		t.agen.Add(1)
	}
	t.slot.Store(uint64(info.Slot))
	t.attached.Store(epoch)
	t.lost.Store(false)
	t.stats.Reattaches.Add(1)
	t.logger.Info("PKCS#11 token found again", "slot", info.Slot, "moved", moved, "module_reinitialised", again)
	t.recover(t.gen.Load(), nil)
}

func (t *Token) isClosed() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.closed
}

// Health is nil while the token is usable, or the reason it is not (wrapping
// ErrTokenUnavailable). It follows operations and Check.
func (t *Token) Health() error {
	t.hsMu.Lock()
	defer t.hsMu.Unlock()
	return t.health
}

// HealthChanged returns a channel that is closed at the next change of Health.
func (t *Token) HealthChanged() <-chan struct{} {
	t.hsMu.Lock()
	defer t.hsMu.Unlock()
	return t.healthCh
}

func (t *Token) setHealth(err error) {
	t.hsMu.Lock()
	defer t.hsMu.Unlock()
	if (err == nil) == (t.health == nil) {
		if err != nil {
			t.health = err // keep the freshest reason, without waking anyone
		}
		return
	}
	t.health = err
	t.unusable.Store(err != nil)
	close(t.healthCh)
	t.healthCh = make(chan struct{})
	if err != nil {
		t.logger.Warn("PKCS#11 token unusable", "err", err)
	} else {
		t.logger.Info("PKCS#11 token usable again")
	}
}

// Check probes the token without a session (C_GetTokenInfo on its slot) and, if it is
// gone, tries to bring it back: find it again, re-initialising the module if need be,
// bounded by the module's backoff. It records the outcome as Health and returns it:
// nil when the token is usable. A service's health watcher calls it every few seconds,
// so a token that came back is found again even when no request arrives.
func (t *Token) Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if t.isClosed() {
		return &Error{Op: "check token", Token: t.info.Label, Err: ErrClosed}
	}
	if err := t.ensure(); err != nil {
		t.setHealth(err)
		return err
	}
	if !t.present() {
		t.markLost(nil)
		if err := t.ensure(); err != nil {
			t.setHealth(err)
			return err
		}
	}
	t.setHealth(nil)
	return nil
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
	if err != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || recoverable(err) ||
		tokenGone(err) || Unavailable(err) || staleHandle(err)) {
		return err // not an answer about the token: try again next time
	}
	t.probes[name] = err
	return err
}

// RestrictsMechanisms reports whether the token accepted CKA_ALLOWED_MECHANISMS on the
// keys this Token generated, so the token itself refuses other mechanisms.
func (t *Token) RestrictsMechanisms() bool { return !t.allowedRefused.Load() }

// objRef is a cached object handle with the token's attachment generation (agen) it
// was found in.
type objRef struct {
	h     pkcs11.ObjectHandle
	epoch uint64
}

// objectTemplate finds a key again: its class, CKA_ID and CKA_LABEL (the ones it has).
func objectTemplate(class uint, id []byte, label string) []*pkcs11.Attribute {
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class)}
	if len(id) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	}
	if label != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
	}
	return tmpl
}

// withObject runs op with the object ref caches. When the handle went stale (the
// token says so, or it is from before a re-initialisation) it finds the object again
// with tmpl and retries once. When the object is not found and the token itself is not
// there any more (SoftHSM shows no objects once a token's directory went away, and
// answers C_GetTokenInfo with CKR_GENERAL_ERROR), it marks the token lost and tries
// once more: the next attempt finds the token again, bounded by the module's backoff,
// or fails with ErrTokenUnavailable.
func (t *Token) withObject(ctx context.Context, ref *atomic.Pointer[objRef], tmpl []*pkcs11.Attribute, op func(pkcs11.SessionHandle, pkcs11.ObjectHandle) error) error {
	cur := ref.Load()
	// tries bounds the operations the token refused for a stale handle; refinds bounds
	// the searches after the token was found again, which cost no operation.
	limit, tries, refinds := 1, 0, 0
	for {
		err := t.doE(ctx, func(sh pkcs11.SessionHandle, agen uint64) error {
			if cur == nil || cur.epoch != agen {
				return errStaleEpoch
			}
			return op(sh, cur.h)
		})
		if err == nil || !staleHandle(err) || len(tmpl) < 2 {
			return err
		}
		if errors.Is(err, errStaleEpoch) {
			if refinds >= 3 {
				return t.keyGone(err)
			}
			refinds++
		} else {
			if tries >= limit {
				return err
			}
			tries++
		}
		hs, agen, ferr := t.findE(ctx, tmpl, 1)
		if ferr != nil {
			if Unavailable(ferr) {
				return ferr
			}
			return t.keyGone(err)
		}
		if len(hs) == 0 {
			if limit == 1 && !t.present() {
				t.markLost(err)
				limit = 2 // once more, after the token is found again
				continue
			}
			return t.keyGone(err)
		}
		// Retry with the handle just found, the freshest there is. Only replace the
		// cached one if it is still the one that failed: a goroutine whose search began
		// before a later re-insert must not overwrite a newer handle with its own.
		nr := &objRef{h: hs[0], epoch: agen}
		ref.CompareAndSwap(cur, nr)
		cur = nr
	}
}

// keyGone turns a handle from before a re-initialisation that could not be replaced
// into ErrKeyNotFound; other errors pass.
func (t *Token) keyGone(err error) error {
	if errors.Is(err, errStaleEpoch) {
		return fmt.Errorf("the key is no longer found by its CKA_ID: %w", ErrKeyNotFound)
	}
	return err
}

// findE is find that also returns the attachment generation the handles belong to.
func (t *Token) findE(ctx context.Context, tmpl []*pkcs11.Attribute, max int) ([]pkcs11.ObjectHandle, uint64, error) {
	var out []pkcs11.ObjectHandle
	var at uint64
	err := t.doE(ctx, func(sh pkcs11.SessionHandle, epoch uint64) error {
		out, at = out[:0], epoch
		if err := t.mod.ctx.FindObjectsInit(sh, tmpl); err != nil {
			return err
		}
		defer func() { _ = t.mod.ctx.FindObjectsFinal(sh) }()
		for {
			hs, _, err := t.mod.ctx.FindObjects(sh, 64)
			if err != nil {
				return err
			}
			out = append(out, hs...)
			if len(hs) == 0 || (max > 0 && len(out) >= max) {
				return nil
			}
		}
	})
	return out, at, err
}
