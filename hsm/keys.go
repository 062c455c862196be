package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"

	"github.com/miekg/pkcs11"
)

// Algorithm names a key type and size the project generates.
type Algorithm string

// The algorithms setpay generates keys for.
const (
	ECDSAP256 Algorithm = "ecdsa-p256"
	ECDSAP384 Algorithm = "ecdsa-p384"
	RSA2048   Algorithm = "rsa2048"
	RSA3072   Algorithm = "rsa3072"
)

// Algorithms lists the supported algorithms.
var Algorithms = []Algorithm{ECDSAP256, ECDSAP384, RSA2048, RSA3072}

// Usage is the one thing a key may do. Keys get exactly one, so a signing key can never
// be talked into decrypting and a key-exchange key never signs.
type Usage string

// Key usages.
const (
	UsageSign        Usage = "sign"        // CKA_SIGN only
	UsageKeyExchange Usage = "keyexchange" // RSA: CKA_DECRYPT+CKA_UNWRAP (key transport); EC: CKA_DERIVE
)

// KeySpec describes a key to generate.
type KeySpec struct {
	Label     string
	ID        []byte // CKA_ID; random 16 bytes when empty
	Algorithm Algorithm
	Usage     Usage
}

var (
	oidP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384 = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
)

func (a Algorithm) curve() (elliptic.Curve, asn1.ObjectIdentifier, bool) {
	switch a {
	case ECDSAP256:
		return elliptic.P256(), oidP256, true
	case ECDSAP384:
		return elliptic.P384(), oidP384, true
	}
	return nil, nil, false
}

func (a Algorithm) rsaBits() int {
	switch a {
	case RSA2048:
		return 2048
	case RSA3072:
		return 3072
	}
	return 0
}

// GenerateKey creates a key pair inside the token: private half sensitive, never
// extractable, stored on the token, and permitted only its one usage.
func (t *Token) GenerateKey(ctx context.Context, spec KeySpec) (*Key, error) {
	if spec.Label == "" {
		return nil, fmt.Errorf("hsm: key label required: %w", ErrBadRequest)
	}
	if spec.Usage != UsageSign && spec.Usage != UsageKeyExchange {
		return nil, fmt.Errorf("hsm: key usage %q unknown (sign or keyexchange): %w", spec.Usage, ErrBadRequest)
	}
	if _, err := t.FindKey(ctx, spec.Label); err == nil {
		return nil, &Error{Op: "generate key", Key: t.keyURI(spec.Label, nil), Err: ErrKeyExists}
	} else if !errors.Is(err, ErrKeyNotFound) {
		return nil, err
	}
	id, err := keyID(spec.ID)
	if err != nil {
		return nil, err
	}
	sign := spec.Usage == UsageSign
	kex := spec.Usage == UsageKeyExchange
	common := func(class uint) []*pkcs11.Attribute {
		return []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, spec.Label),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		}
	}
	pub := common(pkcs11.CKO_PUBLIC_KEY)
	priv := append(common(pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, sign),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN_RECOVER, false),
	)
	var mech *pkcs11.Mechanism
	var mechName string
	var pubUsage []*pkcs11.Attribute // usage of the public half; see generateKeyPair
	if _, oid, ok := spec.Algorithm.curve(); ok {
		params, err := asn1.Marshal(oid)
		if err != nil {
			return nil, fmt.Errorf("hsm: encode curve: %w", err)
		}
		mech, mechName = pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil), "CKM_EC_KEY_PAIR_GEN"
		pub = append(pub,
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params),
		)
		pubUsage = []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VERIFY, sign)}
		priv = append(priv,
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
			pkcs11.NewAttribute(pkcs11.CKA_DERIVE, kex),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
			pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		)
		if kex {
			if err := t.requireMechanism(pkcs11.CKM_ECDH1_DERIVE, pkcs11.CKF_DERIVE, "ECDH (CKM_ECDH1_DERIVE) for EC key exchange"); err != nil {
				return nil, err
			}
		}
	} else if bits := spec.Algorithm.rsaBits(); bits > 0 {
		mech, mechName = pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil), "CKM_RSA_PKCS_KEY_PAIR_GEN"
		pub = append(pub,
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, bits),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
		)
		pubUsage = []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_VERIFY, sign),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, kex),
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, kex),
		}
		priv = append(priv,
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, kex),
			pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, kex),
			pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		)
	} else {
		return nil, fmt.Errorf("hsm: algorithm %q unknown (one of %v): %w", spec.Algorithm, Algorithms, ErrBadRequest)
	}
	if mi, ok := t.mechs[mech.Mechanism]; !ok || mi.Flags&pkcs11.CKF_GENERATE_KEY_PAIR == 0 {
		return nil, t.requireMechanism(mech.Mechanism, pkcs11.CKF_GENERATE_KEY_PAIR, mechName)
	}
	privH, err := t.generateKeyPair(ctx, mech, pub, pubUsage, priv, allowedMechanisms(spec))
	if err != nil {
		return nil, &Error{Op: "generate " + string(spec.Algorithm) + " key", Key: t.keyURI(spec.Label, id), Err: err}
	}
	k, err := t.loadKey(ctx, privH.h, privH.epoch)
	if err == nil && k.usage != spec.Usage {
		// The token made a key that permits more (or other) than asked: never hand it out.
		err = &Error{Op: "generate " + string(spec.Algorithm) + " key", Key: k.uri,
			Err: fmt.Errorf("token %q made a key whose attributes do not restrict it to %s: %w", t.info.Label, spec.Usage, ErrUnsupported)}
	}
	if err != nil {
		_ = t.do(ctx, func(sh pkcs11.SessionHandle) error {
			for _, h := range t.handlesWithID(sh, id) {
				_ = t.mod.ctx.DestroyObject(sh, h)
			}
			return nil
		})
		return nil, err
	}
	t.logger.Info("generated key", "key", t.keyURI(spec.Label, id), "algorithm", spec.Algorithm, "usage", spec.Usage)
	return k, nil
}

// allowedMechanisms is what the token may do with the new private key. CKA_SIGN or
// CKA_DECRYPT alone would still let any caller with the token's PIN use, say, an OAEP
// key-exchange key for PKCS#1 v1.5 decryption (a padding oracle); the list closes that
// inside the token, not just in this package.
func allowedMechanisms(spec KeySpec) *pkcs11.Attribute {
	var mechs []uint
	_, _, ec := spec.Algorithm.curve()
	switch {
	case ec && spec.Usage == UsageSign:
		mechs = []uint{pkcs11.CKM_ECDSA}
	case ec:
		mechs = []uint{pkcs11.CKM_ECDH1_DERIVE}
	case spec.Usage == UsageSign:
		mechs = []uint{pkcs11.CKM_RSA_PKCS, pkcs11.CKM_RSA_PKCS_PSS}
	default:
		mechs = []uint{pkcs11.CKM_RSA_PKCS_OAEP}
	}
	var b []byte
	for _, m := range mechs {
		b = binary.NativeEndian.AppendUint64(b, uint64(m)) // CK_MECHANISM_TYPE is a CK_ULONG
	}
	return pkcs11.NewAttribute(pkcs11.CKA_ALLOWED_MECHANISMS, b)
}

// generateKeyPair creates the pair, first with the public half's usage attributes
// (CKA_VERIFY, CKA_ENCRYPT, CKA_WRAP) set to match the private half's. Some modules
// derive the public half's usage themselves and refuse a template that states it:
// tpm2-pkcs11 maps CKA_VERIFY onto the TPM's decrypt bit and answers
// CKR_GENERAL_ERROR. The usage that matters is the private key's, which the token
// enforces, so for such tokens the public usage is left to the module; the token
// remembers this so later keys skip the failing attempt.
//
// It also asks for CKA_ALLOWED_MECHANISMS on the private half. A token that refuses
// that attribute still gets its key, restricted by the usage flags alone, with a
// warning: the Go layer refuses other mechanisms, but other callers of the token could
// use them.
func (t *Token) generateKeyPair(ctx context.Context, mech *pkcs11.Mechanism, pub, pubUsage, priv []*pkcs11.Attribute, allowed *pkcs11.Attribute) (objRef, error) {
	gen := func(withPubUsage, withAllowed bool) (objRef, error) {
		pubTmpl, privTmpl := pub, priv
		if withPubUsage {
			pubTmpl = append(pub[:len(pub):len(pub)], pubUsage...)
		}
		if withAllowed {
			privTmpl = append(priv[:len(priv):len(priv)], allowed)
		}
		var privH objRef
		err := t.doE(ctx, func(sh pkcs11.SessionHandle, epoch uint64) error {
			var err error
			privH.epoch = epoch
			_, privH.h, err = t.mod.ctx.GenerateKeyPair(sh, []*pkcs11.Mechanism{mech}, pubTmpl, privTmpl)
			return err
		})
		return privH, err
	}
	wantPub, wantAllowed := !t.pubUsageRefused.Load(), !t.allowedRefused.Load()
	h, err := gen(wantPub, wantAllowed)
	if err == nil || !templateRefused(err) || (!wantPub && !wantAllowed) {
		return h, err
	}
	// Find which optional part the module refuses, dropping the list first: losing
	// it weakens less than failing.
	type try struct{ pub, allowed bool }
	var tries []try
	if wantAllowed {
		tries = append(tries, try{wantPub, false})
	}
	if wantPub {
		tries = append(tries, try{false, wantAllowed})
	}
	if wantPub && wantAllowed {
		tries = append(tries, try{false, false})
	}
	for _, tr := range tries {
		h, err2 := gen(tr.pub, tr.allowed)
		if err2 != nil {
			if templateRefused(err2) {
				continue
			}
			return objRef{}, err2
		}
		if wantPub && !tr.pub {
			t.pubUsageRefused.Store(true)
			t.logger.Info("token refuses usage attributes on public keys; leaving them to the module", "ckr", ckrName(err))
		}
		if wantAllowed && !tr.allowed {
			t.allowedRefused.Store(true)
			t.logger.Warn("token refuses CKA_ALLOWED_MECHANISMS; keys are restricted by their usage flags only", "ckr", ckrName(err))
		}
		return h, nil
	}
	return objRef{}, err // the first answer is the one that names the real problem
}

// templateRefused reports answers a module gives when it will not take a template as
// stated, as opposed to lost sessions or exhausted resources.
func templateRefused(err error) bool {
	c, ok := CKR(err)
	if !ok {
		return false
	}
	switch c {
	case pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_TEMPLATE_INCONSISTENT, pkcs11.CKR_ATTRIBUTE_VALUE_INVALID,
		pkcs11.CKR_ATTRIBUTE_TYPE_INVALID, pkcs11.CKR_ATTRIBUTE_READ_ONLY:
		return true
	}
	return false
}

// handlesWithID finds every object with this CKA_ID on an open session, for cleaning
// up after a refused key; errors just leave nothing to clean.
func (t *Token) handlesWithID(sh pkcs11.SessionHandle, id []byte) []pkcs11.ObjectHandle {
	if err := t.mod.ctx.FindObjectsInit(sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, id)}); err != nil {
		return nil
	}
	defer func() { _ = t.mod.ctx.FindObjectsFinal(sh) }()
	hs, _, err := t.mod.ctx.FindObjects(sh, 16)
	if err != nil {
		return nil
	}
	return hs
}

// FindKey returns the private key with this label (CKA_LABEL).
func (t *Token) FindKey(ctx context.Context, label string) (*Key, error) {
	return t.findKey(ctx, label, nil)
}

// KeyByURI returns the private key a pkcs11: URI names on this token. The URI's token,
// when given, must be this one.
func (t *Token) KeyByURI(ctx context.Context, uri URI) (*Key, error) {
	if err := t.checkKeyURI(uri, "private", "a private key"); err != nil {
		return nil, err
	}
	return t.findKey(ctx, uri.Object, uri.ID)
}

// checkKeyURI checks that uri can name a key of type typ on this token: the token,
// when given, is this one; the type, when given, is typ; an object or id is named.
func (t *Token) checkKeyURI(uri URI, typ, what string) error {
	if uri.Token != "" && uri.Token != t.info.Label {
		return fmt.Errorf("hsm: URI names token %q, not %q: %w", uri.Token, t.info.Label, ErrBadRequest)
	}
	if uri.Type != "" && uri.Type != typ {
		return fmt.Errorf("hsm: URI type=%s does not name %s: %w", uri.Type, what, ErrBadRequest)
	}
	if uri.Object == "" && len(uri.ID) == 0 {
		return fmt.Errorf("hsm: URI names no object or id: %w", ErrBadRequest)
	}
	return nil
}

func (t *Token) findKey(ctx context.Context, label string, id []byte) (*Key, error) {
	h, epoch, err := t.findOne(ctx, pkcs11.CKO_PRIVATE_KEY, "find key", URI{Token: t.info.Label, Object: label, ID: id, Type: "private"})
	if err != nil {
		return nil, err
	}
	return t.loadKey(ctx, h, epoch)
}

// findOne finds the one object of class with the label and id of uri (either may be
// empty); none and several are errors naming uri.
func (t *Token) findOne(ctx context.Context, class uint, op string, uri URI) (pkcs11.ObjectHandle, uint64, error) {
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class)}
	if uri.Object != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, uri.Object))
	}
	if len(uri.ID) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, uri.ID))
	}
	handles, epoch, err := t.findE(ctx, tmpl, 2)
	switch {
	case err != nil:
		return 0, 0, &Error{Op: op, Key: uri.String(), Err: err}
	case len(handles) == 0:
		if !t.present() {
			// Not a missing key: the token's objects are invisible because it went away.
			t.markLost(nil)
			return 0, 0, &Error{Op: op, Key: uri.String(), Err: fmt.Errorf("%w: the token is not in its slot", ErrTokenUnavailable)}
		}
		return 0, 0, &Error{Op: op, Key: uri.String(), Err: ErrKeyNotFound}
	case len(handles) > 1:
		return 0, 0, &Error{Op: op, Key: uri.String(), Err: fmt.Errorf("several keys match; name it by id: %w", ErrBadRequest)}
	}
	return handles[0], epoch, nil
}

func (t *Token) find(ctx context.Context, tmpl []*pkcs11.Attribute, max int) ([]pkcs11.ObjectHandle, uint64, error) {
	return t.findE(ctx, tmpl, max)
}

// attrs reads attributes one call per attribute, so one the object lacks
// (CKR_ATTRIBUTE_TYPE_INVALID) or hides (CKR_ATTRIBUTE_SENSITIVE) leaves the rest readable.
// h must be from epoch: a handle from before a re-initialisation may name another object.
func (t *Token) attrs(ctx context.Context, h pkcs11.ObjectHandle, epoch uint64, types ...uint) (map[uint][]byte, error) {
	out := make(map[uint][]byte, len(types))
	err := t.doE(ctx, func(sh pkcs11.SessionHandle, now uint64) error {
		if now != epoch {
			return errStaleEpoch
		}
		for _, typ := range types {
			a, err := t.mod.ctx.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(typ, nil)})
			if err != nil {
				if c, ok := CKR(err); ok && (c == pkcs11.CKR_ATTRIBUTE_TYPE_INVALID || c == pkcs11.CKR_ATTRIBUTE_SENSITIVE) {
					continue
				}
				return err
			}
			if len(a) == 1 {
				out[typ] = a[0].Value
			}
		}
		return nil
	})
	return out, err
}

func boolAttr(v []byte) bool { return len(v) > 0 && v[0] != 0 }

// ulongAttr decodes a CK_ULONG attribute, which the module writes in host byte order.
func ulongAttr(v []byte) uint {
	switch len(v) {
	case 8:
		return uint(binary.NativeEndian.Uint64(v))
	case 4:
		return uint(binary.NativeEndian.Uint32(v))
	}
	return ^uint(0)
}

// loadKey reads a private key's identity, usage and public half, and caches its handle.
func (t *Token) loadKey(ctx context.Context, h pkcs11.ObjectHandle, epoch uint64) (*Key, error) {
	a, err := t.attrs(ctx, h, epoch, pkcs11.CKA_LABEL, pkcs11.CKA_ID, pkcs11.CKA_KEY_TYPE,
		pkcs11.CKA_SIGN, pkcs11.CKA_DECRYPT, pkcs11.CKA_UNWRAP, pkcs11.CKA_DERIVE,
		pkcs11.CKA_MODULUS, pkcs11.CKA_PUBLIC_EXPONENT, pkcs11.CKA_EC_PARAMS)
	if err != nil {
		return nil, &Error{Op: "read key attributes", Token: t.info.Label, Err: err}
	}
	k := &Key{tok: t, label: string(a[pkcs11.CKA_LABEL]), id: a[pkcs11.CKA_ID]}
	k.handle.Store(&objRef{h: h, epoch: epoch})
	k.uri = t.keyURI(k.label, k.id)
	switch ulongAttr(a[pkcs11.CKA_KEY_TYPE]) {
	case pkcs11.CKK_RSA:
		n := new(big.Int).SetBytes(a[pkcs11.CKA_MODULUS])
		e := new(big.Int).SetBytes(a[pkcs11.CKA_PUBLIC_EXPONENT])
		if n.Sign() == 0 || !e.IsInt64() {
			return nil, &Error{Op: "read RSA public key", Key: k.uri, Err: ErrUnsupported}
		}
		k.pub = &rsa.PublicKey{N: n, E: int(e.Int64())}
		k.alg = RSA2048
		if n.BitLen() > 2048 {
			k.alg = RSA3072
		}
	case pkcs11.CKK_EC:
		pub, alg, err := t.ecPublic(ctx, k, epoch, a[pkcs11.CKA_EC_PARAMS])
		if err != nil {
			return nil, err
		}
		k.pub, k.alg = pub, alg
	default:
		return nil, &Error{Op: "load key", Key: k.uri, Err: fmt.Errorf("key type 0x%x: %w", ulongAttr(a[pkcs11.CKA_KEY_TYPE]), ErrUnsupported)}
	}
	switch {
	case boolAttr(a[pkcs11.CKA_SIGN]) && !boolAttr(a[pkcs11.CKA_DECRYPT]) && !boolAttr(a[pkcs11.CKA_DERIVE]):
		k.usage = UsageSign
	case !boolAttr(a[pkcs11.CKA_SIGN]) && (boolAttr(a[pkcs11.CKA_DECRYPT]) || boolAttr(a[pkcs11.CKA_DERIVE])):
		k.usage = UsageKeyExchange
	default:
		// A key made elsewhere with several usages still works, but only for what its
		// attributes permit; the token enforces that, not us.
		k.usage = ""
	}
	return k, nil
}

// ecPublic reads the EC point from the matching public key object (same CKA_ID), since
// PKCS#11 does not require a private EC key to expose its point.
func (t *Token) ecPublic(ctx context.Context, k *Key, epoch uint64, params []byte) (*ecdsa.PublicKey, Algorithm, error) {
	var oid asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(params, &oid); err != nil {
		return nil, "", &Error{Op: "read EC parameters", Key: k.uri, Err: fmt.Errorf("%w: %w", ErrUnsupported, err)}
	}
	var curve elliptic.Curve
	var alg Algorithm
	switch {
	case oid.Equal(oidP256):
		curve, alg = elliptic.P256(), ECDSAP256
	case oid.Equal(oidP384):
		curve, alg = elliptic.P384(), ECDSAP384
	default:
		return nil, "", &Error{Op: "read EC parameters", Key: k.uri, Err: fmt.Errorf("curve %v: %w", oid, ErrUnsupported)}
	}
	hs, pubEpoch, err := t.find(ctx, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_ID, k.id),
	}, 1)
	if err == nil && pubEpoch != epoch {
		err = errStaleEpoch
	}
	if err != nil || len(hs) == 0 {
		return nil, "", &Error{Op: "find EC public key", Key: k.uri, Err: errors.Join(ErrKeyNotFound, err)}
	}
	a, err := t.attrs(ctx, hs[0], pubEpoch, pkcs11.CKA_EC_POINT)
	if err != nil {
		return nil, "", &Error{Op: "read EC point", Key: k.uri, Err: err}
	}
	point := a[pkcs11.CKA_EC_POINT]
	var inner []byte // the point is DER OCTET STRING-wrapped per PKCS#11 v2.40; tolerate raw
	if rest, err := asn1.Unmarshal(point, &inner); err == nil && len(rest) == 0 {
		point = inner
	}
	x, y := elliptic.Unmarshal(curve, point) //nolint:staticcheck // validates the point is on the curve
	if x == nil {
		return nil, "", &Error{Op: "read EC point", Key: k.uri, Err: fmt.Errorf("point not on curve: %w", ErrUnsupported)}
	}
	return &ecdsa.PublicKey{Curve: curve, X: x, Y: y}, alg, nil
}

func (t *Token) keyURI(label string, id []byte) string {
	return URI{Token: t.info.Label, Object: label, ID: id, Type: "private"}.String()
}

// ObjectInfo is what Objects reports about each object on the token.
type ObjectInfo struct {
	Handle  uint
	Class   string // private, public, secret-key, cert, data
	KeyType string // RSA, EC, ...
	Label   string
	ID      []byte
	URI     string
	Flags   map[string]bool // CKA_TOKEN, CKA_SENSITIVE, CKA_SIGN, ...
}

var flagAttrs = []struct {
	typ  uint
	name string
}{
	{pkcs11.CKA_TOKEN, "CKA_TOKEN"}, {pkcs11.CKA_PRIVATE, "CKA_PRIVATE"},
	{pkcs11.CKA_SENSITIVE, "CKA_SENSITIVE"}, {pkcs11.CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE"},
	{pkcs11.CKA_EXTRACTABLE, "CKA_EXTRACTABLE"}, {pkcs11.CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE"},
	{pkcs11.CKA_LOCAL, "CKA_LOCAL"},
	{pkcs11.CKA_SIGN, "CKA_SIGN"}, {pkcs11.CKA_VERIFY, "CKA_VERIFY"},
	{pkcs11.CKA_DECRYPT, "CKA_DECRYPT"}, {pkcs11.CKA_ENCRYPT, "CKA_ENCRYPT"},
	{pkcs11.CKA_UNWRAP, "CKA_UNWRAP"}, {pkcs11.CKA_WRAP, "CKA_WRAP"},
	{pkcs11.CKA_DERIVE, "CKA_DERIVE"}, {pkcs11.CKA_SIGN_RECOVER, "CKA_SIGN_RECOVER"},
}

var classNames = map[uint]string{
	pkcs11.CKO_PRIVATE_KEY: "private", pkcs11.CKO_PUBLIC_KEY: "public", pkcs11.CKO_SECRET_KEY: "secret-key",
	pkcs11.CKO_CERTIFICATE: "cert", pkcs11.CKO_DATA: "data",
}

var keyTypeNames = map[uint]string{pkcs11.CKK_RSA: "RSA", pkcs11.CKK_EC: "EC", pkcs11.CKK_GENERIC_SECRET: "GENERIC_SECRET", pkcs11.CKK_AES: "AES"}

// Objects lists every object visible on the token with its access flags.
func (t *Token) Objects(ctx context.Context) ([]ObjectInfo, error) {
	hs, epoch, err := t.find(ctx, nil, 0)
	if err != nil {
		return nil, &Error{Op: "list objects", Token: t.info.Label, Err: err}
	}
	types := []uint{pkcs11.CKA_CLASS, pkcs11.CKA_KEY_TYPE, pkcs11.CKA_LABEL, pkcs11.CKA_ID}
	for _, f := range flagAttrs {
		types = append(types, f.typ)
	}
	out := make([]ObjectInfo, 0, len(hs))
	for _, h := range hs {
		a, err := t.attrs(ctx, h, epoch, types...)
		if err != nil {
			return nil, &Error{Op: "read object attributes", Token: t.info.Label, Err: err}
		}
		oi := ObjectInfo{Handle: uint(h), Class: classNames[ulongAttr(a[pkcs11.CKA_CLASS])], Label: string(a[pkcs11.CKA_LABEL]), ID: a[pkcs11.CKA_ID], Flags: map[string]bool{}}
		if kt, ok := a[pkcs11.CKA_KEY_TYPE]; ok {
			oi.KeyType = keyTypeNames[ulongAttr(kt)]
		}
		for _, f := range flagAttrs {
			if v, ok := a[f.typ]; ok {
				oi.Flags[f.name] = boolAttr(v)
			}
		}
		oi.URI = URI{Token: t.info.Label, Object: oi.Label, ID: oi.ID, Type: oi.Class}.String()
		out = append(out, oi)
	}
	return out, nil
}

// objectsOf returns every object sharing the key's CKA_ID (its public half, certificate).
func (t *Token) objectsOf(ctx context.Context, k *Key) ([]pkcs11.ObjectHandle, uint64, error) {
	return t.find(ctx, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, k.id)}, 0)
}

// RenameKey sets a new label on the key and the objects that belong to it.
func (t *Token) RenameKey(ctx context.Context, k *Key, label string) error {
	if label == "" {
		return fmt.Errorf("hsm: new label required: %w", ErrBadRequest)
	}
	if _, err := t.FindKey(ctx, label); err == nil {
		return &Error{Op: "rename key", Key: t.keyURI(label, nil), Err: ErrKeyExists}
	}
	hs, epoch, err := t.objectsOf(ctx, k)
	if err != nil {
		return &Error{Op: "rename key", Key: k.uri, Err: err}
	}
	err = t.doE(ctx, func(sh pkcs11.SessionHandle, now uint64) error {
		if now != epoch {
			return errStaleEpoch
		}
		for _, h := range hs {
			if err := t.mod.ctx.SetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return &Error{Op: "rename key", Key: k.uri, Err: err}
	}
	k.label = label
	k.uri = t.keyURI(label, k.id)
	return nil
}

// DeleteKey destroys the key pair and any object sharing its CKA_ID.
func (t *Token) DeleteKey(ctx context.Context, k *Key) error {
	hs, epoch, err := t.objectsOf(ctx, k)
	if err != nil {
		return &Error{Op: "delete key", Key: k.uri, Err: err}
	}
	err = t.doE(ctx, func(sh pkcs11.SessionHandle, now uint64) error {
		if now != epoch {
			return errStaleEpoch
		}
		for _, h := range hs {
			if err := t.mod.ctx.DestroyObject(sh, h); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return &Error{Op: "delete key", Key: k.uri, Err: err}
	}
	t.logger.Info("deleted key", "key", k.uri)
	return nil
}

// Keys lists the private keys on the token.
func (t *Token) Keys(ctx context.Context) ([]*Key, error) {
	hs, epoch, err := t.find(ctx, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY)}, 0)
	if err != nil {
		return nil, &Error{Op: "list keys", Token: t.info.Label, Err: err}
	}
	keys := make([]*Key, 0, len(hs))
	for _, h := range hs {
		k, err := t.loadKey(ctx, h, epoch)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

var _ crypto.Signer = (*Key)(nil)

// keyID is the CKA_ID a new key gets: the caller's, or 16 random bytes.
func keyID(id []byte) ([]byte, error) {
	if len(id) > 0 {
		return id, nil
	}
	id = make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("hsm: key id: %w", err)
	}
	return id, nil
}
