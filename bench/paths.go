package bench

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/signer"
)

// Path names, in the order the report shows them.
const (
	PathRaw      = "raw"
	PathCrypto11 = "crypto11"
	PathSigner   = "signer"
	PathGRPC     = "grpc"
	PathSoftware = "software"
)

// Paths lists every access path.
var Paths = []string{PathRaw, PathCrypto11, PathSigner, PathGRPC, PathSoftware}

// errNotApplicable marks a path that cannot do a mechanism (crypto11 has no ECDH).
var errNotApplicable = errors.New("not applicable")

// op performs one operation; a worker owns one op and calls it in a loop.
type op func(ctx context.Context) error

// keyset is one mechanism's key on one token, reachable through every path.
type keyset struct {
	mech     Mechanism
	name     string // key label in the token and name in the signer service
	key      *hsm.Key
	c11      crypto11.Signer
	remote   *signer.RemoteKey
	svc      *signer.Service
	software any // *ecdsa.PrivateKey, *rsa.PrivateKey or *ecdh.PrivateKey
	in       input
}

func newSoftware(m Mechanism) (any, error) {
	switch m.Alg {
	case hsm.ECDSAP256, hsm.ECDSAP384:
		curve := elliptic.P256()
		if m.Alg == hsm.ECDSAP384 {
			curve = elliptic.P384()
		}
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil || m.Kind != "derive" {
			return k, err
		}
		return k.ECDH()
	case hsm.RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case hsm.RSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	return nil, fmt.Errorf("bench: no software key for %s", m.Alg)
}

// newOp prepares one worker's operation on path; close releases what it holds.
func (ks *keyset) newOp(path string, mod *hsm.Module, slot uint) (op, func(), error) {
	nop := func() {}
	in := ks.in
	switch path {
	case PathRaw:
		return rawOp(mod.Raw(), slot, ks)
	case PathCrypto11:
		if ks.c11 == nil {
			return nil, nop, errNotApplicable
		}
		switch ks.mech.Kind {
		case "sign":
			return func(context.Context) error { _, err := ks.c11.Sign(rand.Reader, in.digest, ks.mech.Opts); return err }, nop, nil
		case "decrypt":
			d, ok := ks.c11.(crypto.Decrypter)
			if !ok {
				return nil, nop, errNotApplicable
			}
			return func(context.Context) error { _, err := d.Decrypt(rand.Reader, in.ciphertext, oaepOpts); return err }, nop, nil
		}
		return nil, nop, errNotApplicable // crypto11 has no ECDH
	case PathSigner:
		switch ks.mech.Kind {
		case "sign":
			return func(ctx context.Context) error {
				_, err := ks.svc.Sign(ctx, ks.name, in.digest, ks.mech.Opts)
				return err
			}, nop, nil
		case "decrypt":
			return func(ctx context.Context) error {
				_, err := ks.svc.Decrypt(ctx, ks.name, in.ciphertext, oaepOpts)
				return err
			}, nop, nil
		case "derive":
			return func(ctx context.Context) error { _, err := ks.svc.ECDH(ctx, ks.name, in.peer); return err }, nop, nil
		}
	case PathGRPC:
		if ks.remote == nil {
			return nil, nop, errNotApplicable
		}
		switch ks.mech.Kind {
		case "sign":
			return func(ctx context.Context) error {
				_, err := ks.remote.SignContext(ctx, in.digest, ks.mech.Opts)
				return err
			}, nop, nil
		case "decrypt":
			return func(ctx context.Context) error {
				_, err := ks.remote.DecryptContext(ctx, in.ciphertext, oaepOpts)
				return err
			}, nop, nil
		}
		return nil, nop, errNotApplicable // the signer service offers no remote ECDH
	case PathSoftware:
		return softwareOp(ks)
	}
	return nil, nop, fmt.Errorf("bench: path %q unknown", path)
}

func softwareOp(ks *keyset) (op, func(), error) {
	nop := func() {}
	in := ks.in
	switch k := ks.software.(type) {
	case *ecdsa.PrivateKey:
		return func(context.Context) error { _, err := ecdsa.SignASN1(rand.Reader, k, in.digest); return err }, nop, nil
	case *ecdh.PrivateKey:
		return func(context.Context) error { _, err := k.ECDH(in.peer); return err }, nop, nil
	case *rsa.PrivateKey:
		switch ks.mech.Kind {
		case "decrypt":
			ct, err := rsa.EncryptOAEP(oaepOpts.Hash.New(), rand.Reader, &k.PublicKey, in.digest, nil)
			if err != nil {
				return nil, nop, err
			}
			return func(context.Context) error { _, err := k.Decrypt(rand.Reader, ct, oaepOpts); return err }, nop, nil
		default:
			return func(context.Context) error { _, err := k.Sign(rand.Reader, in.digest, ks.mech.Opts); return err }, nop, nil
		}
	}
	return nil, nop, errNotApplicable
}

// rawOp is the baseline: a plain miekg/pkcs11 loop on a session of its own, with the
// object handle looked up once, as the fastest hand-written client would do it.
func rawOp(p *pkcs11.Ctx, slot uint, ks *keyset) (op, func(), error) {
	sh, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return nil, func() {}, fmt.Errorf("bench: raw session: %w", err)
	}
	closeFn := func() { _ = p.CloseSession(sh) }
	if err := p.FindObjectsInit(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_ID, ks.key.ID()),
	}); err != nil {
		closeFn()
		return nil, func() {}, err
	}
	hs, _, err := p.FindObjects(sh, 1)
	_ = p.FindObjectsFinal(sh)
	if err != nil || len(hs) != 1 {
		closeFn()
		return nil, func() {}, fmt.Errorf("bench: raw find key %s: %v", ks.name, err)
	}
	h := hs[0]
	in := ks.in
	switch ks.mech.Kind {
	case "sign":
		data := in.digest
		var mech []*pkcs11.Mechanism
		switch o := ks.mech.Opts.(type) {
		case *rsa.PSSOptions:
			mech = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_PSS, pkcs11.NewPSSParams(pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256, uint(o.Hash.Size())))}
		default:
			if ks.mech.Alg == hsm.RSA2048 || ks.mech.Alg == hsm.RSA3072 {
				prefix := []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}
				data = append(prefix, in.digest...)
				mech = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}
			} else {
				mech = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}
			}
		}
		return func(context.Context) error {
			if err := p.SignInit(sh, mech, h); err != nil {
				return err
			}
			_, err := p.Sign(sh, data)
			return err
		}, closeFn, nil
	case "decrypt":
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_OAEP, pkcs11.NewOAEPParams(pkcs11.CKM_SHA_1, pkcs11.CKG_MGF1_SHA1, 0, nil))}
		return func(context.Context) error {
			if err := p.DecryptInit(sh, mech, h); err != nil {
				return err
			}
			_, err := p.Decrypt(sh, in.ciphertext)
			return err
		}, closeFn, nil
	case "derive":
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDH1_DERIVE, pkcs11.NewECDH1DeriveParams(pkcs11.CKD_NULL, nil, in.peer.Bytes()))}
		tmpl := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
		}
		val := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}
		return func(context.Context) error {
			dh, err := p.DeriveKey(sh, mech, h, tmpl)
			if err != nil {
				return err
			}
			_, err = p.GetAttributeValue(sh, dh, val)
			_ = p.DestroyObject(sh, dh)
			return err
		}, closeFn, nil
	}
	closeFn()
	return nil, func() {}, errNotApplicable
}
