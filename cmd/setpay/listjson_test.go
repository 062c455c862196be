package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/pki"
)

// jsonOut parses a command's stdout as JSON into v.
func jsonOut(t *testing.T, r result, v any) {
	t.Helper()
	require.Zero(t, r.code, "%s", r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), v), "valid JSON on stdout: %q", r.stdout)
}

// TestListCommandsPrintJSON: `hsm list` (tokens, and a token's objects) and `ca
// approve` (the held requests, and a decision) print JSON with --json (issue 11,
// operator conventions).
func TestListCommandsPrintJSON(t *testing.T) {
	home := t.TempDir()
	noConf := []string{"SOFTHSM2_CONF"}
	run := func(args ...string) result { t.Helper(); return runSetpay(t, home, noConf, args...) }
	require.Zero(t, run("hsm", "init-softhsm", "--softhsm-dir", "./softhsm", "--tokens", "setpay-root,setpay-ca").code)
	r := run("ca", "init", "--softhsm-dir", "./softhsm", "--ca-dir", "./ca", "--store", "sqlite:./setpay.db")
	require.Zero(t, r.code, "%s", r)

	t.Run("hsm list tokens", func(t *testing.T) {
		var tokens []map[string]any
		jsonOut(t, run("hsm", "list", "--softhsm-dir", "./softhsm", "--json"), &tokens)
		labels := map[string]map[string]any{}
		for _, tok := range tokens {
			for _, k := range []string{"slot", "label", "serial", "manufacturer", "model", "initialized"} {
				assert.Contains(t, tok, k)
			}
			labels[tok["label"].(string)] = tok
		}
		require.Contains(t, labels, "setpay-ca")
		assert.Equal(t, true, labels["setpay-ca"]["initialized"])
		assert.NotEmpty(t, labels["setpay-ca"]["serial"])
		assert.IsType(t, float64(0), labels["setpay-ca"]["slot"], "the slot is a number")
	})
	t.Run("hsm list objects", func(t *testing.T) {
		var objs []objectJSON
		jsonOut(t, run("hsm", "list", "--softhsm-dir", "./softhsm", "--token", "setpay-ca", "--json"), &objs)
		var pca *objectJSON
		for i, o := range objs {
			if o.Label == "setpay-pca" && o.Class == "private" {
				pca = &objs[i]
			}
		}
		require.NotNil(t, pca, "the PCA's private key is listed: %+v", objs)
		assert.Equal(t, "EC", pca.Type)
		assert.Contains(t, pca.Flags, "sensitive")
		assert.NotContains(t, pca.Flags, "extractable")
		assert.True(t, strings.HasPrefix(pca.URI, "pkcs11:token=setpay-ca;object=setpay-pca;"), pca.URI)
		assert.NotEmpty(t, pca.ID)
	})
	t.Run("ca approve", func(t *testing.T) {
		var list []map[string]any
		jsonOut(t, run("ca", "approve", "--softhsm-dir", "./softhsm", "--ca-dir", "./ca", "--json"), &list)
		assert.Empty(t, list, "no request held: an empty array")
		assert.Equal(t, "[]", strings.TrimSpace(run("ca", "approve", "--softhsm-dir", "./softhsm", "--ca-dir", "./ca", "--json").stdout))

		q, err := ca.NewPendingQueue(filepath.Join(home, "ca", "pending"))
		require.NoError(t, err)
		id, err := q.Add(ca.AcceptedEntity{Role: pki.RoleMerchant, ID: "shop-7"}, time.Now())
		require.NoError(t, err)
		var held []pendingJSON
		jsonOut(t, run("ca", "approve", "--softhsm-dir", "./softhsm", "--ca-dir", "./ca", "--json"), &held)
		require.Len(t, held, 1)
		assert.Equal(t, id, held[0].ID)
		assert.Equal(t, ca.PendingWaiting, held[0].State)
		assert.Equal(t, "merchant", held[0].Role)
		assert.Equal(t, "shop-7", held[0].EntityID)
		assert.False(t, held[0].CreatedAt.IsZero())
		assert.Nil(t, held[0].DecidedAt)

		var decided pendingJSON
		jsonOut(t, run("ca", "approve", "--softhsm-dir", "./softhsm", "--ca-dir", "./ca", "--request", id, "--reject", "--json"), &decided)
		assert.Equal(t, id, decided.ID)
		assert.Equal(t, ca.PendingRejected, decided.State)
		require.NotNil(t, decided.DecidedAt)
	})
}
