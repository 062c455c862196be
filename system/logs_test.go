package system_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/softhsm/softhsmtest"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/system/systemtest"
)

// logSink is a goroutine-safe buffer of JSON log records.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logSink) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// records are the lines whose msg is msg and that have every attribute in want.
func (l *logSink) records(t *testing.T, msg string, want map[string]string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.text()), "\n") {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), "one JSON record per line: %q", line)
		if rec["msg"] != msg {
			continue
		}
		ok := true
		for k, v := range want {
			if got, has := rec[k]; !has || (v != "*" && got != v) {
				ok = false
			}
		}
		if ok {
			out = append(out, rec)
		}
	}
	return out
}

// TestOneLogLinePerRequestWithItsResult: at INFO every issuance, authorization,
// purchase and lifecycle request leaves one line carrying its result (issue 11,
// operator conventions); the gateway's shows the masked PAN and no line anywhere holds
// a full card number.
func TestOneLogLinePerRequestWithItsResult(t *testing.T) {
	ctx := context.Background()
	sink := &logSink{}
	logger := slog.New(slog.NewJSONHandler(sink, &slog.HandlerOptions{Level: slog.LevelInfo}))
	caTok, walTok := softhsmtest.NewToken(t), softhsmtest.NewToken(t)
	dir := t.TempDir()
	b, err := system.Build(ctx, system.Config{
		CARoot: caTok, CA: caTok, Gateway: softhsmtest.NewToken(t), Merchant: softhsmtest.NewToken(t), Wallet: walTok, TLS: walTok,
		GatewayDSN: "sqlite:" + filepath.Join(dir, "gw.db"), MerchantDSN: "sqlite:" + filepath.Join(dir, "mer.db"),
		GatewayID: "gw-1", MerchantID: "shop-1", Offers: systemtest.Offers(), Cards: cards, Logger: logger,
	}, nil, nil)
	require.NoError(t, err)
	t.Cleanup(b.Close)

	assert.NotEmpty(t, sink.records(t, "certificate issued", map[string]string{"result": "ISSUED", "serial": "*"}), "issuance")

	buy := func(card int) string {
		w, err := b.Wallet(card)
		require.NoError(t, err)
		r, err := w.Buy(ctx, "book")
		require.NoError(t, err)
		return r.XID
	}
	approved, declined := buy(systemtest.Alice), buy(systemtest.Bob)
	for _, tc := range []struct {
		xid, card, result string
	}{
		{approved, cards[systemtest.Alice].PAN, setpb.AuthResult_APPROVED.String()},
		{declined, cards[systemtest.Bob].PAN, setpb.AuthResult_DECLINED_INSUFFICIENT_FUNDS.String()},
	} {
		mask, err := store.MaskPAN(tc.card)
		require.NoError(t, err)
		assert.Len(t, sink.records(t, "authorization", map[string]string{"xid": tc.xid, "result": tc.result, "pan": mask}), 1,
			"the gateway's authorization line: xid, result, masked PAN")
		assert.Len(t, sink.records(t, "purchase", map[string]string{"xid": tc.xid, "result": tc.result}), 1,
			"the merchant's purchase line: xid, result")
	}

	kind := setpb.ContentKind_CAPTURE_REQUEST.String()
	_, err = b.Merchant.Capture(ctx, merchant.LifecycleInput{XID: approved, Amount: 99_00})
	require.Error(t, err, "more than was authorized")
	refused := sink.records(t, "lifecycle refused", map[string]string{"kind": kind, "result": "REFUSED", "reason": "*"})
	assert.Len(t, refused, 2, "a refused lifecycle request is logged with its reason, at the merchant and at the gateway")

	_, err = b.Merchant.Capture(ctx, merchant.LifecycleInput{XID: approved, Amount: 25_00})
	require.NoError(t, err)
	ok := sink.records(t, "lifecycle", map[string]string{"kind": kind, "xid": approved, "result": "OK"})
	assert.Len(t, ok, 2, "one line at the merchant, one at the gateway")

	all := sink.text()
	for _, c := range cards {
		assert.NotContains(t, all, c.PAN, "no log line holds a full PAN")
	}
}
