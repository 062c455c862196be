package webui

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/setpay/setpay/internal/secretfile"
	"github.com/setpay/setpay/wallet"
)

// HistoryFile is the purchase history in the wallet directory: JSON, mode 0600, no
// card number (the masked one only).
const HistoryFile = "history.json"

const (
	maxHistory      = 1000
	maxHistoryBytes = 4 << 20
)

func historyPath(dir string) string { return filepath.Join(dir, HistoryFile) }

// entry is one purchase in the history.
type entry struct {
	XID         string    `json:"xid"`
	Time        time.Time `json:"time"`
	Merchant    string    `json:"merchant"`
	Endpoint    string    `json:"endpoint"`
	ServerName  string    `json:"server_name"`
	Gateway     string    `json:"gateway"`
	Description string    `json:"description"`
	OfferID     string    `json:"offer_id"`
	OrderRef    string    `json:"order_ref,omitempty"`
	Amount      int64     `json:"amount"`
	Currency    string    `json:"currency"`
	Card        string    `json:"card"`   // the card's id in the wallet
	Masked      string    `json:"masked"` // pki.MaskPAN
	Result      string    `json:"result"`
	Approved    bool      `json:"approved"`
	AuthCode    string    `json:"auth_code,omitempty"`
	Captured    bool      `json:"captured"`
	State       string    `json:"state,omitempty"` // from the last inquiry
	StateAt     time.Time `json:"state_at,omitzero"`
}

type history struct {
	path string
	mu   sync.Mutex
}

func (h *history) read() ([]entry, error) {
	b, err := secretfile.Read(h.path, maxHistoryBytes)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	var es []entry
	if err := json.Unmarshal(b, &es); err != nil {
		return nil, fmt.Errorf("history: %s: %w", h.path, err)
	}
	return es, nil
}

func (h *history) list() ([]entry, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.read()
}

func (h *history) update(f func([]entry) []entry) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	es, err := h.read()
	if err != nil {
		return err
	}
	es = f(es)
	if len(es) > maxHistory {
		es = es[len(es)-maxHistory:]
	}
	b, err := json.MarshalIndent(es, "", "  ")
	if err != nil {
		return err
	}
	return secretfile.Write(h.path, append(b, '\n'))
}

func (h *history) add(e entry) error {
	return h.update(func(es []entry) []entry { return append(es, e) })
}

func (h *history) find(xid string) (*entry, error) {
	es, err := h.list()
	if err != nil {
		return nil, err
	}
	for i := range es {
		if es[i].XID == xid {
			return &es[i], nil
		}
	}
	return nil, nil
}

func (s *Server) handleHistory(w http.ResponseWriter, r *http.Request, sess *session) {
	es, err := s.hist.list()
	if err != nil {
		s.internal(w, r, sess, err)
		return
	}
	for i, j := 0, len(es)-1; i < j; i, j = i+1, j-1 {
		es[i], es[j] = es[j], es[i]
	}
	s.render(w, r, sess, http.StatusOK, "history", page{Title: "Purchase history", Data: es})
}

func (s *Server) handlePurchase(w http.ResponseWriter, r *http.Request, sess *session) {
	e, err := s.hist.find(r.URL.Query().Get("xid"))
	if err != nil {
		s.internal(w, r, sess, err)
		return
	}
	if e == nil {
		s.fail(w, r, sess, http.StatusNotFound, page{Title: "No such purchase", Message: "The history holds no purchase with this transaction id.", Back: "/history"})
		return
	}
	s.render(w, r, sess, http.StatusOK, "purchase", page{Title: "Purchase " + e.XID, Data: e})
}

// handleInquire asks the merchant for the purchase's state, signed with the card's
// key (so the passphrase unlocks it), and records the verified answer.
func (s *Server) handleInquire(w http.ResponseWriter, r *http.Request, sess *session) {
	e, err := s.hist.find(r.PostFormValue("xid"))
	if err != nil {
		s.internal(w, r, sess, err)
		return
	}
	if e == nil {
		s.fail(w, r, sess, http.StatusNotFound, page{Title: "No such purchase", Message: "The history holds no purchase with this transaction id.", Back: "/history"})
		return
	}
	again := func(status int, msg string) {
		s.render(w, r, sess, status, "purchase", page{Title: "Purchase " + e.XID, Message: msg, Data: e})
	}
	c, err := s.card(e.Card)
	if err != nil {
		again(http.StatusConflict, "The card this purchase was paid with is no longer in the wallet.")
		return
	}
	ctx, cancel := s.rpcContext(r)
	defer cancel()
	id, err := wallet.Load(ctx, c.Dir, []byte(r.PostFormValue("passphrase")), wallet.LoadOptions{Find: s.cfg.FindKey, Logger: s.cfg.Logger})
	if err != nil {
		if errors.Is(err, wallet.ErrWrongPassphrase) {
			again(http.StatusForbidden, "Passphrase: wrong passphrase for card "+c.Label()+". Enter it again.")
			return
		}
		again(http.StatusUnprocessableEntity, "The card could not be unlocked: "+err.Error())
		return
	}
	ts, err := s.trustFor(c)
	if err != nil {
		s.internal(w, r, sess, err)
		return
	}
	mc, err := s.cfg.Merchants(ctx, e.Endpoint, e.ServerName)
	if err != nil {
		s.refuse(w, r, sess, "inquiry", &endpointError{e.Endpoint, err})
		return
	}
	wl, err := wallet.New(wallet.Config{Identity: *id, Trust: ts.trust, Merchant: mc, Brand: s.cfg.Brand, Logger: s.cfg.Logger})
	if err != nil {
		s.internal(w, r, sess, err)
		return
	}
	s.refreshCRLs(ctx)
	res, err := wl.Inquire(ctx, e.XID)
	if err != nil {
		s.refuse(w, r, sess, "inquiry", &endpointError{e.Endpoint, err})
		return
	}
	now := s.cfg.Clock()
	if err := s.hist.update(func(es []entry) []entry {
		for i := range es {
			if es[i].XID == e.XID {
				es[i].State, es[i].StateAt = res.GetState(), now
			}
		}
		return es
	}); err != nil {
		s.internal(w, r, sess, err)
		return
	}
	e.State, e.StateAt = res.GetState(), now
	s.render(w, r, sess, http.StatusOK, "purchase", page{Title: "Purchase " + e.XID, Flash: "The merchant says: " + res.GetState() + ".", Data: e})
}
