package crashtest

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"testing"

	"google.golang.org/grpc"

	"github.com/setpay/setpay/gateway"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/softhsm"
	"github.com/setpay/setpay/softhsm/softhsmtest"
	"github.com/setpay/setpay/store"
)

// childEnv names the configuration file of a gateway child process; pinEnv holds
// the token PIN (never in argv).
const (
	childEnv = "SETPAY_CRASHTEST_GATEWAY"
	pinEnv   = "SETPAY_CRASHTEST_PIN"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		if err := runChild(context.Background(), path); err != nil {
			fmt.Fprintf(os.Stderr, "crashtest child: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	softhsmtest.Main(m)
}

// childConfig is what the parent hands the gateway process.
type childConfig struct {
	Token     string         `json:"token"`
	SignLabel string         `json:"sign_label"`
	KXLabel   string         `json:"kx_label"`
	SignChain string         `json:"sign_chain"` // PEM, leaf first
	KXCert    string         `json:"kx_cert"`    // PEM
	Root      string         `json:"root"`       // PEM
	CACerts   string         `json:"ca_certs"`   // PEM
	CRLs      string         `json:"crls"`       // PEM
	DSN       string         `json:"dsn"`
	PANKey    string         `json:"pan_key"` // label of the PAN hash key in the token
	Cards     []gateway.Card `json:"cards"`
}

// listenerFD is the descriptor of the listening socket a child inherits from the
// test (exec.Cmd.ExtraFiles[0]): the test listens once, on port 0, and every child
// serves that socket, so the address survives the kills.
const listenerFD = 3

// runChild serves the gateway on the inherited listener until killed, and says "ready" on stdout
// once it listens.
func runChild(ctx context.Context, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var c childConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	modPath, err := softhsm.FindModule()
	if err != nil {
		return err
	}
	mod, err := hsm.OpenModule(modPath, logger)
	if err != nil {
		return err
	}
	defer mod.Close()
	tok, err := mod.OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: c.Token}, PIN: hsm.PINSource("env:" + pinEnv), Logger: logger})
	if err != nil {
		return err
	}
	defer tok.Close()
	sk, err := tok.FindKey(ctx, c.SignLabel)
	if err != nil {
		return fmt.Errorf("signature key: %w", err)
	}
	kk, err := tok.FindKey(ctx, c.KXLabel)
	if err != nil {
		return fmt.Errorf("key-exchange key: %w", err)
	}
	parse := parseCerts
	sign, err := parse(c.SignChain)
	if err != nil {
		return err
	}
	kx, err := parse(c.KXCert)
	if err != nil {
		return err
	}
	root, err := parse(c.Root)
	if err != nil {
		return err
	}
	cas, err := parse(c.CACerts)
	if err != nil {
		return err
	}
	crls := pki.NewMemoryCRLs()
	rest := []byte(c.CRLs)
	for {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if err := crls.PutDER(blk.Bytes); err != nil {
			return err
		}
	}
	v, err := pki.NewVerifier(root[0], crls)
	if err != nil {
		return err
	}
	db, err := store.Open(ctx, c.DSN)
	if err != nil {
		return err
	}
	defer db.Close()
	panKey, err := tok.FindSecretKey(ctx, c.PANKey)
	if err != nil {
		return fmt.Errorf("PAN hash key: %w", err)
	}
	ledgerKey := make([]byte, 32) // the issuer stand-in's, in memory only
	if _, err := rand.Read(ledgerKey); err != nil {
		return err
	}
	ledger, err := gateway.NewLedger(ledgerKey, c.Cards)
	if err != nil {
		return err
	}
	g, err := gateway.New(gateway.Config{Sign: setproto.Party{Key: sk, Cert: sign[0], Chain: sign[1:]}, KXCert: kx[0], KXKey: kk,
		Trust: &setproto.Trust{Verifier: v, Intermediates: cas, Cache: pki.NewCertCache(256)}, Store: db,
		PANHashKey: store.NewPANHasher(panKey), Issuer: ledger, Logger: logger})
	if err != nil {
		return err
	}
	lf := os.NewFile(listenerFD, "listener")
	lis, err := net.FileListener(lf)
	_ = lf.Close() // FileListener holds its own copy
	if err != nil {
		return fmt.Errorf("inherited listener: %w", err)
	}
	s := grpc.NewServer() // loopback, plain: this test is about crashes, not transport
	g.Register(s)
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(w, "ready %s\n", lis.Addr())
	if err := w.Flush(); err != nil {
		return err
	}
	err = s.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

func parseCerts(s string) ([]*x509.Certificate, error) {
	cs, err := pki.ParsePEMCertificates([]byte(s))
	if err != nil {
		return nil, err
	}
	if len(cs) == 0 {
		return nil, errors.New("no certificate in PEM")
	}
	return cs, nil
}
