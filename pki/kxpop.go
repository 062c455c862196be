package pki

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
)

// Proof of possession for key-exchange keys. A token key-exchange key may
// not sign (hsm.UsageKeyExchange), so it cannot sign a PKCS#10 request.
// Instead the CA sends a challenge only the private key can open (RSA: a
// random value under RSA-OAEP; EC: an ephemeral ECDH public key) and the
// holder answers with an HMAC over the result bound to its public key. The
// answer is a MAC, never the decrypted bytes, so a fake CA cannot use the
// exchange as a decryption oracle for protocol ciphertexts.

const kxPoPLabel = "setpay/kx-pop/v1\x00"

// KXChallenge is sent by the CA to the holder of a key-exchange key.
type KXChallenge struct {
	Ciphertext []byte // RSA keys: RSA-OAEP (SHA-1, as SoftHSM supports) of 32 random bytes
	Ephemeral  []byte // EC keys: uncompressed ephemeral ECDH public point on the key's curve
}

// ECDHKey is a key-exchange key that agrees keys in its token (hsm.Key).
type ECDHKey interface {
	Public() crypto.PublicKey
	ECDH(ctx context.Context, peer *ecdh.PublicKey) ([]byte, error)
}

// NewKXChallenge creates a challenge for pub (CA side) and the answer to expect.
func NewKXChallenge(pub crypto.PublicKey) (KXChallenge, []byte, error) {
	if _, err := CheckPublicKey(pub); err != nil {
		return KXChallenge{}, nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return KXChallenge{}, nil, fmt.Errorf("pki: marshal key: %w", err)
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		secret := make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return KXChallenge{}, nil, fmt.Errorf("pki: challenge: %w", err)
		}
		ct, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, k, secret, nil)
		if err != nil {
			return KXChallenge{}, nil, fmt.Errorf("pki: encrypt challenge: %w", err)
		}
		return KXChallenge{Ciphertext: ct}, kxMAC(secret, spki, nil), nil
	case *ecdsa.PublicKey:
		peer, err := k.ECDH()
		if err != nil {
			return KXChallenge{}, nil, fmt.Errorf("pki: key-exchange key: %w", err)
		}
		eph, err := peer.Curve().GenerateKey(rand.Reader)
		if err != nil {
			return KXChallenge{}, nil, fmt.Errorf("pki: ephemeral key: %w", err)
		}
		shared, err := eph.ECDH(peer)
		if err != nil {
			return KXChallenge{}, nil, fmt.Errorf("pki: ECDH: %w", err)
		}
		e := eph.PublicKey().Bytes()
		return KXChallenge{Ephemeral: e}, kxMAC(shared, spki, e), nil
	}
	return KXChallenge{}, nil, &Error{Reason: ReasonUnsupportedKey, Err: fmt.Errorf("key type %T cannot exchange keys", pub)}
}

// AnswerKXChallenge opens ch with key (a crypto.Decrypter for RSA, an
// ECDHKey for EC) and returns the proof to send back to the CA.
func AnswerKXChallenge(ctx context.Context, ch KXChallenge, key interface{ Public() crypto.PublicKey }) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("pki: marshal key: %w", err)
	}
	switch pub := key.Public().(type) {
	case *rsa.PublicKey:
		d, ok := key.(crypto.Decrypter)
		if !ok || len(ch.Ciphertext) != pub.Size() || len(ch.Ephemeral) != 0 {
			return nil, fmt.Errorf("pki: RSA challenge needs a decrypter and a %d-byte ciphertext", pub.Size())
		}
		secret, err := d.Decrypt(rand.Reader, ch.Ciphertext, &rsa.OAEPOptions{Hash: crypto.SHA1})
		if err != nil {
			return nil, fmt.Errorf("pki: open challenge: %w", err)
		}
		if len(secret) != 32 {
			return nil, fmt.Errorf("pki: challenge of %d bytes, want 32", len(secret))
		}
		return kxMAC(secret, spki, nil), nil
	case *ecdsa.PublicKey:
		k, ok := key.(ECDHKey)
		if !ok || len(ch.Ciphertext) != 0 {
			return nil, fmt.Errorf("pki: EC challenge needs an ECDH key")
		}
		own, err := pub.ECDH()
		if err != nil {
			return nil, fmt.Errorf("pki: key-exchange key: %w", err)
		}
		peer, err := own.Curve().NewPublicKey(ch.Ephemeral)
		if err != nil {
			return nil, fmt.Errorf("pki: challenge point: %w", err)
		}
		shared, err := k.ECDH(ctx, peer)
		if err != nil {
			return nil, fmt.Errorf("pki: ECDH: %w", err)
		}
		return kxMAC(shared, spki, ch.Ephemeral), nil
	}
	return nil, fmt.Errorf("pki: key type %T cannot exchange keys", key.Public())
}

func kxMAC(secret, spki, ephemeral []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(kxPoPLabel))
	m.Write(spki)
	m.Write(ephemeral)
	return m.Sum(nil)
}
