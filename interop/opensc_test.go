package interop_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/softhsm/softhsmtest"
)

// pkcs11Tool runs OpenSC's pkcs11-tool logged in to tok. The PIN is on its command
// line only here, in a test, with the fixed test PIN.
func pkcs11Tool(t *testing.T, tok *hsm.Token, args ...string) (string, error) {
	t.Helper()
	tool := needTool(t, "pkcs11-tool")
	base := []string{"--module", tok.Module().Path(), "--token-label", tok.Label(), "--login", "--pin", softhsmtest.PIN}
	return run(t, softhsmtest.Env(t), tool, append(base, args...)...)
}

// privateKeys splits `pkcs11-tool --list-objects --type privkey` into one block per key.
func privateKeys(out string) map[string]string {
	keys := map[string]string{}
	label := regexp.MustCompile(`(?m)^\s*label:\s*(.+?)\s*$`)
	for _, blk := range strings.Split(out, "Private Key Object")[1:] {
		if m := label.FindStringSubmatch(blk); m != nil {
			keys[m[1]] = blk
		}
	}
	return keys
}

// testOpenSC reads the bed's gateway and merchant tokens with OpenSC, and has
// pkcs11-tool sign with the gateway's key for the project to verify.
func testOpenSC(t *testing.T, b *bed) {
	needTool(t, "pkcs11-tool")
	t.Run("list objects", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			tok  *hsm.Token
			want map[string]string // label -> the one usage
		}{
			{"gateway", b.gwTok, map[string]string{"gateway-gw-1-sign": "sign", "gateway-gw-1-kx": "decrypt, unwrap", "tls-gateway-gw-1": "sign"}},
			{"merchant", b.merTok, map[string]string{"merchant-shop-1-sign": "sign", "merchant-shop-1-kx": "decrypt, unwrap",
				"tls-client-shop-1": "sign", "tls-shop-1": "sign"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, err := pkcs11Tool(t, tc.tok, "--list-objects", "--type", "privkey")
				require.NoError(t, err, out)
				keys := privateKeys(out)
				require.Len(t, keys, len(tc.want), out)
				for label, usage := range tc.want {
					blk, ok := keys[label]
					require.True(t, ok, "no private key %q in\n%s", label, out)
					assert.Regexp(t, `Access:.*\bsensitive\b`, blk, label)
					assert.Regexp(t, `Access:.*\balways sensitive\b`, blk, label)
					assert.Regexp(t, `Access:.*\bnever extractable\b`, blk, label)
					assert.Regexp(t, `(?m)^\s*Usage:\s*`+regexp.QuoteMeta(usage)+`\s*$`, blk, "%s has exactly the usage %q", label, usage)
				}
			})
		}
	})
	t.Run("self test", func(t *testing.T) {
		// pkcs11-tool --test exercises every key with the mechanisms the token lists:
		// the signature keys are left alone for decryption and the key-exchange key for
		// signing. SoftHSM 2.6.1 refuses OAEP with SHA-256 (CKR_ARGUMENTS_BAD), which
		// stops the tool at that step: the documented limit, not a failure of ours.
		out, err := pkcs11Tool(t, b.gwTok, "--test")
		assert.Regexp(t, `gateway-gw-1-kx\) (with \d+ mechanisms? )?-- can't be used to sign/verify, skipping`, out)
		assert.Regexp(t, `gateway-gw-1-sign\) (with \d+ mechanisms? )?-- non-RSA, skipping`, out)
		if err != nil {
			require.Contains(t, out, "hashAlg=SHA256", out)
			require.Contains(t, out, "CKR_ARGUMENTS_BAD", out)
			t.Log("pkcs11-tool --test stops at RSA-OAEP with SHA-256, which SoftHSM 2.6.1 refuses")
			return
		}
		assert.Contains(t, out, "No errors", out)
	})
	t.Run("sign with pkcs11-tool", func(t *testing.T) { testToolSignature(t, b) })
	t.Run("key-exchange key refuses PKCS#1 v1.5", func(t *testing.T) { testKXKeyRefusesPKCS1v15(t, b) })
}

// toolSigner is a crypto.Signer whose signatures pkcs11-tool makes with a key in
// the token (CKM_ECDSA over the digest the caller gives). Keys are named by CKA_ID:
// pkcs11-tool 0.23's --sign and --decrypt ignore --label and take the first private
// key of the token.
type toolSigner struct {
	t   *testing.T
	key *hsm.Key
}

func (s toolSigner) Public() crypto.PublicKey { return s.key.Public() }

func (s toolSigner) Sign(_ io.Reader, digest []byte, _ crypto.SignerOpts) ([]byte, error) {
	dir := s.t.TempDir()
	in, out := filepath.Join(dir, "digest.bin"), filepath.Join(dir, "sig.der")
	if err := os.WriteFile(in, digest, 0o600); err != nil {
		return nil, err
	}
	if o, err := pkcs11Tool(s.t, s.key.Token(), "--sign", "--mechanism", "ECDSA", "--id", hex.EncodeToString(s.key.ID()),
		"--signature-format", "openssl", "--input-file", in, "--output-file", out); err != nil {
		return nil, &toolError{out: o, err: err}
	}
	return os.ReadFile(out)
}

// testToolSignature: an ECDSA signature pkcs11-tool makes with the gateway's
// signature key verifies with Go's crypto/ecdsa, and a capture token signed through
// it passes the merchant's full check (CMS signature, chain to the root, role
// gateway). The key-exchange key refuses to sign.
func testToolSignature(t *testing.T, b *bed) {
	gw := b.GatewayEnt
	digest := sha256.Sum256([]byte("SET capture token"))
	ts := toolSigner{t: t, key: gw.SignKey}
	sig, err := ts.Sign(nil, digest[:], crypto.SHA256)
	require.NoError(t, err)
	assert.True(t, ecdsa.VerifyASN1(gw.Sign.Cert.PublicKey.(*ecdsa.PublicKey), digest[:], sig))

	p := gw.Sign
	p.Key = ts
	der, err := setproto.SignMessage(setpb.ContentKind_CAPTURE_TOKEN, &setpb.CaptureToken{
		TokenId: "tok-1", Xid: "xid-1", MerchantId: b.MerchantEnt.ID, Amount: 100, Currency: "EUR", AuthCode: "A1",
		ExpiresUnix: time.Now().Add(time.Hour).Unix(),
	}, p, time.Now(), p.Certificates())
	require.NoError(t, err)
	v, err := b.NewTrust().Open(context.Background(), der, nil, setpb.ContentKind_CAPTURE_TOKEN,
		pki.Expect{Role: pki.RoleGateway, Purpose: pki.PurposeSignature})
	require.NoError(t, err)
	assert.Equal(t, "gw-1", v.EntityID)

	sigFile := filepath.Join(t.TempDir(), "sig")
	out, err := pkcs11Tool(t, b.gwTok, "--sign", "--mechanism", "RSA-PKCS", "--id", hex.EncodeToString(gw.KXKey.ID()),
		"--input-file", writeTemp(t, "digest.bin", digest[:]), "--output-file", sigFile)
	assert.Error(t, err, "the key-exchange key must not sign: %s", out)
	assert.Contains(t, out, "CKR_")
	if st, err := os.Stat(sigFile); err == nil {
		assert.Zero(t, st.Size(), "no signature written")
	}
}

// testKXKeyRefusesPKCS1v15 asks the token, through pkcs11-tool, to decrypt with the
// gateway's key-exchange key under RSA PKCS#1 v1.5. setpay's hsm package refuses
// that mechanism (a padding oracle), but the refusal must be the token's: any other
// program holding the PIN can otherwise use the key as a Bleichenbacher oracle.
func testKXKeyRefusesPKCS1v15(t *testing.T, b *bed) {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	ct, err := rsa.EncryptPKCS1v15(rand.Reader, b.GatewayEnt.KXCert.PublicKey.(*rsa.PublicKey), secret)
	require.NoError(t, err)
	outFile := filepath.Join(t.TempDir(), "plain.bin")
	out, err := pkcs11Tool(t, b.gwTok, "--decrypt", "--mechanism", "RSA-PKCS", "--id", hex.EncodeToString(b.GatewayEnt.KXKey.ID()),
		"--input-file", writeTemp(t, "ct.bin", ct), "--output-file", outFile)
	// The key's CKA_ALLOWED_MECHANISMS holds only CKM_RSA_PKCS_OAEP, so the token
	// itself refuses: no other PKCS#11 caller can use the key as a padding oracle.
	if err == nil {
		got, _ := os.ReadFile(outFile)
		assert.NotEqual(t, secret, got, "the token decrypted PKCS#1 v1.5 with the key-exchange key")
	}
	assert.Error(t, err, "%s", out)
}
