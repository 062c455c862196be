package system_test

import (
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/cms"
	"github.com/setpay/setpay/internal/testenv"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/system/systemtest"
)

// TestOpenSSLVerifiesEveryMessage saves one signed message of each kind from a real
// purchase and has OpenSSL 3 verify it against the exported root and chain.
func TestOpenSSLVerifiesEveryMessage(t *testing.T) {
	testenv.Tool(t, "openssl")
	e := newBed(t)
	ctx := context.Background()
	w, err := e.Wallet(systemtest.Alice)
	require.NoError(t, err)
	r, err := w.Buy(ctx, "book") // authorization only: the answer carries a capture token
	require.NoError(t, err)
	_, err = w.Inquire(ctx, r.XID)
	require.NoError(t, err)
	// and one of each lifecycle request through the gateway's gRPC service
	m := e.Merchant
	for _, op := range []func() (*merchant.LifecycleResult, error){
		func() (*merchant.LifecycleResult, error) { return m.Batch(ctx, "", "b1", setpb.BatchAction_BATCH_OPEN) },
		func() (*merchant.LifecycleResult, error) {
			return m.Capture(ctx, merchant.LifecycleInput{RRPID: "cap-1", XID: r.XID, Amount: 20_00, BatchID: "b1"})
		},
		func() (*merchant.LifecycleResult, error) {
			return m.ReverseAuthorization(ctx, merchant.LifecycleInput{XID: r.XID, Amount: 1_00})
		},
		func() (*merchant.LifecycleResult, error) {
			return m.ReverseCapture(ctx, merchant.LifecycleInput{XID: r.XID, Amount: 1_00, TargetID: "cap-1"})
		},
		func() (*merchant.LifecycleResult, error) {
			return m.Credit(ctx, merchant.LifecycleInput{RRPID: "cr-1", XID: r.XID, Amount: 2_00})
		},
		func() (*merchant.LifecycleResult, error) {
			return m.ReverseCredit(ctx, merchant.LifecycleInput{XID: r.XID, Amount: 1_00, TargetID: "cr-1"})
		},
		func() (*merchant.LifecycleResult, error) { return m.GatewayInquiry(ctx, "", r.XID) },
	} {
		_, err := op()
		require.NoError(t, err)
	}

	msgs := map[setpb.ContentKind][]byte{}
	add := func(der []byte) {
		sd, err := cms.ParseSignedData(der)
		require.NoError(t, err)
		for k := range setpb.ContentKind_name {
			if sd.ContentType().Equal(setproto.ContentType(setpb.ContentKind(k))) {
				msgs[setpb.ContentKind(k)] = der
			}
		}
	}
	for _, m := range append(e.merRec.Requests(), e.merRec.Responses()...) {
		switch m := m.(type) {
		case *setpb.Signed:
			add(m.GetCms())
		case *setpb.PurchaseRequest:
			add(m.GetDualSignature())
		}
	}
	// unseal tries the kinds an envelope may carry.
	unseal := func(der []byte, kinds []setpb.ContentKind, ent *system.Entity) ([]byte, setpb.ContentKind) {
		for _, k := range kinds {
			if inner, err := setproto.Unseal(der, k, ent.KXCert, ent.KXKey); err == nil {
				return inner, k
			}
		}
		t.Fatalf("envelope of none of %v", kinds)
		return nil, 0
	}
	for _, m := range e.gwRec.Requests() {
		inner, _ := unseal(m.(*setpb.Enveloped).GetCms(), append([]setpb.ContentKind{setpb.ContentKind_AUTH_REQUEST}, setproto.LifecycleKinds...), e.GatewayEnt)
		add(inner)
	}
	for _, m := range e.gwRec.Responses() {
		inner, kind := unseal(m.(*setpb.Enveloped).GetCms(), []setpb.ContentKind{setpb.ContentKind_AUTH_RESPONSE, setpb.ContentKind_LIFECYCLE_RESPONSE}, e.MerchantEnt)
		add(inner)
		if kind != setpb.ContentKind_AUTH_RESPONSE {
			continue
		}
		sd, err := cms.ParseSignedData(inner)
		require.NoError(t, err)
		res, err := setproto.ParseAuthResponse(sd.Content())
		require.NoError(t, err)
		add(res.GetCaptureToken())
	}
	// the storefront's payment initiation, signed like every other message
	ini, err := setproto.SignInitiation(ctx, e.MerchantEnt.Sign, initiationFor(time.Now().Truncate(time.Second)))
	require.NoError(t, err)
	add(ini)

	dir := t.TempDir()
	root := filepath.Join(dir, "root.pem")
	chain := filepath.Join(dir, "chain.pem")
	// openssl cms has no -untrusted: messages that name certificates by thumbprint
	// instead of carrying them are verified with the exported CA chain next to the root
	// (the chain still has to end at the root) and the signers' certificates as -certfile.
	require.NoError(t, os.WriteFile(root, pki.EncodePEM(append([]*x509.Certificate{e.H.Root.Certificate()}, e.CACerts()...)...), 0o600))
	leaves := []*x509.Certificate{e.MerchantEnt.Sign.Cert, e.GatewayEnt.Sign.Cert, e.Cardholders[0].Identity.Cert}
	require.NoError(t, os.WriteFile(chain, pki.EncodePEM(leaves...), 0o600))
	for k := range setpb.ContentKind_name {
		kind := setpb.ContentKind(k)
		if kind == setpb.ContentKind_CONTENT_KIND_UNSPECIFIED || kind == setpb.ContentKind_PINIT_REQ ||
			kind == setpb.ContentKind_ORDER_INFO || kind == setpb.ContentKind_PAYMENT_INSTRUCTIONS {
			continue // not signed on their own: OI and PI are covered by the dual signature
		}
		t.Run(kind.String(), func(t *testing.T) {
			der, ok := msgs[kind]
			require.True(t, ok, "no %s message captured", kind)
			f := filepath.Join(dir, strings.ToLower(kind.String())+".der")
			require.NoError(t, os.WriteFile(f, der, 0o600))
			out, err := exec.Command("openssl", "cms", "-verify", "-inform", "DER", "-in", f, "-CAfile", root,
				"-certfile", chain, "-purpose", "any", "-out", filepath.Join(dir, "content.bin")).CombinedOutput()
			require.NoError(t, err, "%s", out)
			assert.Contains(t, string(out), "Verification successful")
		})
	}
}
