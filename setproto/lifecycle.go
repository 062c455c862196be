package setproto

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto/setpb"
)

// MaxItems bounds the items and totals listed in one lifecycle answer.
const MaxItems = 4096

// LifecycleRequest is what every lifecycle request has in common (the generated
// getters of CaptureRequest, AuthReversalRequest, ... satisfy it).
type LifecycleRequest interface {
	proto.Message
	GetRrpid() string
	GetMerchantId() string
	GetMerchantKxThumbprint() []byte
}

// LifecycleKinds are the content kinds of lifecycle requests.
var LifecycleKinds = []setpb.ContentKind{
	setpb.ContentKind_CAPTURE_REQUEST, setpb.ContentKind_AUTH_REVERSAL_REQUEST, setpb.ContentKind_CAPTURE_REVERSAL_REQUEST,
	setpb.ContentKind_CREDIT_REQUEST, setpb.ContentKind_CREDIT_REVERSAL_REQUEST, setpb.ContentKind_BATCH_ADMIN_REQUEST,
	setpb.ContentKind_GATEWAY_INQUIRY_REQUEST,
}

func checkHeader(xid string, needXID bool, m LifecycleRequest) error {
	if needXID {
		if err := checkID("xid", xid); err != nil {
			return err
		}
	}
	return first(checkID("rrpid", m.GetRrpid()), pki.ValidateEntityID(m.GetMerchantId()),
		checkHash("merchant_kx_thumbprint", m.GetMerchantKxThumbprint()))
}

func checkOptionalID(what, v string) error {
	if v == "" {
		return nil
	}
	return checkID(what, v)
}

// ValidateLifecycleRequest checks the fields of a decoded lifecycle request.
func ValidateLifecycleRequest(m LifecycleRequest) error {
	var err error
	switch r := m.(type) {
	case *setpb.CaptureRequest:
		err = first(checkHeader(r.GetXid(), true, r), checkMoney(r.GetAmount(), r.GetCurrency()),
			checkOptionalID("batch_id", r.GetBatchId()))
		if err == nil && (len(r.GetCaptureToken()) == 0 || len(r.GetCaptureToken()) > MaxMessageSize) {
			err = fmt.Errorf("capture_token missing or too large")
		}
	case *setpb.AuthReversalRequest:
		err = first(checkHeader(r.GetXid(), true, r), checkMoneyOrZero(r.GetAmount(), r.GetCurrency()))
		if err == nil && r.GetAmount() < 0 {
			err = fmt.Errorf("amount must not be negative")
		}
	case *setpb.CaptureReversalRequest:
		err = first(checkHeader(r.GetXid(), true, r), checkID("capture_id", r.GetCaptureId()),
			checkMoney(r.GetAmount(), r.GetCurrency()), checkOptionalID("batch_id", r.GetBatchId()))
	case *setpb.CreditRequest:
		err = first(checkHeader(r.GetXid(), true, r), checkMoney(r.GetAmount(), r.GetCurrency()),
			checkOptionalID("batch_id", r.GetBatchId()))
	case *setpb.CreditReversalRequest:
		err = first(checkHeader(r.GetXid(), true, r), checkID("credit_id", r.GetCreditId()),
			checkMoney(r.GetAmount(), r.GetCurrency()), checkOptionalID("batch_id", r.GetBatchId()))
	case *setpb.BatchAdminRequest:
		err = first(checkHeader("", false, r), checkID("batch_id", r.GetBatchId()))
		if err == nil {
			switch r.GetAction() {
			case setpb.BatchAction_BATCH_OPEN, setpb.BatchAction_BATCH_CLOSE, setpb.BatchAction_BATCH_QUERY:
			default:
				err = fmt.Errorf("batch action %d unknown", r.GetAction())
			}
		}
	case *setpb.GatewayInquiryRequest:
		err = checkHeader(r.GetXid(), true, r)
	default:
		return Errorf(setpb.Reason_MALFORMED, "%T is not a lifecycle request", m)
	}
	if err != nil {
		return malformed(m, "%v", err)
	}
	return nil
}

// NewLifecycleRequest returns an empty request message of a lifecycle kind.
func NewLifecycleRequest(kind setpb.ContentKind) (LifecycleRequest, error) {
	switch kind {
	case setpb.ContentKind_CAPTURE_REQUEST:
		return &setpb.CaptureRequest{}, nil
	case setpb.ContentKind_AUTH_REVERSAL_REQUEST:
		return &setpb.AuthReversalRequest{}, nil
	case setpb.ContentKind_CAPTURE_REVERSAL_REQUEST:
		return &setpb.CaptureReversalRequest{}, nil
	case setpb.ContentKind_CREDIT_REQUEST:
		return &setpb.CreditRequest{}, nil
	case setpb.ContentKind_CREDIT_REVERSAL_REQUEST:
		return &setpb.CreditReversalRequest{}, nil
	case setpb.ContentKind_BATCH_ADMIN_REQUEST:
		return &setpb.BatchAdminRequest{}, nil
	case setpb.ContentKind_GATEWAY_INQUIRY_REQUEST:
		return &setpb.GatewayInquiryRequest{}, nil
	}
	return nil, Errorf(setpb.Reason_UNSUPPORTED, "%s is not a lifecycle request kind", kind)
}

// KindOf is the content kind of a lifecycle request message.
func KindOf(m LifecycleRequest) setpb.ContentKind {
	switch m.(type) {
	case *setpb.CaptureRequest:
		return setpb.ContentKind_CAPTURE_REQUEST
	case *setpb.AuthReversalRequest:
		return setpb.ContentKind_AUTH_REVERSAL_REQUEST
	case *setpb.CaptureReversalRequest:
		return setpb.ContentKind_CAPTURE_REVERSAL_REQUEST
	case *setpb.CreditRequest:
		return setpb.ContentKind_CREDIT_REQUEST
	case *setpb.CreditReversalRequest:
		return setpb.ContentKind_CREDIT_REVERSAL_REQUEST
	case *setpb.BatchAdminRequest:
		return setpb.ContentKind_BATCH_ADMIN_REQUEST
	case *setpb.GatewayInquiryRequest:
		return setpb.ContentKind_GATEWAY_INQUIRY_REQUEST
	}
	return setpb.ContentKind_CONTENT_KIND_UNSPECIFIED
}

// ParseLifecycleRequest decodes and validates the content of a lifecycle request of
// the given kind.
func ParseLifecycleRequest(kind setpb.ContentKind, b []byte) (LifecycleRequest, error) {
	m, err := NewLifecycleRequest(kind)
	if err != nil {
		return nil, err
	}
	if err := decode(b, m); err != nil {
		return nil, err
	}
	return m, ValidateLifecycleRequest(m)
}

func checkItem(it *setpb.Item) error {
	switch it.GetType() {
	case "capture", "credit", "auth_reversal", "capture_reversal", "credit_reversal":
	default:
		return fmt.Errorf("item type %q unknown", it.GetType())
	}
	if it.GetReversedAmount() < 0 || it.GetReversedAmount() > it.GetAmount() {
		return fmt.Errorf("item %q reversed amount out of range", it.GetId())
	}
	return first(checkID("item id", it.GetId()), checkID("item xid", it.GetXid()),
		checkMoney(it.GetAmount(), it.GetCurrency()), checkOptionalID("item batch_id", it.GetBatchId()),
		checkOptionalID("item target_id", it.GetTargetId()))
}

func checkTotal(v int64) error {
	if v < 0 || v > MaxAmount {
		return fmt.Errorf("total %d out of range", v)
	}
	return nil
}

// ParseLifecycleResponse decodes and validates a gateway's lifecycle answer.
func ParseLifecycleResponse(b []byte) (*setpb.LifecycleResponse, error) {
	m := &setpb.LifecycleResponse{}
	if err := decode(b, m); err != nil {
		return nil, err
	}
	if _, err := NewLifecycleRequest(m.GetRequestKind()); err != nil {
		return nil, malformed(m, "request kind %s", m.GetRequestKind())
	}
	err := first(checkID("rrpid", m.GetRrpid()), pki.ValidateEntityID(m.GetMerchantId()),
		checkOptionalID("xid", m.GetXid()), checkOptionalID("item_id", m.GetItemId()))
	if err == nil && m.GetAmount() != 0 {
		err = checkMoney(m.GetAmount(), m.GetCurrency())
	}
	if t := m.GetTransaction(); err == nil && t != nil {
		err = first(checkID("transaction xid", t.GetXid()), checkID("status", t.GetStatus()),
			checkTotal(t.GetAmount()), checkTotal(t.GetAuthorizedAmount()), checkTotal(t.GetCapturedTotal()),
			checkTotal(t.GetCreditedTotal()), checkMoneyOrZero(t.GetAmount(), t.GetCurrency()),
			checkText("auth_code", t.GetAuthCode(), 16))
		if err == nil && len(t.GetItems()) > MaxItems {
			err = fmt.Errorf("more than %d items", MaxItems)
		}
		for _, it := range t.GetItems() {
			if err == nil {
				err = checkItem(it)
			}
		}
	}
	if b := m.GetBatch(); err == nil && b != nil {
		err = first(checkID("batch_id", b.GetBatchId()), checkID("batch status", b.GetStatus()), checkTotal(b.GetItemCount()))
		if err == nil && (len(b.GetItems()) > MaxItems || len(b.GetTotals()) > MaxItems) {
			err = fmt.Errorf("more than %d items", MaxItems)
		}
		for _, it := range b.GetItems() {
			if err == nil {
				err = checkItem(it)
			}
		}
		for _, bt := range b.GetTotals() {
			if err == nil {
				err = first(checkID("total type", bt.GetType()), checkMoney(1, bt.GetCurrency()), checkTotal(bt.GetAmount()), checkTotal(bt.GetCount()))
			}
		}
	}
	if err != nil {
		return nil, malformed(m, "%v", err)
	}
	return m, nil
}

// ParseGatewayStoredAnswer decodes a gateway's stored lifecycle answer.
func ParseGatewayStoredAnswer(b []byte) (*setpb.GatewayStoredAnswer, error) {
	m := &setpb.GatewayStoredAnswer{}
	if err := decode(b, m); err != nil {
		return nil, err
	}
	if (len(m.GetEnvelope()) == 0) == (m.GetError() == nil) {
		return nil, malformed(m, "exactly one of envelope and error")
	}
	return m, nil
}
