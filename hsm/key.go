package hsm

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// Key is a private key inside a token. It implements crypto.Signer and
// crypto.Decrypter; the token refuses whatever the key's one usage does not permit.
type Key struct {
	tok    *Token
	label  string
	id     []byte
	uri    string
	alg    Algorithm
	usage  Usage
	pub    crypto.PublicKey
	handle atomic.Pointer[objRef] // cached object handle; refreshed if the token invalidates it
}

// Public returns the public half.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// Label is the key's CKA_LABEL.
func (k *Key) Label() string { return k.label }

// ID is the key's CKA_ID.
func (k *Key) ID() []byte { return append([]byte(nil), k.id...) }

// URI is the RFC 7512 URI naming the key (no module path, no PIN).
func (k *Key) URI() string { return k.uri }

// Algorithm is the key's type and size.
func (k *Key) Algorithm() Algorithm { return k.alg }

// Usage is the key's one permitted usage ("" for keys made elsewhere with several).
func (k *Key) Usage() Usage { return k.usage }

// Token is where the key lives.
func (k *Key) Token() *Token { return k.tok }

// withHandle runs op with the cached handle; if the token says the handle went stale
// (a token re-inserted, the module re-initialised) it finds the key again by CKA_ID.
func (k *Key) withHandle(ctx context.Context, op func(pkcs11.SessionHandle, pkcs11.ObjectHandle) error) error {
	return k.tok.withObject(ctx, &k.handle, objectTemplate(pkcs11.CKO_PRIVATE_KEY, k.id, k.label), op)
}

func (k *Key) fail(op string, err error) error {
	k.tok.stats.Errors.Add(1)
	return &Error{Op: op, Key: k.uri, Err: err}
}

func (k *Key) observe(op, mech string, start time.Time, err error) {
	k.tok.stats.Operations.Add(1)
	if len(k.tok.observers) == 0 {
		return
	}
	d := time.Since(start).Seconds()
	for _, o := range k.tok.observers {
		o.ObserveOp(k.tok.info.Label, k.label, op, mech, d, err)
	}
}

// Sign implements crypto.Signer: ECDSA (ASN.1 DER signature), RSA PKCS#1 v1.5, and
// RSA-PSS when opts is *rsa.PSSOptions. digest must already be hashed with opts.HashFunc().
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.SignContext(context.Background(), digest, opts)
}

// SignContext is Sign with a context that bounds the wait for a free session.
func (k *Key) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) (sig []byte, err error) {
	start := time.Now()
	mechName := ""
	defer func() { k.observe("sign", mechName, start, err) }()
	if opts == nil {
		return nil, k.fail("sign", fmt.Errorf("no hash given: %w", ErrBadRequest))
	}
	if k.usage == UsageKeyExchange {
		return nil, k.fail("sign", fmt.Errorf("key-exchange key may not sign: %w", ErrWrongUsage))
	}
	hash := opts.HashFunc()
	if hash == 0 || !hash.Available() || len(digest) != hash.Size() {
		return nil, k.fail("sign", fmt.Errorf("digest of %d bytes does not fit hash %v: %w", len(digest), hash, ErrBadRequest))
	}
	var mech *pkcs11.Mechanism
	input := digest
	switch pub := k.pub.(type) {
	case *ecdsa.PublicKey:
		mech, mechName = mechECDSA, "CKM_ECDSA"
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			hm, mgf, err := hashMechs(hash)
			if err != nil {
				return nil, k.fail("sign", err)
			}
			salt := pss.SaltLength
			switch salt {
			case rsa.PSSSaltLengthAuto, rsa.PSSSaltLengthEqualsHash:
				// Tokens commonly cap the salt at the hash length; it verifies under Auto too.
				salt = hash.Size()
			}
			if salt < 0 || salt > (pub.N.BitLen()-1+7)/8-hash.Size()-2 {
				return nil, k.fail("sign", fmt.Errorf("PSS salt length %d: %w", pss.SaltLength, ErrBadRequest))
			}
			mech, mechName = pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_PSS, pkcs11.NewPSSParams(hm, mgf, uint(salt))), "CKM_RSA_PKCS_PSS"
		} else {
			prefix, ok := digestInfoPrefix[hash]
			if !ok {
				return nil, k.fail("sign", fmt.Errorf("hash %v not offered for PKCS#1 v1.5: %w", hash, ErrBadRequest))
			}
			input = append(append(make([]byte, 0, len(prefix)+len(digest)), prefix...), digest...)
			mech, mechName = mechRSAPKCS, "CKM_RSA_PKCS"
		}
	default:
		return nil, k.fail("sign", fmt.Errorf("key type %T: %w", k.pub, ErrUnsupported))
	}
	if err := k.tok.requireMechanism(mech.Mechanism, pkcs11.CKF_SIGN, mechName+" signing"); err != nil {
		return nil, k.fail("sign", err)
	}
	var raw []byte
	err = k.withHandle(ctx, func(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		if err := k.tok.mod.ctx.SignInit(sh, []*pkcs11.Mechanism{mech}, h); err != nil {
			return err
		}
		var err error
		raw, err = k.tok.mod.ctx.Sign(sh, input)
		return err
	})
	if err != nil {
		return nil, k.fail("sign with "+mechName, k.signErr(mechName, err))
	}
	if _, ok := k.pub.(*ecdsa.PublicKey); ok {
		return ecdsaDER(raw)
	}
	return raw, nil
}

// Parameterless mechanisms are built once: the token only reads them.
var (
	mechECDSA   = pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)
	mechRSAPKCS = pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)
)

// ecdsaDER converts PKCS#11's r||s into the ASN.1 SEQUENCE{INTEGER r, INTEGER s} that
// crypto.Signer callers expect. It is written out by hand because it sits on the
// signing hot path, where encoding/asn1 with big.Int costs several allocations.
func ecdsaDER(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 || len(raw) > 2*66 {
		return nil, fmt.Errorf("hsm: ECDSA signature of %d bytes from token: %w", len(raw), ErrUnsupported)
	}
	n := len(raw) / 2
	r, s := derInt(raw[:n]), derInt(raw[n:])
	body := 2 + len(r) + 2 + len(s)
	out := make([]byte, 0, 3+body)
	out = append(out, 0x30)
	if body >= 0x80 {
		out = append(out, 0x81)
	}
	out = append(out, byte(body), 0x02, byte(len(r)))
	out = append(out, r...)
	out = append(out, 0x02, byte(len(s)))
	return append(out, s...), nil
}

// derInt returns the minimal two's-complement content octets of a non-negative integer.
func derInt(b []byte) []byte {
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	if len(b) > 0 && b[0]&0x80 != 0 {
		return append([]byte{0}, b...)
	}
	return b
}

// Decrypt implements crypto.Decrypter for RSA-OAEP (opts must be *rsa.OAEPOptions).
// PKCS#1 v1.5 decryption is refused: it invites padding-oracle attacks and nothing in
// setpay needs it.
func (k *Key) Decrypt(_ io.Reader, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	return k.DecryptContext(context.Background(), ciphertext, opts)
}

// DecryptContext is Decrypt with a context that bounds the wait for a free session.
func (k *Key) DecryptContext(ctx context.Context, ciphertext []byte, opts crypto.DecrypterOpts) (pt []byte, err error) {
	start := time.Now()
	defer func() { k.observe("decrypt", "CKM_RSA_PKCS_OAEP", start, err) }()
	if k.usage == UsageSign {
		return nil, k.fail("decrypt", fmt.Errorf("signing key may not decrypt: %w", ErrWrongUsage))
	}
	pub, ok := k.pub.(*rsa.PublicKey)
	if !ok {
		return nil, k.fail("decrypt", fmt.Errorf("only RSA keys decrypt; EC keys agree keys with ECDH: %w", ErrWrongUsage))
	}
	oaep, ok := opts.(*rsa.OAEPOptions)
	if !ok || oaep == nil {
		return nil, k.fail("decrypt", fmt.Errorf("only RSA-OAEP decryption is offered (got %T): %w", opts, ErrUnsupported))
	}
	if len(ciphertext) != pub.Size() {
		return nil, k.fail("decrypt", fmt.Errorf("ciphertext of %d bytes for a %d-byte modulus: %w", len(ciphertext), pub.Size(), ErrBadRequest))
	}
	mech, err := k.oaepMechanism(oaep)
	if err != nil {
		return nil, k.fail("decrypt", err)
	}
	if err := k.ProbeOAEP(ctx, oaep.Hash, mgfHashOf(oaep)); err != nil {
		return nil, k.fail("decrypt", err)
	}
	err = k.withHandle(ctx, func(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		if err := k.tok.mod.ctx.DecryptInit(sh, []*pkcs11.Mechanism{mech}, h); err != nil {
			return err
		}
		var err error
		pt, err = k.tok.mod.ctx.Decrypt(sh, ciphertext)
		return err
	})
	if err != nil {
		return nil, k.fail("decrypt with CKM_RSA_PKCS_OAEP", usageErr(err))
	}
	return pt, nil
}

func mgfHashOf(o *rsa.OAEPOptions) crypto.Hash {
	if o.MGFHash != 0 {
		return o.MGFHash
	}
	return o.Hash
}

func (k *Key) oaepMechanism(o *rsa.OAEPOptions) (*pkcs11.Mechanism, error) {
	hm, _, err := hashMechs(o.Hash)
	if err != nil {
		return nil, err
	}
	_, mgf, err := hashMechs(mgfHashOf(o))
	if err != nil {
		return nil, err
	}
	src, data := uint(0), []byte(nil)
	if len(o.Label) > 0 {
		src, data = pkcs11.CKZ_DATA_SPECIFIED, o.Label
	}
	return pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_OAEP, pkcs11.NewOAEPParams(hm, mgf, src, data)), nil
}

// ProbeOAEP tells whether the token accepts RSA-OAEP with these hashes for this key,
// trying it once and remembering the answer. SoftHSM 2.6.1, for one, lists
// CKM_RSA_PKCS_OAEP but refuses any hash but SHA-1 with CKR_ARGUMENTS_BAD.
func (k *Key) ProbeOAEP(ctx context.Context, hash, mgfHash crypto.Hash) error {
	if err := k.tok.requireMechanism(pkcs11.CKM_RSA_PKCS_OAEP, pkcs11.CKF_DECRYPT, "RSA-OAEP decryption (CKM_RSA_PKCS_OAEP)"); err != nil {
		return err
	}
	mech, err := k.oaepMechanism(&rsa.OAEPOptions{Hash: hash, MGFHash: mgfHash})
	if err != nil {
		return err
	}
	pub, ok := k.pub.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("hsm: OAEP needs an RSA key: %w", ErrWrongUsage)
	}
	name := fmt.Sprintf("oaep/%v/%v", hash, mgfHash)
	return k.tok.probe(name, func() error {
		// A real ciphertext, so the trial ends the operation by succeeding: some modules
		// (tpm2-pkcs11) leave it active after a failed C_Decrypt, and some TPMs answer an
		// all-zero block with TPM_RC_FAILURE.
		ct, err := rsa.EncryptOAEP(hash.New(), rand.Reader, pub, []byte("setpay OAEP probe"), nil)
		if err != nil {
			return fmt.Errorf("hsm: OAEP probe: %w", err)
		}
		err = k.withHandle(ctx, func(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
			if err := k.tok.mod.ctx.DecryptInit(sh, []*pkcs11.Mechanism{mech}, h); err != nil {
				return err
			}
			_, err := k.tok.mod.ctx.Decrypt(sh, ct)
			return err
		})
		if c, ok := CKR(err); ok && (c == pkcs11.CKR_ARGUMENTS_BAD || c == pkcs11.CKR_MECHANISM_PARAM_INVALID || c == pkcs11.CKR_MECHANISM_INVALID) {
			return fmt.Errorf("hsm: token %q refuses RSA-OAEP with %v/MGF1-%v (%s); SHA-1 OAEP is the portable choice: %w",
				k.tok.info.Label, hash, mgfHash, ckrName(err), ErrUnsupported)
		}
		if c, ok := CKR(err); ok && c == pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED {
			return fmt.Errorf("hsm: key may not decrypt: %w", ErrWrongUsage)
		}
		return err
	})
}

// ECDH derives the raw shared secret (the x-coordinate) with peer via CKM_ECDH1_DERIVE,
// for ECDH key agreement (RFC 5753). The secret is created as a short-lived,
// extractable session object, read and destroyed; the private key never leaves.
func (k *Key) ECDH(ctx context.Context, peer *ecdh.PublicKey) (secret []byte, err error) {
	start := time.Now()
	defer func() { k.observe("derive", "CKM_ECDH1_DERIVE", start, err) }()
	if k.usage == UsageSign {
		return nil, k.fail("ecdh", fmt.Errorf("signing key may not derive: %w", ErrWrongUsage))
	}
	pub, ok := k.pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, k.fail("ecdh", fmt.Errorf("ECDH needs an EC key: %w", ErrWrongUsage))
	}
	want, err := pub.ECDH()
	if err != nil || peer == nil || peer.Curve() != want.Curve() {
		return nil, k.fail("ecdh", fmt.Errorf("peer key is not on the key's curve: %w", ErrBadRequest))
	}
	if err := k.tok.requireMechanism(pkcs11.CKM_ECDH1_DERIVE, pkcs11.CKF_DERIVE, "ECDH (CKM_ECDH1_DERIVE)"); err != nil {
		return nil, k.fail("ecdh", err)
	}
	size := (pub.Curve.Params().BitSize + 7) / 8
	mech := pkcs11.NewMechanism(pkcs11.CKM_ECDH1_DERIVE, pkcs11.NewECDH1DeriveParams(pkcs11.CKD_NULL, nil, peer.Bytes()))
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, size),
	}
	err = k.withHandle(ctx, func(sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		dh, err := k.tok.mod.ctx.DeriveKey(sh, []*pkcs11.Mechanism{mech}, h, tmpl)
		if err != nil {
			return err
		}
		defer func() { _ = k.tok.mod.ctx.DestroyObject(sh, dh) }()
		a, err := k.tok.mod.ctx.GetAttributeValue(sh, dh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
		if err != nil {
			return err
		}
		if len(a) != 1 || len(a[0].Value) != size {
			return fmt.Errorf("derived secret has the wrong size: %w", ErrUnsupported)
		}
		secret = a[0].Value
		return nil
	})
	if err != nil {
		return nil, k.fail("ecdh", usageErr(err))
	}
	return secret, nil
}

// signErr explains refusals of a mechanism the token lists: tpm2-pkcs11 1.9, for one,
// does CKM_RSA_PKCS_PSS only as hash-and-sign (CKR_MECHANISM_INVALID on a digest) and
// CKM_RSA_PKCS signing as a raw RSA decryption, which a key that may only sign is
// refused (CKR_GENERAL_ERROR). Both are ErrUnsupported for setpay's one-usage keys; the
// CKR code stays in the chain.
func (k *Key) signErr(mechName string, err error) error {
	c, ok := CKR(err)
	if !ok {
		return usageErr(err)
	}
	_, isRSA := k.pub.(*rsa.PublicKey)
	switch {
	case c == pkcs11.CKR_MECHANISM_INVALID || c == pkcs11.CKR_MECHANISM_PARAM_INVALID:
		return fmt.Errorf("token %q refuses %s on a precomputed digest: %w: %w", k.tok.info.Label, mechName, ErrUnsupported, err)
	case isRSA && mechName == "CKM_RSA_PKCS" && (c == pkcs11.CKR_GENERAL_ERROR || c == pkcs11.CKR_FUNCTION_FAILED):
		return fmt.Errorf("token %q (%s %s) failed %s signing; some modules do it only with keys that may also decrypt, which setpay never makes: %w: %w",
			k.tok.info.Label, k.tok.info.Manufacturer, k.tok.info.Model, mechName, ErrUnsupported, err)
	}
	return usageErr(err)
}

// usageErr adds ErrWrongUsage to the token's answer when it refused the key's usage.
func usageErr(err error) error {
	if c, ok := CKR(err); ok && (c == pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED || c == pkcs11.CKR_KEY_TYPE_INCONSISTENT) {
		return fmt.Errorf("%w: %w", ErrWrongUsage, err)
	}
	return err
}

func hashMechs(h crypto.Hash) (hashMech, mgf uint, err error) {
	switch h {
	case crypto.SHA1:
		return pkcs11.CKM_SHA_1, pkcs11.CKG_MGF1_SHA1, nil
	case crypto.SHA224:
		return pkcs11.CKM_SHA224, pkcs11.CKG_MGF1_SHA224, nil
	case crypto.SHA256:
		return pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256, nil
	case crypto.SHA384:
		return pkcs11.CKM_SHA384, pkcs11.CKG_MGF1_SHA384, nil
	case crypto.SHA512:
		return pkcs11.CKM_SHA512, pkcs11.CKG_MGF1_SHA512, nil
	}
	return 0, 0, fmt.Errorf("hsm: hash %v not offered: %w", h, ErrBadRequest)
}

// DER prefixes of DigestInfo for PKCS#1 v1.5 signatures (RFC 8017, section 9.2 note 1).
var digestInfoPrefix = map[crypto.Hash][]byte{
	crypto.SHA224: {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c},
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

var _ crypto.Decrypter = (*Key)(nil)
