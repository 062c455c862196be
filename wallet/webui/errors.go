package webui

import (
	"errors"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
)

// unreachable reports whether err is a failure to reach the merchant (no answer),
// as opposed to a refusal the merchant signed or sent.
func unreachable(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if st, ok := e.(interface{ GRPCStatus() *status.Status }); ok {
			c := st.GRPCStatus().Code()
			if c != codes.Unavailable && c != codes.DeadlineExceeded {
				return false
			}
			for _, d := range st.GRPCStatus().Details() {
				if _, ok := d.(*setpb.ErrorDetail); ok {
					return false // the merchant answered, with a SET reason
				}
			}
			return true
		}
	}
	return errors.Is(err, errDial)
}

var errDial = errors.New("cannot connect")

// refuse renders a refusal: what happened in words, for the stage the wallet was
// in ("initiation": reading the shop's initiation; "connect"/"offer": asking the
// merchant; "purchase"; "inquiry"), with the technical cause below it.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, sess *session, stage string, err error) {
	title, msg, code := explain(stage, err)
	p := page{Title: title, Message: msg, Detail: err.Error()}
	if stage == "inquiry" {
		p.Back = "/history"
	}
	s.fail(w, r, sess, code, p)
}

func explain(stage string, err error) (title, msg string, code int) {
	const nothing = " Nothing was paid."
	if stage == "connect" || unreachable(err) {
		switch stage {
		case "purchase":
			return "No answer from the merchant", "The merchant's payment service did not answer the purchase. Try again: the wallet sends the same request, which the merchant answers once, so you cannot pay twice.", http.StatusBadGateway
		case "inquiry":
			return "Merchant unreachable", "The merchant's payment service cannot be reached: no answer from it. Try again later.", http.StatusBadGateway
		}
		return "Merchant unreachable", "The merchant's payment service cannot be reached: no answer from it. Nothing was paid. Try again later, or ask the shop.", http.StatusBadGateway
	}
	who := "the merchant"
	switch stage {
	case "initiation":
		who = "the shop's payment initiation"
	case "offer":
		who = "the merchant's signed offer"
	case "purchase":
		who = "the merchant's answer to the purchase"
	case "inquiry":
		who = "the merchant's answer to the inquiry"
	}
	tail := nothing
	if stage == "inquiry" {
		tail = ""
	}
	switch setproto.ReasonOf(err) {
	case setpb.Reason_BAD_SIGNATURE:
		if stage == "initiation" {
			return "Tampered payment initiation", "This payment initiation has been altered: the merchant's signature on it does not verify. Do not pay with it: go back to the shop and start the checkout again." + tail, http.StatusUnprocessableEntity
		}
		return "Bad signature", "The signature on " + who + " does not verify." + tail, http.StatusUnprocessableEntity
	case setpb.Reason_MALFORMED:
		if stage == "initiation" {
			return "Damaged payment initiation", "This is not a readable payment initiation (.setpay): it is damaged, cut short or altered. Go back to the shop and start the checkout again." + tail, http.StatusUnprocessableEntity
		}
		return "Malformed answer", "The wallet cannot read " + who + "." + tail, http.StatusUnprocessableEntity
	case setpb.Reason_INITIATION_EXPIRED:
		return "Expired payment initiation", "This payment initiation has expired (or is dated in the future). Go back to the shop for a new one." + tail, http.StatusUnprocessableEntity
	case setpb.Reason_CERT_REVOKED:
		return "Revoked certificate", "A certificate of " + who + " has been revoked by its certificate authority: the merchant or its gateway is no longer trusted. Do not pay." + tail, http.StatusUnprocessableEntity
	case setpb.Reason_CERT_EXPIRED:
		return "Expired certificate", "A certificate of " + who + " has expired or is not yet valid." + tail, http.StatusUnprocessableEntity
	case setpb.Reason_CERT_UNTRUSTED:
		if pki.ReasonOf(err) == pki.ReasonCRLUnavailable {
			return "Revocation status unknown", "The wallet has no current revocation list for a CA of " + who + ", so it cannot tell whether the merchant is still trusted. Check the wallet's --crls files or its CA connection." + tail, http.StatusUnprocessableEntity
		}
		return "Untrusted merchant", "The certificate of " + who + " does not lead to this wallet's trusted SET root: this wallet does not trust this merchant. Do not pay." + tail, http.StatusUnprocessableEntity
	case setpb.Reason_CERT_WRONG_ROLE:
		return "Wrong certificate", "The certificate of " + who + " is not a merchant's (or gateway's) payment certificate." + tail, http.StatusUnprocessableEntity
	case setpb.Reason_MERCHANT_MISMATCH:
		return "Merchant mismatch", "The merchant named in " + who + " is not the merchant that signed it." + tail, http.StatusUnprocessableEntity
	case setpb.Reason_AMOUNT_MISMATCH:
		return "Amount mismatch", "The amount in " + who + " differs from what you were shown." + tail, http.StatusUnprocessableEntity
	case setpb.Reason_UNSUPPORTED:
		return "Not supported", "The wallet or the merchant does not support this (" + who + "): another version, brand or offer." + tail, http.StatusUnprocessableEntity
	case setpb.Reason_GATEWAY_UNAVAILABLE:
		return "Payment gateway unavailable", "The merchant could not reach its payment gateway. Try again: the wallet sends the same request." + tail, http.StatusBadGateway
	case setpb.Reason_UNKNOWN_TRANSACTION:
		return "Unknown purchase", "The merchant does not know this purchase.", http.StatusNotFound
	}
	if stage == "initiation" {
		return "Payment initiation refused", "The wallet refused this payment initiation." + tail, http.StatusUnprocessableEntity
	}
	return "Refused", "The wallet or the merchant refused this (" + who + ")." + tail, http.StatusUnprocessableEntity
}
