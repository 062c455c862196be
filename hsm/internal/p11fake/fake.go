// Package p11fake is an in-memory PKCS#11 implementation for unit tests of package hsm.
// It satisfies hsm.PKCS11 with real software keys, and keeps sessions, the
// application's login state and the visibility of private objects the way the standard
// (and SoftHSM) does. A test can inject a CKR code into any call (Fail), run code just
// before a call (Before), count calls (Calls), and do to a token what another part of
// the process or the hardware would: close every session, log out, re-insert it.
//
// Quirks make a slot behave like a module the project met (tpm2-pkcs11, p11-kit's RPC
// client): refused template attributes, unreadable attributes, a different answer for
// a key used after the login was lost, failed operations left active.
//
// It is test support: keys live in process memory, and nothing here is for production.
package p11fake

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/binary"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"sync"

	"github.com/miekg/pkcs11"
)

// Quirks are departures from the standard that some modules show.
type Quirks struct {
	// RefusePublic makes C_GenerateKeyPair answer the code when the public template
	// holds an attribute of that type (tpm2-pkcs11: CKA_VERIFY, CKR_GENERAL_ERROR).
	RefusePublic map[uint]pkcs11.Error
	// RefusePrivate is the same for the private template (a module without
	// CKA_ALLOWED_MECHANISMS: CKR_ATTRIBUTE_TYPE_INVALID).
	RefusePrivate map[uint]pkcs11.Error
	// Unreadable makes C_GetAttributeValue answer the code for these attribute types
	// (p11-kit's RPC client: CKA_ALLOWED_MECHANISMS, CKR_DEVICE_ERROR).
	Unreadable map[uint]pkcs11.Error
	// LoggedOut is what an operation on a private key answers once the application's
	// login is gone. Zero means the standard's behaviour, SoftHSM's: the object is hidden,
	// so CKR_KEY_HANDLE_INVALID. tpm2-pkcs11 answers CKR_USER_NOT_LOGGED_IN and leaves an
	// initialised operation active.
	LoggedOut pkcs11.Error
	// LoggedOutSign, when non-zero, is what C_Sign answers on a session whose C_SignInit
	// succeeded before the login was lost; the operation ends.
	LoggedOutSign pkcs11.Error
	// KeepFailedOperation leaves an operation active after C_Sign or C_Decrypt failed
	// (tpm2-pkcs11 does after a failed C_Decrypt), so the next C_*Init on that session
	// answers CKR_OPERATION_ACTIVE.
	KeepFailedOperation bool
}

// Slot is one slot with its token. Set Quirks and Mechanisms before the token is used.
type Slot struct {
	ID         uint
	Label      string
	Mechanisms map[uint]uint // mechanism → CKF_ flags
	Quirks

	pin, soPIN  string
	initialized bool
	loggedIn    bool // CKU_USER, for the whole application
	so          bool
	objects     map[pkcs11.ObjectHandle]*object

	// away: the token's files are gone (MoveAway). stale: they went away since the last
	// C_Initialize, so the token shows nothing until the next one, even once they are
	// back: SoftHSM reads a token's files only at C_Initialize. absent: they were away
	// at the last C_Initialize, so the slot is not in the module at all.
	away, stale, absent bool
}

type object struct {
	attrs map[uint][]byte
	key   crypto.Signer // private keys only
}

func (o *object) bool(typ uint) bool {
	v := o.attrs[typ]
	return len(v) > 0 && v[0] != 0
}

func (o *object) ulong(typ uint) uint {
	v := o.attrs[typ]
	if len(v) != 8 {
		return ^uint(0)
	}
	return uint(binary.NativeEndian.Uint64(v))
}

type operation struct {
	kind string // "sign", "decrypt"
	mech *pkcs11.Mechanism
	key  pkcs11.ObjectHandle
}

type session struct {
	slot    *Slot
	rw      bool
	op      *operation
	finding bool
	found   []pkcs11.ObjectHandle
}

// Fake is the in-memory module. It is safe for concurrent use.
type Fake struct {
	// AwayFailsInitialize makes C_Initialize answer CKR_GENERAL_ERROR while a token is
	// away, as SoftHSM 2.6.1 does when its token directory is missing; otherwise the
	// module initialises without that token.
	AwayFailsInitialize bool
	// RenumberSlots gives every slot a new ID at each C_Initialize, as SoftHSM does
	// (its slot IDs derive from the token serial, but only from the second C_Initialize
	// of a process on).
	RenumberSlots bool

	mu       sync.Mutex
	init     bool
	slots    []*Slot
	sessions map[pkcs11.SessionHandle]*session
	next     uint
	calls    map[string]int
	faults   map[string][]error
	before   map[string][]func()
}

// New returns a module with no slots.
func New() *Fake {
	return &Fake{
		sessions: map[pkcs11.SessionHandle]*session{},
		next:     100,
		calls:    map[string]int{},
		faults:   map[string][]error{},
		before:   map[string][]func(){},
	}
}

// DefaultMechanisms are what AddToken's slots offer: what setpay uses.
func DefaultMechanisms() map[uint]uint {
	return map[uint]uint{
		pkcs11.CKM_EC_KEY_PAIR_GEN:       pkcs11.CKF_GENERATE_KEY_PAIR,
		pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN: pkcs11.CKF_GENERATE_KEY_PAIR,
		pkcs11.CKM_ECDSA:                 pkcs11.CKF_SIGN | pkcs11.CKF_VERIFY,
		pkcs11.CKM_RSA_PKCS:              pkcs11.CKF_SIGN | pkcs11.CKF_VERIFY | pkcs11.CKF_DECRYPT | pkcs11.CKF_ENCRYPT,
		pkcs11.CKM_RSA_PKCS_PSS:          pkcs11.CKF_SIGN | pkcs11.CKF_VERIFY,
		pkcs11.CKM_RSA_PKCS_OAEP:         pkcs11.CKF_DECRYPT | pkcs11.CKF_ENCRYPT,
		pkcs11.CKM_ECDSA_SHA1:            pkcs11.CKF_SIGN | pkcs11.CKF_VERIFY,
		pkcs11.CKM_SHA1_RSA_PKCS:         pkcs11.CKF_SIGN | pkcs11.CKF_VERIFY,
	}
}

// AddToken adds a slot with an initialised token labelled label whose user PIN is pin.
func (f *Fake) AddToken(label, pin string) *Slot {
	s := f.AddEmptySlot()
	s.Label, s.pin, s.initialized = label, pin, true
	return s
}

// AddEmptySlot adds a slot with an uninitialised token, for C_InitToken.
func (f *Fake) AddEmptySlot() *Slot {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &Slot{ID: uint(len(f.slots)), Mechanisms: DefaultMechanisms(), objects: map[pkcs11.ObjectHandle]*object{}}
	f.slots = append(f.slots, s)
	return s
}

// Fail makes the next len(errs) calls of the PKCS#11 function fn ("Sign", "SignInit",
// "GenerateKeyPair", ...) answer errs in order, before doing anything; a nil entry lets
// that call through. A failed C_Sign or C_Decrypt ends the session's operation, as the
// standard says (unless the slot keeps failed operations).
func (f *Fake) Fail(fn string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[fn] = append(f.faults[fn], errs...)
}

// Before runs do once, just before the next call of fn, outside the fake's lock, so do
// may use the fake (close all sessions while an operation is between C_SignInit and
// C_Sign, say).
func (f *Fake) Before(fn string, do func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.before[fn] = append(f.before[fn], do)
}

// Calls is how many times fn was called.
func (f *Fake) Calls(fn string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[fn]
}

// Sessions is the number of open sessions.
func (f *Fake) Sessions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sessions)
}

// LoggedIn reports whether the application is logged in to the slot's token.
func (f *Fake) LoggedIn(slot uint) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.slots[slot].loggedIn
}

// CloseAllSessions does what C_CloseAllSessions from another part of the process does:
// every session of the slot is gone, and with the last one the login.
func (f *Fake) CloseAllSessions(slotID uint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["CloseAllSessions"]++
	if slotID >= uint(len(f.slots)) {
		return pkcs11.Error(pkcs11.CKR_SLOT_ID_INVALID)
	}
	f.closeAll(f.slots[slotID])
	return nil
}

// LogoutAll does what a C_Logout from another part of the process does: the sessions
// stay, the login is gone.
func (f *Fake) LogoutAll(slotID uint) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.slots[slotID].loggedIn, f.slots[slotID].so = false, false
}

// Reinsert pulls the token out and puts it back: every session is gone, the login is
// lost, and objects come back under new handles.
func (f *Fake) Reinsert(slotID uint) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.slots[slotID]
	f.closeAll(s)
	f.renumber(s)
}

// MoveAway does what moving a SoftHSM token directory away does: the sessions and the
// login stay, but C_GetTokenInfo answers CKR_GENERAL_ERROR, no object is found and
// every object handle is invalid, until the files are back and the module is
// initialised again.
func (f *Fake) MoveAway(slot uint) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.slots[slot].away, f.slots[slot].stale = true, true
}

// MoveBack puts the token's files back; the token shows again after the next
// C_Initialize.
func (f *Fake) MoveBack(slot uint) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.slots[slot].away = false
}

// SlotID is the ID the module gives the slot (index i of the slots added) now.
func (f *Fake) SlotID(i uint) uint {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.slots[i].ID
}

// RenumberObjects gives every object of the slot a new handle, as a module that
// reloaded its object store does, and nothing else: old handles answer
// CKR_OBJECT_HANDLE_INVALID or CKR_KEY_HANDLE_INVALID.
func (f *Fake) RenumberObjects(slotID uint) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renumber(f.slots[slotID])
}

func (f *Fake) renumber(s *Slot) {
	old := s.objects
	s.objects = make(map[pkcs11.ObjectHandle]*object, len(old))
	hs := slices.Sorted(func(yield func(pkcs11.ObjectHandle) bool) {
		for h := range old {
			if !yield(h) {
				return
			}
		}
	})
	for _, h := range hs {
		s.objects[f.handle()] = old[h]
	}
}

func (f *Fake) closeAll(s *Slot) {
	for h, ss := range f.sessions {
		if ss.slot == s {
			delete(f.sessions, h)
		}
	}
	s.loggedIn, s.so = false, false
}

func (f *Fake) handle() pkcs11.ObjectHandle {
	f.next++
	return pkcs11.ObjectHandle(f.next)
}

func ckr(c uint) error { return pkcs11.Error(c) }

// enter counts the call, runs a Before hook, and applies an injected fault. It returns
// with f.mu held in every case; the caller unlocks.
func (f *Fake) enter(fn string, sh pkcs11.SessionHandle) error {
	f.mu.Lock()
	f.calls[fn]++
	var hook func()
	if q := f.before[fn]; len(q) > 0 {
		hook, f.before[fn] = q[0], q[1:]
	}
	if hook != nil {
		f.mu.Unlock()
		hook()
		f.mu.Lock()
	}
	if q := f.faults[fn]; len(q) > 0 {
		err := q[0]
		f.faults[fn] = q[1:]
		if err != nil {
			if s, ok := f.sessions[sh]; ok && (fn == "Sign" || fn == "Decrypt") && !s.slot.KeepFailedOperation {
				s.op = nil
			}
			return err
		}
	}
	if !f.init && fn != "Initialize" {
		return ckr(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED)
	}
	return nil
}

func (f *Fake) session(sh pkcs11.SessionHandle) (*session, error) {
	s, ok := f.sessions[sh]
	if !ok {
		return nil, ckr(pkcs11.CKR_SESSION_HANDLE_INVALID)
	}
	return s, nil
}

func (f *Fake) slot(id uint) (*Slot, error) {
	for _, s := range f.slots {
		if s.ID == id && !s.absent {
			return s, nil
		}
	}
	return nil, ckr(pkcs11.CKR_SLOT_ID_INVALID)
}

// visible returns the object if the session may see it: private objects only while
// the application is logged in.
func (s *session) visible(h pkcs11.ObjectHandle) (*object, bool) {
	o, ok := s.slot.objects[h]
	if !ok || s.slot.stale || (o.bool(pkcs11.CKA_PRIVATE) && !s.slot.loggedIn) {
		return nil, false
	}
	return o, true
}

// Initialize implements C_Initialize.
func (f *Fake) Initialize(...pkcs11.InitializeOption) error {
	if err := f.enter("Initialize", 0); err != nil {
		f.mu.Unlock()
		return err
	}
	defer f.mu.Unlock()
	if f.init {
		return ckr(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)
	}
	if f.AwayFailsInitialize {
		for _, s := range f.slots {
			if s.away {
				return ckr(pkcs11.CKR_GENERAL_ERROR)
			}
		}
	}
	if f.calls["Initialize"] > 1 {
		// A new start: handles are numbered from the beginning again, so an object
		// handle from before may now name another object, and slots may be renumbered.
		f.next = 100
		for _, s := range f.slots {
			s.absent, s.stale = s.away, s.away
			if f.RenumberSlots {
				s.ID += 1000
			}
			f.renumberReversed(s)
		}
	}
	f.init = true
	return nil
}

// renumberReversed gives the slot's objects new handles from the counter, in the
// reverse order of their old ones.
func (f *Fake) renumberReversed(s *Slot) {
	old := s.objects
	s.objects = make(map[pkcs11.ObjectHandle]*object, len(old))
	hs := slices.Sorted(func(yield func(pkcs11.ObjectHandle) bool) {
		for h := range old {
			if !yield(h) {
				return
			}
		}
	})
	slices.Reverse(hs)
	for _, h := range hs {
		s.objects[f.handle()] = old[h]
	}
}

// Finalize implements C_Finalize.
func (f *Fake) Finalize() error {
	if err := f.enter("Finalize", 0); err != nil {
		f.mu.Unlock()
		return err
	}
	defer f.mu.Unlock()
	for _, s := range f.slots {
		f.closeAll(s)
	}
	f.init = false
	return nil
}

// GetSlotList implements C_GetSlotList.
func (f *Fake) GetSlotList(bool) ([]uint, error) {
	defer f.mu.Unlock()
	if err := f.enter("GetSlotList", 0); err != nil {
		return nil, err
	}
	out := make([]uint, 0, len(f.slots))
	for _, s := range f.slots {
		if !s.absent {
			out = append(out, s.ID)
		}
	}
	return out, nil
}

// GetTokenInfo implements C_GetTokenInfo.
func (f *Fake) GetTokenInfo(slotID uint) (pkcs11.TokenInfo, error) {
	defer f.mu.Unlock()
	if err := f.enter("GetTokenInfo", 0); err != nil {
		return pkcs11.TokenInfo{}, err
	}
	s, err := f.slot(slotID)
	if err != nil {
		return pkcs11.TokenInfo{}, err
	}
	if s.stale {
		return pkcs11.TokenInfo{}, ckr(pkcs11.CKR_GENERAL_ERROR)
	}
	ti := pkcs11.TokenInfo{
		Label: s.Label, ManufacturerID: "setpay p11fake", Model: "fake",
		SerialNumber: fmt.Sprintf("fake%04d", slices.Index(f.slots, s)), Flags: pkcs11.CKF_LOGIN_REQUIRED | pkcs11.CKF_RNG,
	}
	if s.initialized {
		ti.Flags |= pkcs11.CKF_TOKEN_INITIALIZED | pkcs11.CKF_USER_PIN_INITIALIZED
	}
	return ti, nil
}

// GetMechanismList implements C_GetMechanismList.
func (f *Fake) GetMechanismList(slotID uint) ([]*pkcs11.Mechanism, error) {
	defer f.mu.Unlock()
	if err := f.enter("GetMechanismList", 0); err != nil {
		return nil, err
	}
	s, err := f.slot(slotID)
	if err != nil {
		return nil, err
	}
	var out []*pkcs11.Mechanism
	for _, m := range slices.Sorted(func(yield func(uint) bool) {
		for m := range s.Mechanisms {
			if !yield(m) {
				return
			}
		}
	}) {
		out = append(out, pkcs11.NewMechanism(m, nil))
	}
	return out, nil
}

// GetMechanismInfo implements C_GetMechanismInfo.
func (f *Fake) GetMechanismInfo(slotID uint, m []*pkcs11.Mechanism) (pkcs11.MechanismInfo, error) {
	defer f.mu.Unlock()
	if err := f.enter("GetMechanismInfo", 0); err != nil {
		return pkcs11.MechanismInfo{}, err
	}
	s, err := f.slot(slotID)
	if err != nil {
		return pkcs11.MechanismInfo{}, err
	}
	if len(m) != 1 {
		return pkcs11.MechanismInfo{}, ckr(pkcs11.CKR_ARGUMENTS_BAD)
	}
	flags, ok := s.Mechanisms[m[0].Mechanism]
	if !ok {
		return pkcs11.MechanismInfo{}, ckr(pkcs11.CKR_MECHANISM_INVALID)
	}
	return pkcs11.MechanismInfo{MinKeySize: 256, MaxKeySize: 4096, Flags: flags}, nil
}

// InitToken implements C_InitToken.
func (f *Fake) InitToken(slotID uint, soPIN string, label string) error {
	defer f.mu.Unlock()
	if err := f.enter("InitToken", 0); err != nil {
		return err
	}
	s, err := f.slot(slotID)
	if err != nil {
		return err
	}
	for _, ss := range f.sessions {
		if ss.slot == s {
			return ckr(pkcs11.CKR_SESSION_EXISTS)
		}
	}
	s.Label, s.soPIN, s.initialized = label, soPIN, true
	s.objects = map[pkcs11.ObjectHandle]*object{}
	return nil
}

// InitPIN implements C_InitPIN.
func (f *Fake) InitPIN(sh pkcs11.SessionHandle, pin string) error {
	defer f.mu.Unlock()
	if err := f.enter("InitPIN", sh); err != nil {
		return err
	}
	s, err := f.session(sh)
	if err != nil {
		return err
	}
	if !s.slot.so {
		return ckr(pkcs11.CKR_USER_NOT_LOGGED_IN)
	}
	s.slot.pin = pin
	return nil
}

// OpenSession implements C_OpenSession.
func (f *Fake) OpenSession(slotID uint, flags uint) (pkcs11.SessionHandle, error) {
	defer f.mu.Unlock()
	if err := f.enter("OpenSession", 0); err != nil {
		return 0, err
	}
	s, err := f.slot(slotID)
	if err != nil {
		return 0, err
	}
	if flags&pkcs11.CKF_SERIAL_SESSION == 0 {
		return 0, ckr(pkcs11.CKR_SESSION_PARALLEL_NOT_SUPPORTED)
	}
	if !s.initialized {
		return 0, ckr(pkcs11.CKR_TOKEN_NOT_RECOGNIZED)
	}
	h := pkcs11.SessionHandle(f.handle())
	f.sessions[h] = &session{slot: s, rw: flags&pkcs11.CKF_RW_SESSION != 0}
	return h, nil
}

// CloseSession implements C_CloseSession; closing the slot's last session logs the
// application out, as the standard says.
func (f *Fake) CloseSession(sh pkcs11.SessionHandle) error {
	defer f.mu.Unlock()
	if err := f.enter("CloseSession", sh); err != nil {
		return err
	}
	s, err := f.session(sh)
	if err != nil {
		return err
	}
	delete(f.sessions, sh)
	for _, other := range f.sessions {
		if other.slot == s.slot {
			return nil
		}
	}
	s.slot.loggedIn, s.slot.so = false, false
	return nil
}

// GetSessionInfo implements C_GetSessionInfo.
func (f *Fake) GetSessionInfo(sh pkcs11.SessionHandle) (pkcs11.SessionInfo, error) {
	defer f.mu.Unlock()
	if err := f.enter("GetSessionInfo", sh); err != nil {
		return pkcs11.SessionInfo{}, err
	}
	s, err := f.session(sh)
	if err != nil {
		return pkcs11.SessionInfo{}, err
	}
	info := pkcs11.SessionInfo{SlotID: s.slot.ID, Flags: pkcs11.CKF_SERIAL_SESSION}
	switch {
	case s.slot.so:
		info.State = pkcs11.CKS_RW_SO_FUNCTIONS
	case s.slot.loggedIn && s.rw:
		info.State = pkcs11.CKS_RW_USER_FUNCTIONS
	case s.slot.loggedIn:
		info.State = pkcs11.CKS_RO_USER_FUNCTIONS
	case s.rw:
		info.State = pkcs11.CKS_RW_PUBLIC_SESSION
	default:
		info.State = pkcs11.CKS_RO_PUBLIC_SESSION
	}
	if s.rw {
		info.Flags |= pkcs11.CKF_RW_SESSION
	}
	return info, nil
}

// Login implements C_Login for CKU_USER and CKU_SO.
func (f *Fake) Login(sh pkcs11.SessionHandle, userType uint, pin string) error {
	defer f.mu.Unlock()
	if err := f.enter("Login", sh); err != nil {
		return err
	}
	s, err := f.session(sh)
	if err != nil {
		return err
	}
	if s.slot.loggedIn || s.slot.so {
		return ckr(pkcs11.CKR_USER_ALREADY_LOGGED_IN)
	}
	switch userType {
	case pkcs11.CKU_USER:
		if pin != s.slot.pin || pin == "" {
			return ckr(pkcs11.CKR_PIN_INCORRECT)
		}
		s.slot.loggedIn = true
	case pkcs11.CKU_SO:
		if pin != s.slot.soPIN || pin == "" {
			return ckr(pkcs11.CKR_PIN_INCORRECT)
		}
		s.slot.so = true
	default:
		return ckr(pkcs11.CKR_USER_TYPE_INVALID)
	}
	return nil
}

// Logout implements C_Logout.
func (f *Fake) Logout(sh pkcs11.SessionHandle) error {
	defer f.mu.Unlock()
	if err := f.enter("Logout", sh); err != nil {
		return err
	}
	s, err := f.session(sh)
	if err != nil {
		return err
	}
	if !s.slot.loggedIn && !s.slot.so {
		return ckr(pkcs11.CKR_USER_NOT_LOGGED_IN)
	}
	s.slot.loggedIn, s.slot.so = false, false
	return nil
}

var (
	oidP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384 = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
)

func boolBytes(b bool) []byte {
	if b {
		return []byte{1}
	}
	return []byte{0}
}

func ulongBytes(v uint) []byte { return binary.NativeEndian.AppendUint64(nil, uint64(v)) }

// GenerateKeyPair implements C_GenerateKeyPair for EC (P-256, P-384) and RSA keys.
func (f *Fake) GenerateKeyPair(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, public, private []*pkcs11.Attribute) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error) {
	defer f.mu.Unlock()
	if err := f.enter("GenerateKeyPair", sh); err != nil {
		return 0, 0, err
	}
	s, err := f.session(sh)
	if err != nil {
		return 0, 0, err
	}
	if !s.slot.loggedIn {
		return 0, 0, ckr(pkcs11.CKR_USER_NOT_LOGGED_IN)
	}
	if !s.rw {
		return 0, 0, ckr(pkcs11.CKR_SESSION_READ_ONLY)
	}
	for _, a := range public {
		if c, ok := s.slot.RefusePublic[a.Type]; ok {
			return 0, 0, c
		}
	}
	for _, a := range private {
		if c, ok := s.slot.RefusePrivate[a.Type]; ok {
			return 0, 0, c
		}
	}
	if len(m) != 1 {
		return 0, 0, ckr(pkcs11.CKR_MECHANISM_INVALID)
	}
	if flags := s.slot.Mechanisms[m[0].Mechanism]; flags&pkcs11.CKF_GENERATE_KEY_PAIR == 0 {
		return 0, 0, ckr(pkcs11.CKR_MECHANISM_INVALID)
	}
	pub := &object{attrs: map[uint][]byte{}}
	priv := &object{attrs: map[uint][]byte{pkcs11.CKA_PRIVATE: {1}, pkcs11.CKA_SENSITIVE: {1}}}
	for _, a := range public {
		pub.attrs[a.Type] = bytes.Clone(a.Value)
	}
	for _, a := range private {
		priv.attrs[a.Type] = bytes.Clone(a.Value)
	}
	switch m[0].Mechanism {
	case pkcs11.CKM_EC_KEY_PAIR_GEN:
		var oid asn1.ObjectIdentifier
		if _, err := asn1.Unmarshal(pub.attrs[pkcs11.CKA_EC_PARAMS], &oid); err != nil {
			return 0, 0, ckr(pkcs11.CKR_TEMPLATE_INCOMPLETE)
		}
		var curve elliptic.Curve
		switch {
		case oid.Equal(oidP256):
			curve = elliptic.P256()
		case oid.Equal(oidP384):
			curve = elliptic.P384()
		default:
			return 0, 0, ckr(pkcs11.CKR_CURVE_NOT_SUPPORTED)
		}
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			return 0, 0, ckr(pkcs11.CKR_FUNCTION_FAILED)
		}
		point, err := asn1.Marshal(elliptic.Marshal(curve, k.X, k.Y)) //nolint:staticcheck // PKCS#11 wants the uncompressed point
		if err != nil {
			return 0, 0, ckr(pkcs11.CKR_FUNCTION_FAILED)
		}
		pub.attrs[pkcs11.CKA_KEY_TYPE] = ulongBytes(pkcs11.CKK_EC)
		pub.attrs[pkcs11.CKA_EC_POINT] = point
		priv.attrs[pkcs11.CKA_KEY_TYPE] = ulongBytes(pkcs11.CKK_EC)
		priv.attrs[pkcs11.CKA_EC_PARAMS] = bytes.Clone(pub.attrs[pkcs11.CKA_EC_PARAMS])
		priv.key = k
	case pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN:
		bits := (&object{attrs: pub.attrs}).ulong(pkcs11.CKA_MODULUS_BITS)
		if bits < 1024 || bits > 4096 {
			return 0, 0, ckr(pkcs11.CKR_KEY_SIZE_RANGE)
		}
		k, err := rsa.GenerateKey(rand.Reader, int(bits))
		if err != nil {
			return 0, 0, ckr(pkcs11.CKR_FUNCTION_FAILED)
		}
		for _, o := range []*object{pub, priv} {
			o.attrs[pkcs11.CKA_KEY_TYPE] = ulongBytes(pkcs11.CKK_RSA)
			o.attrs[pkcs11.CKA_MODULUS] = k.N.Bytes()
			o.attrs[pkcs11.CKA_PUBLIC_EXPONENT] = big.NewInt(int64(k.E)).Bytes()
		}
		priv.key = k
	}
	priv.attrs[pkcs11.CKA_LOCAL] = []byte{1}
	pub.attrs[pkcs11.CKA_LOCAL] = []byte{1}
	priv.attrs[pkcs11.CKA_ALWAYS_SENSITIVE] = boolBytes(priv.bool(pkcs11.CKA_SENSITIVE))
	priv.attrs[pkcs11.CKA_NEVER_EXTRACTABLE] = boolBytes(!priv.bool(pkcs11.CKA_EXTRACTABLE))
	ph, kh := f.handle(), f.handle()
	s.slot.objects[ph], s.slot.objects[kh] = pub, priv
	return ph, kh, nil
}

// DestroyObject implements C_DestroyObject.
func (f *Fake) DestroyObject(sh pkcs11.SessionHandle, oh pkcs11.ObjectHandle) error {
	defer f.mu.Unlock()
	if err := f.enter("DestroyObject", sh); err != nil {
		return err
	}
	s, err := f.session(sh)
	if err != nil {
		return err
	}
	if _, ok := s.visible(oh); !ok {
		return ckr(pkcs11.CKR_OBJECT_HANDLE_INVALID)
	}
	delete(s.slot.objects, oh)
	return nil
}

// GetAttributeValue implements C_GetAttributeValue.
func (f *Fake) GetAttributeValue(sh pkcs11.SessionHandle, oh pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error) {
	defer f.mu.Unlock()
	if err := f.enter("GetAttributeValue", sh); err != nil {
		return nil, err
	}
	s, err := f.session(sh)
	if err != nil {
		return nil, err
	}
	o, ok := s.visible(oh)
	if !ok {
		return nil, ckr(pkcs11.CKR_OBJECT_HANDLE_INVALID)
	}
	out := make([]*pkcs11.Attribute, 0, len(a))
	for _, want := range a {
		if c, ok := s.slot.Unreadable[want.Type]; ok {
			return nil, c
		}
		if o.key != nil && o.bool(pkcs11.CKA_SENSITIVE) && (want.Type == pkcs11.CKA_VALUE || want.Type == pkcs11.CKA_PRIVATE_EXPONENT) {
			return nil, ckr(pkcs11.CKR_ATTRIBUTE_SENSITIVE)
		}
		v, ok := o.attrs[want.Type]
		if !ok {
			return nil, ckr(pkcs11.CKR_ATTRIBUTE_TYPE_INVALID)
		}
		out = append(out, &pkcs11.Attribute{Type: want.Type, Value: bytes.Clone(v)})
	}
	return out, nil
}

// SetAttributeValue implements C_SetAttributeValue.
func (f *Fake) SetAttributeValue(sh pkcs11.SessionHandle, oh pkcs11.ObjectHandle, a []*pkcs11.Attribute) error {
	defer f.mu.Unlock()
	if err := f.enter("SetAttributeValue", sh); err != nil {
		return err
	}
	s, err := f.session(sh)
	if err != nil {
		return err
	}
	o, ok := s.visible(oh)
	if !ok {
		return ckr(pkcs11.CKR_OBJECT_HANDLE_INVALID)
	}
	for _, x := range a {
		o.attrs[x.Type] = bytes.Clone(x.Value)
	}
	return nil
}

// FindObjectsInit implements C_FindObjectsInit.
func (f *Fake) FindObjectsInit(sh pkcs11.SessionHandle, temp []*pkcs11.Attribute) error {
	defer f.mu.Unlock()
	if err := f.enter("FindObjectsInit", sh); err != nil {
		return err
	}
	s, err := f.session(sh)
	if err != nil {
		return err
	}
	if s.finding || s.op != nil {
		return ckr(pkcs11.CKR_OPERATION_ACTIVE)
	}
	s.found = s.found[:0]
	for h := range s.slot.objects {
		o, ok := s.visible(h)
		if !ok {
			continue
		}
		match := true
		for _, a := range temp {
			if v, ok := o.attrs[a.Type]; !ok || !bytes.Equal(v, a.Value) {
				match = false
				break
			}
		}
		if match {
			s.found = append(s.found, h)
		}
	}
	slices.Sort(s.found)
	s.finding = true
	return nil
}

// FindObjects implements C_FindObjects.
func (f *Fake) FindObjects(sh pkcs11.SessionHandle, max int) ([]pkcs11.ObjectHandle, bool, error) {
	defer f.mu.Unlock()
	if err := f.enter("FindObjects", sh); err != nil {
		return nil, false, err
	}
	s, err := f.session(sh)
	if err != nil {
		return nil, false, err
	}
	if !s.finding {
		return nil, false, ckr(pkcs11.CKR_OPERATION_NOT_INITIALIZED)
	}
	n := min(max, len(s.found))
	out := slices.Clone(s.found[:n])
	s.found = s.found[n:]
	return out, false, nil
}

// FindObjectsFinal implements C_FindObjectsFinal.
func (f *Fake) FindObjectsFinal(sh pkcs11.SessionHandle) error {
	defer f.mu.Unlock()
	if err := f.enter("FindObjectsFinal", sh); err != nil {
		return err
	}
	s, err := f.session(sh)
	if err != nil {
		return err
	}
	if !s.finding {
		return ckr(pkcs11.CKR_OPERATION_NOT_INITIALIZED)
	}
	s.finding, s.found = false, nil
	return nil
}

// opInit checks what C_SignInit and C_DecryptInit check and starts the operation.
func (f *Fake) opInit(kind string, usage uint, flag uint, sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, oh pkcs11.ObjectHandle) error {
	s, err := f.session(sh)
	if err != nil {
		return err
	}
	if s.op != nil || s.finding {
		return ckr(pkcs11.CKR_OPERATION_ACTIVE)
	}
	if !s.slot.loggedIn && s.slot.LoggedOut != 0 {
		return s.slot.LoggedOut
	}
	if s.slot.stale {
		return ckr(pkcs11.CKR_OBJECT_HANDLE_INVALID) // what SoftHSM answers then
	}
	o, ok := s.visible(oh)
	if !ok || o.key == nil {
		return ckr(pkcs11.CKR_KEY_HANDLE_INVALID)
	}
	if len(m) != 1 {
		return ckr(pkcs11.CKR_MECHANISM_INVALID)
	}
	mech := m[0].Mechanism
	if s.slot.Mechanisms[mech]&flag == 0 {
		return ckr(pkcs11.CKR_MECHANISM_INVALID)
	}
	if allowed, ok := o.attrs[pkcs11.CKA_ALLOWED_MECHANISMS]; ok && len(allowed) > 0 {
		permitted := false
		for i := 0; i+8 <= len(allowed); i += 8 {
			if uint(binary.NativeEndian.Uint64(allowed[i:])) == mech {
				permitted = true
			}
		}
		if !permitted {
			return ckr(pkcs11.CKR_MECHANISM_INVALID)
		}
	}
	if !o.bool(usage) {
		return ckr(pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED)
	}
	_, isEC := o.key.(*ecdsa.PrivateKey)
	if (mech == pkcs11.CKM_ECDSA || mech == pkcs11.CKM_ECDSA_SHA1) != isEC {
		return ckr(pkcs11.CKR_KEY_TYPE_INCONSISTENT)
	}
	s.op = &operation{kind: kind, mech: m[0], key: oh}
	return nil
}

// opKey returns the operation's key, ending the operation when that fails.
func (f *Fake) opKey(kind string, sh pkcs11.SessionHandle) (*session, *object, error) {
	s, err := f.session(sh)
	if err != nil {
		return nil, nil, err
	}
	if s.op == nil || s.op.kind != kind {
		return nil, nil, ckr(pkcs11.CKR_OPERATION_NOT_INITIALIZED)
	}
	if !s.slot.loggedIn && s.slot.LoggedOut != 0 {
		return nil, nil, s.slot.LoggedOut // the operation stays active
	}
	if !s.slot.loggedIn && s.slot.LoggedOutSign != 0 && kind == "sign" {
		s.op = nil
		return nil, nil, s.slot.LoggedOutSign
	}
	o, ok := s.visible(s.op.key)
	if !ok {
		s.op = nil
		return nil, nil, ckr(pkcs11.CKR_KEY_HANDLE_INVALID)
	}
	return s, o, nil
}

// SignInit implements C_SignInit.
func (f *Fake) SignInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, oh pkcs11.ObjectHandle) error {
	defer f.mu.Unlock()
	if err := f.enter("SignInit", sh); err != nil {
		return err
	}
	return f.opInit("sign", pkcs11.CKA_SIGN, pkcs11.CKF_SIGN, sh, m, oh)
}

var hashOfMech = map[uint]crypto.Hash{
	pkcs11.CKM_SHA_1: crypto.SHA1, pkcs11.CKM_SHA224: crypto.SHA224, pkcs11.CKM_SHA256: crypto.SHA256,
	pkcs11.CKM_SHA384: crypto.SHA384, pkcs11.CKM_SHA512: crypto.SHA512,
}

// Sign implements C_Sign for CKM_ECDSA (r||s), CKM_RSA_PKCS (on a DigestInfo) and
// CKM_RSA_PKCS_PSS (on a digest).
func (f *Fake) Sign(sh pkcs11.SessionHandle, message []byte) ([]byte, error) {
	defer f.mu.Unlock()
	if err := f.enter("Sign", sh); err != nil {
		return nil, err
	}
	s, o, err := f.opKey("sign", sh)
	if err != nil {
		return nil, err
	}
	mech := s.op.mech
	s.op = nil
	switch k := o.key.(type) {
	case *ecdsa.PrivateKey:
		r, ss, err := ecdsa.Sign(rand.Reader, k, message)
		if err != nil {
			return nil, ckr(pkcs11.CKR_FUNCTION_FAILED)
		}
		n := (k.Curve.Params().BitSize + 7) / 8
		return append(r.FillBytes(make([]byte, n)), ss.FillBytes(make([]byte, n))...), nil
	case *rsa.PrivateKey:
		switch mech.Mechanism {
		case pkcs11.CKM_RSA_PKCS:
			sig, err := rsa.SignPKCS1v15(nil, k, 0, message)
			if err != nil {
				return nil, ckr(pkcs11.CKR_DATA_LEN_RANGE)
			}
			return sig, nil
		case pkcs11.CKM_RSA_PKCS_PSS:
			if len(mech.Parameter) < 24 {
				return nil, ckr(pkcs11.CKR_MECHANISM_PARAM_INVALID)
			}
			h, ok := hashOfMech[uint(binary.NativeEndian.Uint64(mech.Parameter))]
			if !ok || len(message) != h.Size() {
				return nil, ckr(pkcs11.CKR_MECHANISM_PARAM_INVALID)
			}
			salt := int(binary.NativeEndian.Uint64(mech.Parameter[16:]))
			sig, err := rsa.SignPSS(rand.Reader, k, h, message, &rsa.PSSOptions{SaltLength: salt})
			if err != nil {
				return nil, ckr(pkcs11.CKR_FUNCTION_FAILED)
			}
			return sig, nil
		}
	}
	return nil, ckr(pkcs11.CKR_MECHANISM_INVALID)
}

// DecryptInit implements C_DecryptInit.
func (f *Fake) DecryptInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, oh pkcs11.ObjectHandle) error {
	defer f.mu.Unlock()
	if err := f.enter("DecryptInit", sh); err != nil {
		return err
	}
	return f.opInit("decrypt", pkcs11.CKA_DECRYPT, pkcs11.CKF_DECRYPT, sh, m, oh)
}

// oaepParams reads the *pkcs11.OAEPParams a Mechanism carries (miekg/pkcs11 keeps it
// in an unexported field until the call into C).
func oaepParams(m *pkcs11.Mechanism) (hashAlg, mgf uint, label []byte, ok bool) {
	g := reflect.ValueOf(m).Elem().FieldByName("generator")
	if !g.IsValid() || g.IsNil() || g.Elem().Type() != reflect.TypeFor[*pkcs11.OAEPParams]() {
		return 0, 0, nil, false
	}
	p := g.Elem().Elem()
	return uint(p.FieldByName("HashAlg").Uint()), uint(p.FieldByName("MGF").Uint()), p.FieldByName("SourceData").Bytes(), true
}

// Decrypt implements C_Decrypt for CKM_RSA_PKCS_OAEP with SHA-1 or SHA-256 (hash and
// MGF1 the same).
func (f *Fake) Decrypt(sh pkcs11.SessionHandle, cipher []byte) ([]byte, error) {
	defer f.mu.Unlock()
	if err := f.enter("Decrypt", sh); err != nil {
		return nil, err
	}
	s, o, err := f.opKey("decrypt", sh)
	if err != nil {
		return nil, err
	}
	mech := s.op.mech
	fail := func(c uint) ([]byte, error) {
		if !s.slot.KeepFailedOperation {
			s.op = nil
		}
		return nil, ckr(c)
	}
	k, ok := o.key.(*rsa.PrivateKey)
	if !ok || mech.Mechanism != pkcs11.CKM_RSA_PKCS_OAEP {
		return fail(pkcs11.CKR_MECHANISM_INVALID)
	}
	hashAlg, mgf, label, ok := oaepParams(mech)
	h := hashOfMech[hashAlg]
	wantMGF := map[crypto.Hash]uint{crypto.SHA1: pkcs11.CKG_MGF1_SHA1, crypto.SHA256: pkcs11.CKG_MGF1_SHA256}[h]
	if !ok || wantMGF == 0 || mgf != wantMGF {
		return fail(pkcs11.CKR_MECHANISM_PARAM_INVALID)
	}
	pt, err := rsa.DecryptOAEP(h.New(), nil, k, cipher, label)
	if err != nil {
		return fail(pkcs11.CKR_ENCRYPTED_DATA_INVALID)
	}
	s.op = nil
	return pt, nil
}

// DeriveKey implements C_DeriveKey; the fake offers no derivation.
// GenerateKey implements C_GenerateKey by refusing the mechanism: the fake models
// key pairs only; secret keys (the PAN hash key) are tested on the real tokens.
func (f *Fake) GenerateKey(sh pkcs11.SessionHandle, _ []*pkcs11.Mechanism, _ []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	defer f.mu.Unlock()
	if err := f.enter("GenerateKey", sh); err != nil {
		return 0, err
	}
	return 0, ckr(pkcs11.CKR_MECHANISM_INVALID)
}

func (f *Fake) DeriveKey(sh pkcs11.SessionHandle, _ []*pkcs11.Mechanism, _ pkcs11.ObjectHandle, _ []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	defer f.mu.Unlock()
	if err := f.enter("DeriveKey", sh); err != nil {
		return 0, err
	}
	return 0, ckr(pkcs11.CKR_MECHANISM_INVALID)
}
