package webui_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/system/systemtest"
	"github.com/setpay/setpay/wallet/webui"
)

// TestWalletUIPayDoubleSubmitPaysOnce: the Pay button sent twice at once (a double
// click, two tabs) pays once: one answer shows the result, the other says the
// payment is no longer waiting; the card is charged once and the history holds one
// purchase. (Before, both requests prepared and sent purchases of their own,
// racing on the pending payment's fields.)
func TestWalletUIPayDoubleSubmitPaysOnce(t *testing.T) {
	e := newUIEnv(t, true)
	b := e.browser(true)
	code, body := b.get(link(e.initiation("book")))
	require.Equal(t, http.StatusOK, code, body)
	pend := pendingRE.FindStringSubmatch(body)
	require.NotNil(t, pend)
	before, _ := e.b.Ledger.Balance(cards[systemtest.Alice].PAN)

	form := url.Values{"pending": {pend[1]}, "card": {"main"}, "passphrase": {pass}, "csrf": {b.csrf}}
	type answer struct {
		code int
		body string
	}
	answers := make([]answer, 2)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := b.c.PostForm(e.http.URL+"/pay", form)
			if !assert.NoError(t, err) {
				return
			}
			defer resp.Body.Close()
			raw, err := io.ReadAll(resp.Body)
			assert.NoError(t, err)
			answers[i] = answer{resp.StatusCode, string(raw)}
		}()
	}
	wg.Wait()
	var paid, gone int
	for _, a := range answers {
		switch a.code {
		case http.StatusOK:
			paid++
			assert.Contains(t, a.body, "Approved")
		case http.StatusGone:
			gone++
			assert.Contains(t, a.body, "not waiting for confirmation any more")
		default:
			t.Errorf("answer %d: %s", a.code, a.body)
		}
	}
	assert.Equal(t, 1, paid, "one answer shows the result")
	assert.Equal(t, 1, gone, "the other says the payment is not waiting any more")
	after, _ := e.b.Ledger.Balance(cards[systemtest.Alice].PAN)
	assert.Equal(t, before-25_00, after, "charged once")
	raw, err := os.ReadFile(filepath.Join(e.dir, webui.HistoryFile))
	require.NoError(t, err)
	var hist []map[string]any
	require.NoError(t, json.Unmarshal(raw, &hist))
	assert.Len(t, hist, 1, "one purchase in the history")
}
