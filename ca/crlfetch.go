package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/setpay/setpay/pki"
)

// hierarchyRoles are the CAs whose CRLs a service needs to verify any party.
var hierarchyRoles = []pki.Role{pki.RoleRoot, pki.RoleBrand, pki.RoleCCA, pki.RoleMCA, pki.RolePCA}

// ServiceCRLs is a pki.CRLFetcher that asks the CA service for the current CRL of
// every CA of the hierarchy: what a running gateway or merchant refreshes from, so
// that a revocation reaches it without a restart. The CRLs are not trusted here: the
// refresher checks each against the CA certificates it knows.
type ServiceCRLs struct {
	client *Client
	addr   string
}

// CRLFetcher returns the service's CRLs as a pki.CRLFetcher; addr names the service
// in logs and errors.
func (c *Client) CRLFetcher(addr string) ServiceCRLs { return ServiceCRLs{client: c, addr: addr} }

// FetchCRLs asks for every CA's CRL. It returns what it got together with the
// errors of the CAs it could not get, so one CA's trouble does not hold back the
// others' revocations.
func (s ServiceCRLs) FetchCRLs(ctx context.Context) ([]*x509.RevocationList, error) {
	var out []*x509.RevocationList
	var errs []error
	for _, r := range hierarchyRoles {
		crl, err := s.client.CRL(ctx, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s CRL: %w", r, err))
			continue
		}
		out = append(out, crl)
	}
	return out, errors.Join(errs...)
}

func (s ServiceCRLs) String() string { return "CA service " + s.addr }
