package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// CoverDirEnv names a directory where the built binary writes its coverage counters
// (GOCOVERDIR). `make cover-cli` sets it and merges the counters with the in-process
// tests' (`go tool covdata percent`); without it they go to a temporary directory.
const CoverDirEnv = "SETPAY_CLI_GOCOVERDIR"

// testBinary is the setpay binary the tests run as a user would: built once per test
// binary, with -cover, into a temporary directory removed by TestMain.
var testBinary struct {
	once     sync.Once
	dir      string // set by TestMain
	path     string
	coverDir string
	err      error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "setpay-cli-test-")
	if err != nil {
		panic(err)
	}
	testBinary.dir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// setpayBinary builds the binary on first use and returns its path and GOCOVERDIR.
func setpayBinary(t testing.TB) (path, coverDir string) {
	t.Helper()
	b := &testBinary
	b.once.Do(func() {
		b.coverDir = os.Getenv(CoverDirEnv)
		if b.coverDir == "" {
			b.coverDir = filepath.Join(b.dir, "cover")
		}
		if b.err = os.MkdirAll(b.coverDir, 0o700); b.err != nil {
			return
		}
		// The counters must be in the same mode as this test binary's (atomic under
		// -race) for `go tool covdata` to merge them.
		mode := testing.CoverMode()
		if mode == "" {
			mode = "set"
		}
		b.path = filepath.Join(b.dir, "setpay")
		// As `make build`: the revision is linked in where the toolchain cannot stamp
		// it (git worktrees, -buildvcs=false).
		ldflags := "-X main.vcsRevision=" + sourceRevision()
		cmd := exec.Command("go", "build", "-cover", "-covermode="+mode, "-ldflags="+ldflags, "-o", b.path, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = errors.New("go build -cover: " + err.Error() + "\n" + string(out))
		}
	})
	require.NoError(t, b.err)
	return b.path, b.coverDir
}

// sourceRevision is the commit of the tree under test ("" without git).
func sourceRevision() string {
	out, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// result is what a run of the binary left: its output and exit code.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return "exit " + strconv.Itoa(r.code) + "\nstdout:\n" + r.stdout + "\nstderr:\n" + r.stderr
}

// binEnv is the environment of a run: this process's, GOCOVERDIR, then env, where
// "NAME=value" sets and a bare "NAME" removes a variable.
func binEnv(coverDir string, env []string) []string {
	out := append(os.Environ(), "GOCOVERDIR="+coverDir)
	for _, e := range env {
		name, _, set := strings.Cut(e, "=")
		kept := out[:0]
		for _, o := range out {
			if !strings.HasPrefix(o, name+"=") {
				kept = append(kept, o)
			}
		}
		out = kept
		if set {
			out = append(out, e)
		}
	}
	return out
}

// setpayCmd is the binary as a command in dir with env (see binEnv). Cancelling ctx
// sends SIGTERM, which the binary handles, so a server stops cleanly and writes its
// coverage counters.
func setpayCmd(ctx context.Context, t testing.TB, dir string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	bin, coverDir := setpayBinary(t)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = binEnv(coverDir, env)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	return cmd
}

// runSetpay runs the binary to its end and returns what it left; it fails the test
// only if the binary could not be run at all.
func runSetpay(t testing.TB, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := setpayCmd(ctx, t, dir, env, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		require.NoError(t, err, "setpay %s", strings.Join(args, " "))
	}
	return r
}
