// Package systemtest holds the fixtures that tests of a whole in-process system share:
// the test cards, the merchant's offers, and a recorder of what a gRPC server received
// and answered.
package systemtest

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/system"
)

// Card indexes into Cards; tests rely on the order.
const (
	Alice   = iota // funded
	Bob            // 5.00 only: insufficient funds for every offer
	Carol          // blocked at the issuer
	Dave           // the issuer's expiry on file differs from the card's
	Erin           // credit limit 10.00
	Frank          // funded, for a second cardholder
	NumCard        // how many cards there are
)

// Cards returns the test cards (test PANs of the brands, each Luhn-valid), a fresh
// copy each call so no test changes another's.
func Cards() []system.CardSpec {
	return []system.CardSpec{
		Alice: {Name: "alice", PAN: "4111111111111111", Expiry: "203012", Balance: 1000_00},
		Bob:   {Name: "bob (poor)", PAN: "5555555555554444", Expiry: "203011", Balance: 5_00},
		Carol: {Name: "carol (blocked)", PAN: "4012888888881881", Expiry: "203010", Balance: 1000_00, Blocked: true},
		Dave:  {Name: "dave (expired on file)", PAN: "378282246310005", Expiry: "203009", LedgerExpiry: "202401", Balance: 1000_00},
		Erin:  {Name: "erin (limit)", PAN: "6011111111111117", Expiry: "203008", Balance: 1000_00, Limit: 10_00},
		Frank: {Name: "frank", PAN: "5105105105105100", Expiry: "203107", Balance: 1000_00},
	}
}

// Offers returns the merchant's test offers: an authorization-only book and a coffee
// sold with capture.
func Offers() []merchant.Offer {
	return []merchant.Offer{
		{ID: "book", Description: "The SET book, hardcover", Amount: 25_00, Currency: "EUR"},
		{ID: "coffee", Description: "Coffee beans 1kg", Amount: 15_00, Currency: "EUR", Sale: true},
	}
}

// Recorder keeps copies of every unary request a server received and every answer it
// gave, so tests can look into real messages or hand them to other tools.
type Recorder struct {
	mu   sync.Mutex
	reqs []proto.Message
	resp []proto.Message
}

// Option installs the recorder on a server (chained, so other interceptors stay).
func (r *Recorder) Option() grpc.ServerOption {
	return grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if m, ok := req.(proto.Message); ok {
			r.mu.Lock()
			r.reqs = append(r.reqs, proto.Clone(m))
			r.mu.Unlock()
		}
		out, err := h(ctx, req)
		if m, ok := out.(proto.Message); ok && err == nil {
			r.mu.Lock()
			r.resp = append(r.resp, proto.Clone(m))
			r.mu.Unlock()
		}
		return out, err
	})
}

// Requests returns the requests received so far, oldest first.
func (r *Recorder) Requests() []proto.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]proto.Message(nil), r.reqs...)
}

// Responses returns the successful answers given so far, oldest first.
func (r *Recorder) Responses() []proto.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]proto.Message(nil), r.resp...)
}
