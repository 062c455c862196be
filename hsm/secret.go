package hsm

// Secret (symmetric) keys: a MAC key generated inside the token, sensitive and never
// extractable, that may only compute HMAC-SHA256. The gateway keys its stored PAN
// hashes with one, so that nothing on disk, and no copy of the store, lets anyone
// confirm a guessed PAN without asking the token.
//
// Every PKCS#11 call for secret keys is in this file.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// HMACSHA256 is a 256-bit generic secret key used with CKM_SHA256_HMAC.
const HMACSHA256 Algorithm = "hmac-sha256"

// UsageMAC is a secret key's one usage: compute a MAC (CKA_SIGN with CKM_SHA256_HMAC
// only; no CKA_VERIFY, no encryption, wrapping or derivation).
const UsageMAC Usage = "mac"

// hmacKeyBytes is the secret's size: HMAC-SHA256's block-size-free optimum, the hash
// output length (RFC 2104 section 3).
const hmacKeyBytes = 32

// SecretKey is a MAC key inside a token. Its value can never be read.
type SecretKey struct {
	tok    *Token
	label  string
	id     []byte
	uri    string
	handle atomic.Pointer[objRef]
}

// Label is the key's CKA_LABEL.
func (k *SecretKey) Label() string { return k.label }

// ID is the key's CKA_ID.
func (k *SecretKey) ID() []byte { return append([]byte(nil), k.id...) }

// URI is the RFC 7512 URI naming the key (type=secret-key; no module path, no PIN).
func (k *SecretKey) URI() string { return k.uri }

// Token is where the key lives.
func (k *SecretKey) Token() *Token { return k.tok }

var mechHMACSHA256 = pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)

func (t *Token) secretURI(label string, id []byte) string {
	return URI{Token: t.info.Label, Object: label, ID: id, Type: "secret-key"}.String()
}

// GenerateSecretKey creates a MAC key inside the token (spec.Algorithm HMACSHA256,
// spec.Usage UsageMAC or empty): CKK_GENERIC_SECRET of 32 bytes from
// CKM_GENERIC_SECRET_KEY_GEN, on the token, private, sensitive, never extractable,
// CKA_SIGN only, and CKA_ALLOWED_MECHANISMS = {CKM_SHA256_HMAC} where the module
// takes it. A token without the mechanisms answers ErrUnsupported naming them.
func (t *Token) GenerateSecretKey(ctx context.Context, spec KeySpec) (*SecretKey, error) {
	if spec.Label == "" {
		return nil, fmt.Errorf("hsm: key label required: %w", ErrBadRequest)
	}
	if spec.Algorithm != HMACSHA256 {
		return nil, fmt.Errorf("hsm: secret key algorithm %q unknown (%s): %w", spec.Algorithm, HMACSHA256, ErrBadRequest)
	}
	if spec.Usage != "" && spec.Usage != UsageMAC {
		return nil, fmt.Errorf("hsm: secret key usage %q unknown (%s): %w", spec.Usage, UsageMAC, ErrBadRequest)
	}
	if err := t.requireMechanism(pkcs11.CKM_GENERIC_SECRET_KEY_GEN, pkcs11.CKF_GENERATE, "secret key generation (CKM_GENERIC_SECRET_KEY_GEN)"); err != nil {
		return nil, err
	}
	if err := t.requireMechanism(pkcs11.CKM_SHA256_HMAC, pkcs11.CKF_SIGN, "HMAC-SHA256 (CKM_SHA256_HMAC)"); err != nil {
		return nil, err
	}
	if _, err := t.FindSecretKey(ctx, spec.Label); err == nil {
		return nil, &Error{Op: "generate secret key", Key: t.secretURI(spec.Label, nil), Err: ErrKeyExists}
	} else if !errors.Is(err, ErrKeyNotFound) {
		return nil, err
	}
	id, err := keyID(spec.ID)
	if err != nil {
		return nil, err
	}
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, hmacKeyBytes),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, spec.Label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_MODIFIABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
	}
	allowed := pkcs11.NewAttribute(pkcs11.CKA_ALLOWED_MECHANISMS,
		binary.NativeEndian.AppendUint64(nil, uint64(pkcs11.CKM_SHA256_HMAC))) // CK_MECHANISM_TYPE is a CK_ULONG
	gen := func(withAllowed bool) (objRef, error) {
		tt := tmpl
		if withAllowed {
			tt = append(tmpl[:len(tmpl):len(tmpl)], allowed)
		}
		var h objRef
		err := t.doE(ctx, func(sh pkcs11.SessionHandle, epoch uint64) error {
			var err error
			h.epoch = epoch
			h.h, err = t.mod.ctx.GenerateKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_GENERIC_SECRET_KEY_GEN, nil)}, tt)
			return err
		})
		return h, err
	}
	uri := t.secretURI(spec.Label, id)
	wantAllowed := !t.allowedRefused.Load()
	h, err := gen(wantAllowed)
	if err != nil && wantAllowed && templateRefused(err) {
		if h2, err2 := gen(false); err2 == nil {
			h, err = h2, nil
			t.allowedRefused.Store(true)
			t.logger.Warn("token refuses CKA_ALLOWED_MECHANISMS; keys are restricted by their usage flags only", "ckr", ckrName(err))
		}
	}
	if err != nil {
		return nil, &Error{Op: "generate " + string(HMACSHA256) + " key", Key: uri, Err: err}
	}
	k, err := t.loadSecretKey(ctx, h)
	if err != nil {
		t.destroySecret(ctx, h)
		return nil, err
	}
	t.logger.Info("generated key", "key", k.uri, "algorithm", HMACSHA256, "usage", UsageMAC)
	return k, nil
}

func (t *Token) destroySecret(ctx context.Context, h objRef) {
	_ = t.doE(ctx, func(sh pkcs11.SessionHandle, epoch uint64) error {
		if epoch != h.epoch {
			return errStaleEpoch
		}
		return t.mod.ctx.DestroyObject(sh, h.h)
	})
}

// loadSecretKey checks that the object is a MAC key that stays in the token and may
// only sign, and caches its handle. A key made elsewhere that is extractable, not
// sensitive or permitted more than signing is refused: it would not protect what it
// keys.
func (t *Token) loadSecretKey(ctx context.Context, h objRef) (*SecretKey, error) {
	a, err := t.attrs(ctx, h.h, h.epoch, pkcs11.CKA_LABEL, pkcs11.CKA_ID, pkcs11.CKA_KEY_TYPE, pkcs11.CKA_TOKEN,
		pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_SIGN, pkcs11.CKA_ENCRYPT,
		pkcs11.CKA_DECRYPT, pkcs11.CKA_WRAP, pkcs11.CKA_UNWRAP, pkcs11.CKA_DERIVE)
	if err != nil {
		return nil, &Error{Op: "read secret key attributes", Token: t.info.Label, Err: err}
	}
	k := &SecretKey{tok: t, label: string(a[pkcs11.CKA_LABEL]), id: a[pkcs11.CKA_ID]}
	k.handle.Store(&h)
	k.uri = t.secretURI(k.label, k.id)
	if kt := ulongAttr(a[pkcs11.CKA_KEY_TYPE]); kt != pkcs11.CKK_GENERIC_SECRET && kt != pkcs11.CKK_SHA256_HMAC {
		return nil, &Error{Op: "load secret key", Key: k.uri, Err: fmt.Errorf("key type 0x%x is not an HMAC key: %w", kt, ErrUnsupported)}
	}
	switch {
	case !boolAttr(a[pkcs11.CKA_TOKEN]):
		err = errors.New("not a token object")
	case !boolAttr(a[pkcs11.CKA_SENSITIVE]):
		err = errors.New("not sensitive")
	case boolAttr(a[pkcs11.CKA_EXTRACTABLE]):
		err = errors.New("extractable")
	case !boolAttr(a[pkcs11.CKA_SIGN]):
		err = errors.New("not permitted to sign (MAC)")
	case boolAttr(a[pkcs11.CKA_ENCRYPT]) || boolAttr(a[pkcs11.CKA_DECRYPT]) || boolAttr(a[pkcs11.CKA_WRAP]) ||
		boolAttr(a[pkcs11.CKA_UNWRAP]) || boolAttr(a[pkcs11.CKA_DERIVE]):
		err = errors.New("permitted more than a MAC")
	}
	if err != nil {
		return nil, &Error{Op: "load secret key", Key: k.uri, Err: fmt.Errorf("key is %w: %w", err, ErrWrongUsage)}
	}
	return k, nil
}

// FindSecretKey returns the secret key with this label (CKA_LABEL).
func (t *Token) FindSecretKey(ctx context.Context, label string) (*SecretKey, error) {
	if label == "" {
		return nil, fmt.Errorf("hsm: key label required: %w", ErrBadRequest)
	}
	return t.findSecretKey(ctx, label, nil)
}

// SecretKeyByURI returns the secret key a pkcs11: URI names on this token (type, when
// given, must be secret-key; the token, when given, this one).
func (t *Token) SecretKeyByURI(ctx context.Context, uri URI) (*SecretKey, error) {
	if err := t.checkKeyURI(uri, "secret-key", "a secret key"); err != nil {
		return nil, err
	}
	return t.findSecretKey(ctx, uri.Object, uri.ID)
}

func (t *Token) findSecretKey(ctx context.Context, label string, id []byte) (*SecretKey, error) {
	h, epoch, err := t.findOne(ctx, pkcs11.CKO_SECRET_KEY, "find secret key", URI{Token: t.info.Label, Object: label, ID: id, Type: "secret-key"})
	if err != nil {
		return nil, err
	}
	return t.loadSecretKey(ctx, objRef{h: h, epoch: epoch})
}

// DeleteSecretKey destroys the key. Every MAC made with it can then never be
// recomputed, which is how a PAN hash key is retired.
func (t *Token) DeleteSecretKey(ctx context.Context, k *SecretKey) error {
	err := k.withHandle(ctx, func(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		return t.mod.ctx.DestroyObject(sh, h)
	})
	if err != nil {
		return &Error{Op: "delete secret key", Key: k.uri, Err: err}
	}
	t.logger.Info("deleted key", "key", k.uri)
	return nil
}

// withHandle runs op with the cached handle, finding the key again by CKA_ID if the
// token says the handle went stale or the module was re-initialised.
func (k *SecretKey) withHandle(ctx context.Context, op func(pkcs11.SessionHandle, pkcs11.ObjectHandle) error) error {
	return k.tok.withObject(ctx, &k.handle, objectTemplate(pkcs11.CKO_SECRET_KEY, k.id, k.label), op)
}

// MAC returns HMAC-SHA256(key, data), computed inside the token (CKM_SHA256_HMAC).
// The first call per token checks that the module really does it (a 32-byte answer);
// a module that lists the mechanism but refuses it answers ErrUnsupported.
func (k *SecretKey) MAC(ctx context.Context, data []byte) (mac []byte, err error) {
	start := time.Now()
	defer func() {
		k.tok.stats.Operations.Add(1)
		if err != nil {
			k.tok.stats.Errors.Add(1)
		}
		d := time.Since(start).Seconds()
		for _, o := range k.tok.observers {
			o.ObserveOp(k.tok.info.Label, k.label, "mac", "CKM_SHA256_HMAC", d, err)
		}
	}()
	if err := k.tok.requireMechanism(pkcs11.CKM_SHA256_HMAC, pkcs11.CKF_SIGN, "HMAC-SHA256 (CKM_SHA256_HMAC)"); err != nil {
		return nil, &Error{Op: "mac", Key: k.uri, Err: err}
	}
	if err := k.tok.probe("hmac-sha256", func() error {
		// Only an answer about the module is remembered; a refusal of this key's
		// usage is this key's, and comes again from the real call.
		if _, err := k.mac(ctx, []byte("setpay HMAC probe")); errors.Is(err, ErrUnsupported) {
			return err
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return k.mac(ctx, data)
}

func (k *SecretKey) mac(ctx context.Context, data []byte) ([]byte, error) {
	var out []byte
	err := k.withHandle(ctx, func(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		if err := k.tok.mod.ctx.SignInit(sh, []*pkcs11.Mechanism{mechHMACSHA256}, h); err != nil {
			return err
		}
		var err error
		out, err = k.tok.mod.ctx.Sign(sh, data)
		return err
	})
	if err != nil {
		if c, ok := CKR(err); ok && (c == pkcs11.CKR_MECHANISM_INVALID || c == pkcs11.CKR_MECHANISM_PARAM_INVALID) {
			err = fmt.Errorf("token %q (%s %s) refuses CKM_SHA256_HMAC with this key: %w: %w",
				k.tok.info.Label, k.tok.info.Manufacturer, k.tok.info.Model, ErrUnsupported, err)
		}
		return nil, &Error{Op: "mac with CKM_SHA256_HMAC", Key: k.uri, Err: usageErr(err)}
	}
	if len(out) != 32 {
		return nil, &Error{Op: "mac with CKM_SHA256_HMAC", Key: k.uri, Err: fmt.Errorf("MAC of %d bytes, want 32: %w", len(out), ErrUnsupported)}
	}
	return out, nil
}
