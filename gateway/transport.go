package gateway

import (
	"context"
	"crypto/x509"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
)

// TLSClientName is the subject CN of a merchant's TLS client certificate for the
// gateway: "merchant:<merchant id>", the same name as its SET certificates.
func TLSClientName(merchantID string) string { return pki.EntityCN(pki.RoleMerchant, merchantID) }

// transportKey carries the merchant id of the caller's TLS client certificate.
type transportKey struct{}

// ServerOptions are the options of every gRPC server that serves the gateway to
// merchants: an interceptor that admits only callers whose verified TLS client
// certificate names a merchant ("merchant:<id>", client authentication only), and
// passes that id on, so that the gateway refuses a request signed by any other
// merchant. A certificate the TLS CA issued for anything else (a "probe", a
// server) gets nothing, before any key is used for it.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		if !strings.HasPrefix(info.FullMethod, "/"+setpb.Gateway_ServiceDesc.ServiceName+"/") {
			return next(ctx, req) // health checks and the like
		}
		id, err := tlsMerchant(ctx)
		if err != nil {
			return nil, setproto.Status(err)
		}
		return next(context.WithValue(ctx, transportKey{}, id), req)
	})}
}

// tlsMerchant is the merchant a gRPC caller's verified TLS client certificate names.
func tlsMerchant(ctx context.Context) (string, error) {
	p, found := peer.FromContext(ctx)
	if !found || p == nil {
		return "", setproto.Errorf(setpb.Reason_CERT_WRONG_ROLE, "the gateway serves merchants with a verified TLS client certificate only")
	}
	info, isTLS := p.AuthInfo.(credentials.TLSInfo)
	if !isTLS || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return "", setproto.Errorf(setpb.Reason_CERT_WRONG_ROLE, "the gateway serves merchants with a verified TLS client certificate only")
	}
	leaf := info.State.VerifiedChains[0][0]
	id, named := strings.CutPrefix(leaf.Subject.CommonName, pki.RoleMerchant.String()+":")
	if !named || pki.ValidateEntityID(id) != nil || !clientOnly(leaf) {
		return "", setproto.Errorf(setpb.Reason_CERT_WRONG_ROLE, "TLS client certificate %q names no merchant (want CN %q, client authentication only)",
			leaf.Subject.CommonName, TLSClientName("<id>"))
	}
	return id, nil
}

// transportMerchant is the id ServerOptions found on the caller's TLS certificate;
// ok is false for calls that did not come through it (in process).
func transportMerchant(ctx context.Context) (id string, ok bool, err error) {
	id, ok = ctx.Value(transportKey{}).(string)
	return id, ok, nil
}

func clientOnly(c *x509.Certificate) bool {
	return len(c.ExtKeyUsage) == 1 && c.ExtKeyUsage[0] == x509.ExtKeyUsageClientAuth
}

// checkSigner: the merchant that signed a request must be the one the TLS client
// certificate names, so a merchant's TLS key cannot carry another merchant's
// requests (nor can a TLS certificate of the CA for anything else, a "probe", carry
// any).
func checkSigner(tlsID string, fromTLS bool, signer string) error {
	if fromTLS && tlsID != signer {
		return setproto.Errorf(setpb.Reason_MERCHANT_MISMATCH, "request signed by merchant %q over the TLS connection of %q", signer, tlsID)
	}
	return nil
}
