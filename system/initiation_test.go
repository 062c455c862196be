package system_test

import (
	"bytes"
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/ca/catest"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/system"
)

// initiationFor is a valid initiation for the bed's merchant, issued at at.
func initiationFor(at time.Time) setproto.Initiation {
	return setproto.Initiation{
		Endpoint: "127.0.0.1:7443", ServerName: "127.0.0.1", MerchantID: "shop-1", Brands: []string{system.Brand},
		Amount: 25_00, Currency: "EUR", Description: "The SET book, hardcover", OfferID: "book", OrderRef: "ord-1",
		IssuedAt: at, ExpiresAt: at.Add(30 * time.Minute),
	}
}

// TestPaymentInitiationVerifies: an initiation signed by the merchant's token key
// verifies with the wallet's trust; the wallet gets every field back and the
// merchant's chain up to the root. The link form carries the same bytes.
func TestPaymentInitiationVerifies(t *testing.T) {
	e := newBed(t)
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	in := initiationFor(now)
	file, err := setproto.SignInitiation(ctx, e.MerchantEnt.Sign, in)
	require.NoError(t, err)

	v, err := setproto.VerifyInitiation(ctx, file, e.NewTrust(), now.Add(time.Minute))
	require.NoError(t, err)
	in.Version = setproto.InitiationVersion
	in.IssuedAt, in.ExpiresAt = in.IssuedAt.UTC(), in.ExpiresAt.UTC()
	assert.Equal(t, in, v.Initiation)
	assert.True(t, v.Merchant.Equal(e.MerchantEnt.Sign.Cert))
	require.Len(t, v.Chain, 4, "merchant, MCA, brand, root")
	assert.True(t, v.Chain[1].Equal(e.H.MCA.Certificate()))
	assert.True(t, v.Chain[3].Equal(e.H.Root.Certificate()))

	link := setproto.InitiationLink("http://127.0.0.1:7447/", file)
	u, err := url.Parse(link)
	require.NoError(t, err)
	assert.Equal(t, "/receive", u.Path)
	got, err := setproto.DecodeInitiationParam(u.Query().Get("initiation"))
	require.NoError(t, err)
	assert.Equal(t, file, got)
}

// TestPaymentInitiationRefusals: what a wallet must refuse, each with its SET reason:
// a tampered file (BAD_SIGNATURE), an expired or future one (INITIATION_EXPIRED), a
// merchant of another hierarchy (CERT_UNTRUSTED), a revoked merchant (CERT_REVOKED),
// garbage and other messages (MALFORMED), a gateway's signature (CERT_WRONG_ROLE),
// content naming another merchant than the signer (MERCHANT_MISMATCH).
func TestPaymentInitiationRefusals(t *testing.T) {
	e := newBed(t)
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	good, err := setproto.SignInitiation(ctx, e.MerchantEnt.Sign, initiationFor(now))
	require.NoError(t, err)
	future, err := setproto.SignInitiation(ctx, e.MerchantEnt.Sign, initiationFor(now.Add(10*time.Minute)))
	require.NoError(t, err)

	// a second merchant of the same MCA, then revoked
	revoked, err := e.RegisterEntity(ctx, pki.RoleMerchant, "shop-2", e.merTok)
	require.NoError(t, err)
	in2 := initiationFor(now)
	in2.MerchantID = "shop-2"
	revokedFile, err := setproto.SignInitiation(ctx, revoked.Sign, in2)
	require.NoError(t, err)
	require.NoError(t, e.H.MCA.Revoke(ctx, revoked.Sign.Cert.SerialNumber, ca.RevokeKeyCompromise))
	require.NoError(t, e.PublishCRLs(ctx))

	// another brand's hierarchy: the wallet does not trust its root
	other := catest.New(t)
	otherTrust := &setproto.Trust{Verifier: other.Verifier, Intermediates: other.Intermediates(pki.RoleMerchant), Cache: pki.NewCertCache(8)}

	tampered := bytes.Clone(good)
	i := bytes.Index(tampered, []byte("hardcover"))
	require.Positive(t, i, "the content is embedded in the file")
	tampered[i] = 'H'

	// a merchant signature over a PINIT_RES-typed content, and a gateway's over an initiation
	content, err := setproto.Marshal(&setpb.PaymentInitiation{Version: 1, MerchantEndpoint: "127.0.0.1:7443", TlsServerName: "127.0.0.1",
		MerchantId: "shop-1", Brands: []string{system.Brand}, Amount: 100, Currency: "EUR", OfferId: "book", OrderRef: "o",
		IssuedUnix: now.Unix(), ExpiresUnix: now.Add(time.Minute).Unix()})
	require.NoError(t, err)
	sign := func(kind setpb.ContentKind, p setproto.Party, c []byte) []byte {
		der, err := setproto.Sign(kind, c, p, now, p.Certificates())
		require.NoError(t, err)
		return der
	}
	otherMerchant, err := setproto.Marshal(&setpb.PaymentInitiation{Version: 1, MerchantEndpoint: "127.0.0.1:7443", TlsServerName: "127.0.0.1",
		MerchantId: "shop-9", Brands: []string{system.Brand}, Amount: 100, Currency: "EUR", OfferId: "book", OrderRef: "o",
		IssuedUnix: now.Unix(), ExpiresUnix: now.Add(time.Minute).Unix()})
	require.NoError(t, err)

	tests := []struct {
		name  string
		file  []byte
		trust *setproto.Trust
		at    time.Time
		want  setpb.Reason
	}{
		{"tampered", tampered, e.NewTrust(), now, setpb.Reason_BAD_SIGNATURE},
		{"expired", good, e.NewTrust(), now.Add(30 * time.Minute), setpb.Reason_INITIATION_EXPIRED},
		{"issued in the future", future, e.NewTrust(), now, setpb.Reason_INITIATION_EXPIRED},
		{"untrusted merchant", good, otherTrust, now, setpb.Reason_CERT_UNTRUSTED},
		{"revoked merchant", revokedFile, e.NewTrust(), now, setpb.Reason_CERT_REVOKED},
		{"empty", nil, e.NewTrust(), now, setpb.Reason_MALFORMED},
		{"garbage", []byte("not a SET payment initiation"), e.NewTrust(), now, setpb.Reason_MALFORMED},
		{"truncated", good[:len(good)/2], e.NewTrust(), now, setpb.Reason_MALFORMED},
		{"another message kind", sign(setpb.ContentKind_PINIT_RES, e.MerchantEnt.Sign, content), e.NewTrust(), now, setpb.Reason_MALFORMED},
		{"signed by the gateway", sign(setpb.ContentKind_PAYMENT_INITIATION, e.GatewayEnt.Sign, content), e.NewTrust(), now, setpb.Reason_CERT_WRONG_ROLE},
		{"names another merchant", sign(setpb.ContentKind_PAYMENT_INITIATION, e.MerchantEnt.Sign, otherMerchant), e.NewTrust(), now, setpb.Reason_MERCHANT_MISMATCH},
		{"content not a PaymentInitiation", sign(setpb.ContentKind_PAYMENT_INITIATION, e.MerchantEnt.Sign, []byte{0xff, 0x01}), e.NewTrust(), now, setpb.Reason_MALFORMED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := setproto.VerifyInitiation(ctx, tt.file, tt.trust, tt.at)
			require.Error(t, err)
			assert.Nil(t, v)
			assert.Equal(t, tt.want.String(), setproto.ReasonOf(err).String(), "%v", err)
		})
	}
	_, err = setproto.VerifyInitiation(ctx, good, e.NewTrust(), now)
	assert.NoError(t, err, "the untampered file still verifies")
}

// TestSignInitiationRefusesBadFields: the merchant cannot sign an initiation with a
// field out of range, nor one naming another merchant; the error names the field.
func TestSignInitiationRefusesBadFields(t *testing.T) {
	e := newBed(t)
	ctx := context.Background()
	now := time.Now()
	tests := []struct {
		name   string
		mut    func(*setproto.Initiation)
		reason setpb.Reason
		field  string
	}{
		{"no port", func(in *setproto.Initiation) { in.Endpoint = "127.0.0.1" }, setpb.Reason_MALFORMED, "merchant_endpoint"},
		{"bad port", func(in *setproto.Initiation) { in.Endpoint = "shop.example:99999" }, setpb.Reason_MALFORMED, "merchant_endpoint"},
		{"bad server name", func(in *setproto.Initiation) { in.ServerName = "shop example" }, setpb.Reason_MALFORMED, "tls_server_name"},
		{"no brands", func(in *setproto.Initiation) { in.Brands = nil }, setpb.Reason_MALFORMED, "brands"},
		{"zero amount", func(in *setproto.Initiation) { in.Amount = 0 }, setpb.Reason_MALFORMED, "amount"},
		{"bad currency", func(in *setproto.Initiation) { in.Currency = "euro" }, setpb.Reason_MALFORMED, "currency"},
		{"no offer", func(in *setproto.Initiation) { in.OfferID = "" }, setpb.Reason_MALFORMED, "offer_id"},
		{"bad order ref", func(in *setproto.Initiation) { in.OrderRef = "a b" }, setpb.Reason_MALFORMED, "order_ref"},
		{"expires before issued", func(in *setproto.Initiation) { in.ExpiresAt = in.IssuedAt.Add(-time.Second) }, setpb.Reason_MALFORMED, "expires_unix"},
		{"lives too long", func(in *setproto.Initiation) { in.ExpiresAt = in.IssuedAt.Add(48 * time.Hour) }, setpb.Reason_MALFORMED, "lifetime"},
		{"another version", func(in *setproto.Initiation) { in.Version = 2 }, setpb.Reason_UNSUPPORTED, "version"},
		{"another merchant", func(in *setproto.Initiation) { in.MerchantID = "shop-9" }, setpb.Reason_MERCHANT_MISMATCH, "merchant_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := initiationFor(now)
			tt.mut(&in)
			file, err := setproto.SignInitiation(ctx, e.MerchantEnt.Sign, in)
			require.Error(t, err)
			assert.Nil(t, file)
			assert.Equal(t, tt.reason.String(), setproto.ReasonOf(err).String(), "%v", err)
			assert.Contains(t, err.Error(), tt.field)
		})
	}
	_, err := setproto.SignInitiation(ctx, e.GatewayEnt.Sign, initiationFor(now))
	assert.Equal(t, setpb.Reason_CERT_WRONG_ROLE.String(), setproto.ReasonOf(err).String(), "a gateway cannot sign an initiation: %v", err)
}

// FuzzVerifyInitiation feeds the .setpay parser and verifier, and the link decoder,
// with a real initiation signed on SoftHSM. An accepted input names its signer's
// merchant and is within its validity at the fuzzing clock.
func FuzzVerifyInitiation(f *testing.F) {
	e := newBed(f)
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	good, err := setproto.SignInitiation(ctx, e.MerchantEnt.Sign, initiationFor(now))
	require.NoError(f, err)
	f.Add(good)
	f.Add([]byte(setproto.InitiationLink("http://127.0.0.1:7447", good)))
	trust := e.NewTrust()
	at := now.Add(time.Minute)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = setproto.ParsePaymentInitiation(b)
		if raw, err := setproto.DecodeInitiationParam(string(b)); err == nil {
			_, _ = setproto.VerifyInitiation(ctx, raw, trust, at)
		}
		v, err := setproto.VerifyInitiation(ctx, b, trust, at)
		if err != nil {
			if v != nil {
				t.Fatal("a refused initiation came back with a result")
			}
			return
		}
		_, id, err := pki.EntityID(v.Merchant)
		if err != nil || id != v.MerchantID || !at.Before(v.ExpiresAt) {
			t.Fatalf("accepted an inconsistent initiation: %+v (%v)", v.Initiation, err)
		}
	})
}
