package interop_test

import (
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/testenv"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/softhsm/softhsmtest"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/system/systemtest"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

// TestInterop runs the checks that need no special server options on one bed:
// building one costs seconds of token key generation. The subtests leave the bed
// usable for the next (refusals write nothing, acceptances are fresh purchases).
func TestInterop(t *testing.T) {
	b := newBed(t, bedOptions{})
	t.Run("OpenSSL", func(t *testing.T) { testOpenSSL(t, b) })
	t.Run("OpenSC", func(t *testing.T) { testOpenSC(t, b) })
	t.Run("HostileClient", func(t *testing.T) { testHostileClient(t, b) })
	t.Run("EveryGatewayMethod", func(t *testing.T) { testEveryGatewayMethodRefusesGarbage(t, b) })
	t.Run("ServerLimits", func(t *testing.T) { testServerLimits(t, b) })
	t.Run("CrossMerchant", func(t *testing.T) { testCrossMerchant(t, b) })
	t.Run("HostileGateway", func(t *testing.T) { testHostileGateway(t, b) })
	t.Run("GatewayClientIdentity", func(t *testing.T) { testGatewayClientIdentity(t, b) })
}

// bed is a running system plus the tokens and database paths the tests look into.
type bed struct {
	*system.Bed
	gwRec, merRec                *systemtest.Recorder
	caTok, gwTok, merTok, walTok *hsm.Token
	gwDB, merDB                  string
	gwRO, merRO                  *sql.DB // read-only connections for counting rows
}

type bedOptions struct {
	gw, mer []grpc.ServerOption
}

func newBed(t testing.TB, o bedOptions) *bed {
	t.Helper()
	dir := t.TempDir()
	b := &bed{gwRec: &systemtest.Recorder{}, merRec: &systemtest.Recorder{}, caTok: softhsmtest.NewToken(t), gwTok: softhsmtest.NewToken(t),
		merTok: softhsmtest.NewToken(t), walTok: softhsmtest.NewToken(t),
		gwDB: filepath.Join(dir, "gw.db"), merDB: filepath.Join(dir, "mer.db")}
	tb, err := system.Build(context.Background(), system.Config{
		CARoot: b.caTok, CA: b.caTok, Gateway: b.gwTok, Merchant: b.merTok, Wallet: b.walTok, TLS: b.walTok,
		GatewayDSN: "sqlite:" + b.gwDB, MerchantDSN: "sqlite:" + b.merDB,
		GatewayID: "gw-1", MerchantID: "shop-1", Offers: systemtest.Offers(), Cards: systemtest.Cards(),
	}, append([]grpc.ServerOption{b.gwRec.Option()}, o.gw...), append([]grpc.ServerOption{b.merRec.Option()}, o.mer...))
	require.NoError(t, err)
	t.Cleanup(tb.Close)
	b.Bed = tb
	for _, c := range []struct {
		path string
		db   **sql.DB
	}{{b.gwDB, &b.gwRO}, {b.merDB, &b.merRO}} {
		db, err := sql.Open("sqlite", "file:"+c.path+"?mode=ro&_pragma=busy_timeout(10000)")
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		*c.db = db
	}
	return b
}

// buy runs one purchase end to end and fails the test if it does not complete.
func (b *bed) buy(t testing.TB, card int, offer string) {
	t.Helper()
	w, err := b.Wallet(card)
	require.NoError(t, err)
	_, err = w.Buy(context.Background(), offer)
	require.NoError(t, err)
}

// countRows counts the rows of every table of a SQLite store, read through a
// separate read-only connection: what a refused request must leave unchanged.
func countRows(t testing.TB, db *sql.DB) map[string]int64 {
	t.Helper()
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`)
	require.NoError(t, err)
	var names []string
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		names = append(names, n)
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	require.NotEmpty(t, names)
	out := map[string]int64{}
	for _, n := range names {
		var c int64
		require.NoError(t, db.QueryRow(`SELECT count(*) FROM "`+n+`"`).Scan(&c))
		out[n] = c
	}
	return out
}

// snapshot is the state a refused request must not change.
type snapshot struct {
	gwRows, merRows map[string]int64
	gwAudit         int64 // last audit sequence number
	merAudit        int64
	goroutines      goleak.Option // the goroutines running at the snapshot
}

func (b *bed) snapshot(t testing.TB) snapshot {
	t.Helper()
	return snapshot{gwRows: countRows(t, b.gwRO), merRows: countRows(t, b.merRO), gwAudit: lastAudit(t, b.GatewayDB),
		merAudit: lastAudit(t, b.MerchantDB), goroutines: goleak.IgnoreCurrent()}
}

// lastAudit verifies a store's audit chain and returns its last sequence number.
func lastAudit(t testing.TB, db *store.Store) int64 {
	t.Helper()
	ctx := context.Background()
	_, err := db.VerifyAudit(ctx)
	require.NoError(t, err)
	var last int64
	for {
		recs, err := db.ListAudit(ctx, last, 10000)
		require.NoError(t, err)
		if len(recs) == 0 {
			return last
		}
		last = recs[len(recs)-1].Seq
	}
}

// requireUnchanged checks that nothing was written and nothing leaked since s. The
// only records a refusal may add are audit records of the key-exchange key
// operations the refused request cost (the gateway audits every use of its key,
// refusals included), and the audit chain must still verify.
func (b *bed) requireUnchanged(t *testing.T, s snapshot) {
	t.Helper()
	ctx := context.Background()
	after := countRows(t, b.gwRO)
	withoutAudit := func(m map[string]int64) map[string]int64 {
		m = maps.Clone(m)
		delete(m, "audit_log")
		return m
	}
	assert.Equal(t, withoutAudit(s.gwRows), withoutAudit(after), "gateway store rows")
	assert.Equal(t, s.merRows, countRows(t, b.merRO), "merchant store rows")
	for name, c := range map[string]struct {
		db    *store.Store
		since int64
	}{"gateway": {b.GatewayDB, s.gwAudit}, "merchant": {b.MerchantDB, s.merAudit}} {
		lastAudit(t, c.db) // the chain verifies
		recs, err := c.db.ListAudit(ctx, c.since, 10000)
		require.NoError(t, err)
		for _, r := range recs {
			assert.True(t, strings.HasPrefix(r.Details, "refused: ") && strings.HasPrefix(r.Purpose, "decrypt"),
				"%s audit record %d of a refused request is not a refused decryption: %q %q", name, r.Seq, r.Purpose, r.Details)
		}
	}
	// goleak retries for a while: finished RPCs unwind asynchronously.
	assert.NoError(t, goleak.Find(s.goroutines), "goroutines leaked by the refused request")
	for name, tok := range map[string]*hsm.Token{"gateway": b.gwTok, "merchant": b.merTok} {
		st := tok.Stats()
		open := st.SessionsOpen.Load()
		assert.LessOrEqual(t, open, int64(32), "%s token sessions", name)
		assert.EqualValues(t, open, tok.SessionsIdle(), "%s token: every open session is back in the pool", name)
	}
}

// requireRefused checks a gRPC status with a SET reason and the code it travels with.
func requireRefused(t *testing.T, err error, want setpb.Reason) {
	t.Helper()
	require.Error(t, err)
	assert.Equal(t, want.String(), setproto.ReasonOf(err).String(), "error: %v", err)
	assert.NotContains(t, err.Error(), "panic")
}

// files writes PEM trust material for the external tools: the root, the CA chain
// with every CRL (openssl reads CRLs from -CAfile), and the leaves.
type pemFiles struct {
	dir, root, cas, rootAndCAs, crls, leaves string
}

func (b *bed) writePEM(t testing.TB) pemFiles {
	t.Helper()
	dir := t.TempDir()
	f := pemFiles{dir: dir, root: filepath.Join(dir, "root.pem"), cas: filepath.Join(dir, "cas.pem"),
		rootAndCAs: filepath.Join(dir, "root-cas-crls.pem"), crls: filepath.Join(dir, "crls.pem"), leaves: filepath.Join(dir, "leaves.pem")}
	var crlPEM []byte
	for _, crl := range b.CRLs.All() {
		crlPEM = append(crlPEM, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl.Raw})...)
	}
	require.Len(t, b.CRLs.All(), len(b.H.Authorities()), "one CRL per CA")
	require.NoError(t, os.WriteFile(f.root, pki.EncodePEM(b.H.Root.Certificate()), 0o600))
	require.NoError(t, os.WriteFile(f.cas, pki.EncodePEM(b.CACerts()...), 0o600))
	require.NoError(t, os.WriteFile(f.crls, crlPEM, 0o600))
	all := append(pki.EncodePEM(append([]*x509.Certificate{b.H.Root.Certificate()}, b.CACerts()...)...), crlPEM...)
	require.NoError(t, os.WriteFile(f.rootAndCAs, all, 0o600))
	require.NoError(t, os.WriteFile(f.leaves, pki.EncodePEM(b.MerchantEnt.Sign.Cert, b.GatewayEnt.Sign.Cert, b.Cardholders[0].Identity.Cert), 0o600))
	return f
}

func needTool(t testing.TB, name string) string {
	t.Helper()
	return testenv.Tool(t, name)
}

func run(t testing.TB, env []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return string(out), nil
}
