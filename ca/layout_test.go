package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/ca/catest"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/softhsm/softhsmtest"
)

// TestInitDirAndReload creates a CA directory, refuses to do it twice, and
// reloads it as a restarted process would: same keys, same store, CRL
// numbers and enrollments carried over.
func TestInitDirAndReload(t *testing.T) {
	ctx := context.Background()
	rootTok, tok := softhsmtest.NewToken(t), softhsmtest.NewToken(t)
	dir := filepath.Join(t.TempDir(), "ca")
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "setpay.db")
	db := openDB(t, dsn)
	newStore := func(r pki.Role) ca.Store {
		s, err := ca.NewDBStore(db, r.String())
		require.NoError(t, err)
		return s
	}
	log := slog.New(slog.DiscardHandler)
	h, err := ca.InitDir(ctx, ca.InitConfig{RootToken: rootTok, Token: tok, Dir: dir, NewStore: newStore, Brand: "T", Org: "T", TLSName: "127.0.0.1", Logger: log})
	require.NoError(t, err)
	_, err = ca.InitDir(ctx, ca.InitConfig{RootToken: rootTok, Token: tok, Dir: dir, NewStore: newStore, Brand: "T", TLSName: "127.0.0.1", Logger: log})
	assert.ErrorContains(t, err, "already initialised")
	_, err = ca.InitDir(ctx, ca.InitConfig{RootToken: rootTok, Token: tok, Dir: filepath.Join(t.TempDir(), "other"), NewStore: newStore, Brand: "T", TLSName: "127.0.0.1", Logger: log})
	assert.ErrorContains(t, err, "already initialised", "keys in the token count too")
	secret, err := h.MCA.Enroll(ctx, pki.RoleMerchant, "m-1")
	require.NoError(t, err)
	crl1, err := h.MCA.CRL(ctx)
	require.NoError(t, err)

	l, err := ca.LoadDir(ctx, ca.LoadConfig{Dir: dir, Token: tok, NewStore: newStore, Logger: log})
	require.NoError(t, err)
	assert.Nil(t, l.Hierarchy.Root, "root stays offline")
	require.NotNil(t, l.RootCRL)
	assert.True(t, l.Hierarchy.CCA.Certificate().Equal(h.CCA.Certificate()))
	crl2, err := l.Hierarchy.MCA.CRL(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, crl2.Number.Cmp(crl1.Number))
	// The secret handed out before the restart is redeemable after it.
	sigKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	kxKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	certs, err := l.Hierarchy.MCA.IssueEntity(ctx, ca.EntityRequest{Role: pki.RoleMerchant, ID: "m-1", Secret: secret,
		SignatureCSR: catest.CSR(t, sigKey, "m"), KeyExchangeCSR: catest.CSR(t, kxKey, "m")})
	require.NoError(t, err)
	rec, err := h.MCA.Store().GetIssued(ctx, certs.Signature.SerialNumber)
	require.NoError(t, err)
	assert.Equal(t, "m-1", rec.SubjectID)
	assert.Equal(t, pki.PurposeSignature, rec.Purpose)
	assert.True(t, l.TLS.Cert.IPAddresses[0].IsLoopback())
}

func TestTokenAlgorithmIsTheOneMapping(t *testing.T) {
	tests := []struct {
		alg     string
		want    hsm.Algorithm
		refused bool
	}{
		{pki.AlgECDSAP256, hsm.ECDSAP256, false},
		{pki.AlgECDSAP384, hsm.ECDSAP384, false},
		{pki.AlgRSA2048, hsm.RSA2048, false},
		{pki.AlgRSA3072, hsm.RSA3072, false},
		{pki.AlgRSA4096, "", true}, // a certificate algorithm no token key is made for
		{"ECDSA-P256", "", true},   // the old spelling is not a second vocabulary
		{"", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.alg, func(t *testing.T) {
			got, err := ca.TokenAlgorithm(tt.alg)
			if tt.refused {
				assert.ErrorContains(t, err, "not supported by the token")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.alg, string(got), "certificate and token names are one vocabulary")
		})
	}
	// Every certificate algorithm is either mapped or refused: none falls through.
	for _, alg := range pki.Algorithms() {
		_, err := ca.TokenAlgorithm(alg)
		if alg != pki.AlgRSA4096 {
			assert.NoError(t, err, alg)
		}
	}
}
