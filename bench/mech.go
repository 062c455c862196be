// Package bench measures setpay against its baselines, side by side in one run:
// per-token signing throughput across access paths (raw PKCS#11, crypto11, the signer
// in-process and over gRPC, Go software) and, later, end-to-end purchases.
package bench

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"

	"github.com/setpay/setpay/hsm"
)

// Mechanism is one kind of private-key operation the benchmark drives.
type Mechanism struct {
	Name  string
	Alg   hsm.Algorithm
	Usage hsm.Usage
	// Opts is the crypto.SignerOpts for signing mechanisms, nil otherwise.
	Opts crypto.SignerOpts
	Kind string // "sign", "decrypt", "derive"
}

// Mechanisms lists what `bench sign --mech` accepts.
var Mechanisms = []Mechanism{
	{Name: "ecdsa-p256", Alg: hsm.ECDSAP256, Usage: hsm.UsageSign, Opts: crypto.SHA256, Kind: "sign"},
	{Name: "ecdsa-p384", Alg: hsm.ECDSAP384, Usage: hsm.UsageSign, Opts: crypto.SHA256, Kind: "sign"},
	{Name: "rsa2048-pkcs1", Alg: hsm.RSA2048, Usage: hsm.UsageSign, Opts: crypto.SHA256, Kind: "sign"},
	{Name: "rsa2048-pss", Alg: hsm.RSA2048, Usage: hsm.UsageSign, Opts: &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}, Kind: "sign"},
	{Name: "rsa3072-pss", Alg: hsm.RSA3072, Usage: hsm.UsageSign, Opts: &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}, Kind: "sign"},
	{Name: "rsa2048-oaep-decrypt", Alg: hsm.RSA2048, Usage: hsm.UsageKeyExchange, Kind: "decrypt"},
	{Name: "ecdh-p256", Alg: hsm.ECDSAP256, Usage: hsm.UsageKeyExchange, Kind: "derive"},
}

// ParseMechanisms turns "ecdsa-p256,rsa2048-pss" into mechanisms.
func ParseMechanisms(list string) ([]Mechanism, error) {
	var out []Mechanism
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		i := slices.IndexFunc(Mechanisms, func(m Mechanism) bool { return m.Name == name })
		if i < 0 {
			var known []string
			for _, m := range Mechanisms {
				known = append(known, m.Name)
			}
			return nil, fmt.Errorf("bench: mechanism %q unknown (one of %s)", name, strings.Join(known, ", "))
		}
		out = append(out, Mechanisms[i])
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bench: no mechanism given")
	}
	return out, nil
}

// oaepOpts is the key transport every module here supports (SoftHSM 2.6.1 refuses
// OAEP with SHA-256), so the figures compare like with like.
var oaepOpts = &rsa.OAEPOptions{Hash: crypto.SHA1}

// input is the fixed material one mechanism works on: a digest to sign, a ciphertext
// to decrypt, a peer public key to agree with.
type input struct {
	digest     []byte
	ciphertext []byte
	peer       *ecdh.PublicKey
}

func newInput(m Mechanism, pub crypto.PublicKey) (input, error) {
	d := sha256.Sum256([]byte("setpay benchmark: " + m.Name))
	in := input{digest: d[:]}
	switch m.Kind {
	case "decrypt":
		rp, ok := pub.(*rsa.PublicKey)
		if !ok {
			return in, fmt.Errorf("bench: %s needs an RSA key", m.Name)
		}
		ct, err := rsa.EncryptOAEP(oaepOpts.Hash.New(), rand.Reader, rp, d[:], nil)
		if err != nil {
			return in, err
		}
		in.ciphertext = ct
	case "derive":
		ep, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return in, fmt.Errorf("bench: %s needs an EC key", m.Name)
		}
		curve := ecdh.P256()
		if ep.Curve == elliptic.P384() {
			curve = ecdh.P384()
		}
		peer, err := curve.GenerateKey(rand.Reader)
		if err != nil {
			return in, err
		}
		in.peer = peer.PublicKey()
	}
	return in, nil
}
