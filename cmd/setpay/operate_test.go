//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/internal/testenv"
)

// The operator's guide (docs/operate.md) is a test: TestOperatorGuide extracts its
// shell blocks and runs them verbatim, in order, each as its own `bash` process in one
// temporary directory, with the built setpay binary first on PATH. The conventions the
// guide follows are written at its top; in short:
//
//   - a ```sh block is a step; it runs as `bash -euo pipefail STEP` and must exit 0;
//   - a ```text block after it (before the next ```sh block) lists lines its output
//     (stdout and stderr) must contain, in any order; "..." in a line stands for anything;
//   - an HTML comment `<!-- guide: ... -->` just before a block sets, for that block,
//     `exit=N` (the exit status it must end with), `timeout=DURATION`, or
//     `pending: REASON` (shown in the guide, not run: it waits on something unbuilt);
//   - services started in the background with `&` stay up after their block: the test
//     stops every process it started (by process group, SIGTERM then SIGKILL) at its
//     end, also on failure, and prints the step and the tail of every *.log on failure.

// guidePath is the operator's guide, from this package's directory.
const guidePath = "../../docs/operate.md"

// guideStep is one ```sh block of the guide.
type guideStep struct {
	line    int    // of the opening fence, 1-based
	heading string // the nearest heading above it
	script  string
	want    []string // lines its output must contain, in order ("..." is a wildcard)
	exit    int
	timeout time.Duration
	pending string // why the test does not run it yet ("" to run it)
}

func (s guideStep) name() string {
	return fmt.Sprintf("docs/operate.md:%d (%s)", s.line, s.heading)
}

// guideMarker is the test's annotation of the next block.
var guideMarker = regexp.MustCompile(`^<!--\s*guide:\s*(.*?)\s*-->$`)

// parseGuide reads the guide's steps.
func parseGuide(text string) ([]guideStep, error) {
	var (
		steps   []guideStep
		heading string
		marker  string
		markAt  int
		inFence bool
		kind    string
		body    []string
		start   int
	)
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if inFence {
			if strings.TrimSpace(line) != "```" {
				body = append(body, line)
				continue
			}
			inFence = false
			switch kind {
			case "sh":
				st := guideStep{line: start, heading: heading, script: strings.Join(body, "\n") + "\n", timeout: time.Minute}
				if marker != "" {
					if err := st.annotate(marker); err != nil {
						return nil, fmt.Errorf("line %d: %w", markAt, err)
					}
				}
				steps = append(steps, st)
			case "text":
				if len(steps) == 0 {
					return nil, fmt.Errorf("line %d: a text block (expected output) before any sh block", start)
				}
				last := &steps[len(steps)-1]
				if last.want != nil {
					return nil, fmt.Errorf("line %d: a second expected-output block for the sh block at line %d", start, last.line)
				}
				if marker != "" {
					return nil, fmt.Errorf("line %d: a guide marker before a text block", markAt)
				}
				for _, w := range body {
					if w = normalizeSpace(w); w != "" {
						last.want = append(last.want, w)
					}
				}
				if last.want == nil {
					return nil, fmt.Errorf("line %d: an empty expected-output block", start)
				}
			}
			marker, body = "", nil
			continue
		}
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "```"):
			inFence, kind, start, body = true, strings.TrimSpace(strings.TrimPrefix(trimmed, "```")), n, nil
			if marker != "" && kind != "sh" && kind != "text" {
				return nil, fmt.Errorf("line %d: a guide marker before a %q block", markAt, kind)
			}
		case strings.HasPrefix(trimmed, "#"):
			heading = strings.TrimSpace(strings.TrimLeft(trimmed, "#"))
		case guideMarker.MatchString(trimmed):
			if marker != "" {
				return nil, fmt.Errorf("line %d: two guide markers for one block", n)
			}
			marker, markAt = guideMarker.FindStringSubmatch(trimmed)[1], n
		case strings.HasPrefix(trimmed, "<!--") && strings.Contains(trimmed, "guide:"):
			return nil, fmt.Errorf("line %d: a guide marker must be one line: <!-- guide: ... -->", n)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if inFence {
		return nil, fmt.Errorf("line %d: unterminated code block", start)
	}
	if marker != "" {
		return nil, fmt.Errorf("line %d: a guide marker with no block after it", markAt)
	}
	return steps, nil
}

// annotate applies a marker: "exit=N", "timeout=D" (space-separated) or "pending: REASON".
func (s *guideStep) annotate(m string) error {
	if reason, ok := strings.CutPrefix(m, "pending:"); ok {
		if s.pending = strings.TrimSpace(reason); s.pending == "" {
			return errors.New("pending: needs a reason")
		}
		return nil
	}
	for _, f := range strings.Fields(m) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return fmt.Errorf("guide marker %q: want key=value", f)
		}
		switch k {
		case "exit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 255 {
				return fmt.Errorf("guide marker exit=%q: want 0..255", v)
			}
			s.exit = n
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return fmt.Errorf("guide marker timeout=%q: want a duration", v)
			}
			s.timeout = d
		default:
			return fmt.Errorf("guide marker: unknown key %q", k)
		}
	}
	return nil
}

// indent sets output apart in the test log.
func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "\t| " + strings.ReplaceAll(s, "\n", "\n\t| ")
}

func normalizeSpace(s string) string { return strings.Join(strings.Fields(s), " ") }

// matchOutput checks that out has a line for each of want (in any order, one output
// line for each); "..." in a wanted line matches anything within one output line.
func matchOutput(out string, want []string) error {
	lines := strings.Split(out, "\n")
	used := make([]bool, len(lines))
	var missing []string
	for _, w := range want {
		frags := strings.Split(w, "...")
		found := false
		for i, l := range lines {
			if !used[i] && containsInOrder(normalizeSpace(l), frags) {
				found, used[i] = true, true
				break
			}
		}
		if !found {
			missing = append(missing, fmt.Sprintf("%q", w))
		}
	}
	if missing != nil {
		return fmt.Errorf("no line matching %s", strings.Join(missing, ", "))
	}
	return nil
}

func containsInOrder(line string, frags []string) bool {
	for _, f := range frags {
		f = strings.TrimSpace(f)
		k := strings.Index(line, f)
		if k < 0 {
			return false
		}
		line = line[k+len(f):]
	}
	return true
}

// guideEnv is the environment of each step: this process's without anything that
// would let a step lean on the test's own setup (SoftHSM, setpay or Go settings), the
// binary's directory first on PATH, and GOCOVERDIR for the -cover build.
func guideEnv(binDir, coverDir string) []string {
	var env []string
	for _, e := range os.Environ() {
		name, _, _ := strings.Cut(e, "=")
		switch {
		case name == "SOFTHSM2_CONF", name == "GOCOVERDIR", name == "PATH", name == "OLDPWD", name == "CDPATH",
			strings.HasPrefix(name, "SETPAY_"), strings.HasPrefix(name, "BASH_FUNC_"):
			continue
		}
		env = append(env, e)
	}
	return append(env, "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"), "GOCOVERDIR="+coverDir)
}

// guideProcs are the process groups the steps ran in. While the guide runs, this test
// process is their child subreaper and reaps the services a step left behind once they
// exit, as an operator's shell reaps its jobs: a `while kill -0 PID` after a kill must
// end (an orphan's PID 1 may never reap it).
type guideProcs struct {
	mu     sync.Mutex
	groups []int
	done   chan struct{}
	wg     sync.WaitGroup
}

// prSetChildSubreaper is prctl's PR_SET_CHILD_SUBREAPER (linux/prctl.h).
const prSetChildSubreaper = 36

func startGuideProcs(t *testing.T) *guideProcs {
	t.Helper()
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		require.NoError(t, errno, "prctl(PR_SET_CHILD_SUBREAPER)")
	}
	g := &guideProcs{done: make(chan struct{})}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-g.done:
				return
			case <-tick.C:
				g.reap()
			}
		}
	}()
	return g
}

func (g *guideProcs) add(pgid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.groups = append(g.groups, pgid)
}

func (g *guideProcs) has(pgid int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Contains(g.groups, pgid)
}

// reap collects the exited orphans of the steps' groups. A step's own bash (the group
// leader) is left to its exec.Cmd.
func (g *guideProcs) reap() {
	me := os.Getpid()
	for _, p := range procStats() {
		if p.state == "Z" && p.ppid == me && p.pid != p.pgrp && g.has(p.pgrp) {
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(p.pid, &ws, syscall.WNOHANG, nil)
		}
	}
}

// stop ends every process still in the groups: SIGTERM (the services stop cleanly and
// write their coverage counters), then SIGKILL for whatever is left after a grace
// period; then it stops reaping and gives up being a subreaper.
func (g *guideProcs) stop(t *testing.T) {
	g.mu.Lock()
	groups := slices.Clone(g.groups)
	g.mu.Unlock()
	for _, pgid := range groups {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, pgid := range groups {
		for groupAlive(pgid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if groupAlive(pgid) {
			t.Logf("process group %d still running 15s after SIGTERM: killed", pgid)
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}
	time.Sleep(100 * time.Millisecond)
	close(g.done)
	g.wg.Wait()
	g.reap()
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 0, 0)
}

type procStat struct {
	pid, ppid, pgrp int
	state           string
}

// procStats lists the processes of the machine from /proc.
func procStats() []procStat {
	var out []procStat
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		k := strings.LastIndexByte(s, ')')
		if k < 0 {
			continue
		}
		f := strings.Fields(s[k+1:]) // state, ppid, pgrp, ...
		if len(f) < 3 {
			continue
		}
		pid, err1 := strconv.Atoi(strings.Fields(s)[0])
		ppid, err2 := strconv.Atoi(f[1])
		pgrp, err3 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		out = append(out, procStat{pid: pid, ppid: ppid, pgrp: pgrp, state: f[0]})
	}
	return out
}

// groupAlive says whether a process other than a zombie is in group pgid.
func groupAlive(pgid int) bool {
	for _, p := range procStats() {
		if p.pgrp == pgid && p.state != "Z" && p.state != "X" {
			return true
		}
	}
	return false
}

// guidePorts are the loopback ports the guide's steps use; they must be free, or a
// step would talk to someone else's server.
func guidePorts(steps []guideStep) []string {
	seen := map[string]bool{}
	re := regexp.MustCompile(`127\.0\.0\.1:([0-9]{2,5})`)
	for _, s := range steps {
		for _, m := range re.FindAllStringSubmatch(s.script, -1) {
			seen[m[0]] = true
		}
	}
	var out []string
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// tailLogs is the end of every *.log the steps left in dir, for a failure report.
func tailLogs(dir string, n int) string {
	var b strings.Builder
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	more, _ := filepath.Glob(filepath.Join(dir, "*", "*.log"))
	for _, l := range append(logs, more...) {
		data, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		rel, _ := filepath.Rel(dir, l)
		fmt.Fprintf(&b, "--- %s (last %d lines)\n%s\n", rel, len(lines), strings.Join(lines, "\n"))
	}
	return b.String()
}

func TestParseGuideConventions(t *testing.T) {
	doc := "# Top\n<!-- guide: exit=1 timeout=5s -->\n```sh\nfalse\n```\nIt prints:\n```text\n  a   b ... c\n\n```\n" +
		"## Later\n<!-- guide: pending: issue 11 item 3 -->\n```sh\nsetpay tls request\n```\n```yaml\nnot: run\n```\n"
	steps, err := parseGuide(doc)
	require.NoError(t, err)
	require.Len(t, steps, 2)
	assert.Equal(t, guideStep{line: 3, heading: "Top", script: "false\n", want: []string{"a b ... c"}, exit: 1, timeout: 5 * time.Second}, steps[0])
	assert.Equal(t, "issue 11 item 3", steps[1].pending)
	assert.Equal(t, "Later", steps[1].heading)

	for name, bad := range map[string]string{
		"text first":        "```text\nx\n```\n",
		"two text":          "```sh\ntrue\n```\n```text\nx\n```\n```text\ny\n```\n",
		"marker on yaml":    "<!-- guide: exit=1 -->\n```yaml\nx: 1\n```\n",
		"unknown key":       "<!-- guide: retries=3 -->\n```sh\ntrue\n```\n",
		"pending no reason": "<!-- guide: pending: -->\n```sh\ntrue\n```\n",
		"dangling marker":   "```sh\ntrue\n```\n<!-- guide: exit=1 -->\n",
		"unterminated":      "```sh\ntrue\n",
		"empty text":        "```sh\ntrue\n```\n```text\n\n```\n",
	} {
		_, err := parseGuide(bad)
		assert.Error(t, err, name)
	}

	assert.NoError(t, matchOutput("x\nfoo  1 bar\nbaz\n", []string{"foo 1 bar", "baz"}))
	assert.NoError(t, matchOutput("purchase X1 at shop: APPROVED 49.90\n", []string{"purchase ... at shop: APPROVED ... 49.90"}))
	assert.NoError(t, matchOutput("baz\nfoo\n", []string{"foo", "baz"}), "any order")
	assert.Error(t, matchOutput("foo\n", []string{"foo", "foo"}), "one line for each")
	assert.Error(t, matchOutput("foo\n", []string{"bar"}))
}

// TestOperatorGuide runs docs/operate.md: from an empty directory to a working SET
// system with every party a separate process started from the built binary, as an
// operator following the guide would (issue 11, "The operator's guide is a test").
func TestOperatorGuide(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a whole SET system as separate processes; skipped with -short")
	}
	// What the guide's commands use besides setpay (scripts/install-deps.sh installs them).
	for _, tool := range []string{"bash", "curl", "openssl", "sed", "grep"} {
		testenv.Tool(t, tool)
	}
	text, err := os.ReadFile(guidePath)
	require.NoError(t, err)
	steps, err := parseGuide(string(text))
	require.NoError(t, err, "docs/operate.md")
	require.NotEmpty(t, steps)
	for _, p := range guidePorts(steps) {
		l, err := net.Listen("tcp", p)
		require.NoError(t, err, "the guide's address %s must be free for this test (another setpay running?)", p)
		_ = l.Close()
	}

	bin, coverDir := setpayBinary(t)
	binDir := t.TempDir()
	require.NoError(t, os.Symlink(bin, filepath.Join(binDir, "setpay")))
	work := t.TempDir()
	procs := startGuideProcs(t)
	t.Cleanup(func() { procs.stop(t) }) // before the directories go (cleanups run last-first)

	run := runGuide(t, steps, work, guideEnv(binDir, coverDir), procs)
	if run.failure != "" {
		t.Fatal(run.failure)
	}
	t.Logf("operator's guide: %d steps run, %d not run yet", run.ran, len(run.pending))
	for _, p := range run.pending {
		t.Logf("  pending %s", p)
	}
}

// guideRun is what runGuide did: the steps it ran, the ones it did not run yet, and
// the report of the step that failed ("" if none did).
type guideRun struct {
	ran     int
	pending []string
	failure string
}

// runGuide runs the steps in order in work, each as its own bash process in its own
// process group (recorded in procs), and stops at the first failing step.
func runGuide(t *testing.T, steps []guideStep, work string, env []string, procs *guideProcs) guideRun {
	t.Helper()
	stepDir := t.TempDir() // scripts and outputs, outside the operator's directory
	var run guideRun
	for i, st := range steps {
		if st.pending != "" {
			run.pending = append(run.pending, st.name()+": "+st.pending)
			t.Logf("not run yet: %s: %s", st.name(), st.pending)
			continue
		}
		script := filepath.Join(stepDir, fmt.Sprintf("step-%02d.sh", i))
		require.NoError(t, os.WriteFile(script, []byte(st.script), 0o600))
		out, err := os.Create(filepath.Join(stepDir, fmt.Sprintf("step-%02d.out", i)))
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), st.timeout)
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", script)
		cmd.Dir, cmd.Env, cmd.Stdin = work, env, nil
		// Output to a file, not a pipe: a service a step leaves running in the
		// background must not keep the step "open".
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		err = cmd.Start()
		if err == nil {
			procs.add(cmd.Process.Pid)
			err = cmd.Wait()
		}
		timedOut := ctx.Err() != nil
		cancel()
		_ = out.Close()
		output, _ := os.ReadFile(out.Name())
		code := 0
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee) && ee.Exited():
			code = ee.ExitCode()
		case timedOut:
			code = -1
		default:
			require.NoError(t, err, st.name())
		}
		var problem string
		switch {
		case timedOut:
			problem = fmt.Sprintf("did not finish within %v", st.timeout)
		case code != st.exit:
			problem = fmt.Sprintf("exit status %d, want %d", code, st.exit)
		default:
			if err := matchOutput(string(output), st.want); err != nil {
				problem = "output: " + err.Error()
			}
		}
		if problem != "" {
			run.failure = fmt.Sprintf("%s: %s\n=== script\n%s=== output\n%s\n=== logs\n%s", st.name(), problem, st.script, output, tailLogs(work, 40))
			return run
		}
		run.ran++
		if testing.Verbose() {
			t.Logf("ok %s\n%s", st.name(), indent(string(output)))
		}
	}
	return run
}

// TestOperatorGuideHarness runs a small guide whose second step fails while the first
// left a service running: the run stops there with the step, its output and the logs,
// and stopping the process groups ends the service (also a step's own bash after a
// timeout).
func TestOperatorGuideHarness(t *testing.T) {
	doc := "# Harness\n```sh\nsleep 300 > svc.log 2>&1 &\necho $! > svc.pid\necho started > start.log\n```\n" +
		"```sh\necho checking\nfalse\necho never\n```\n" +
		"```sh\necho not reached\n```\n"
	steps, err := parseGuide(doc)
	require.NoError(t, err)
	work := t.TempDir()
	procs := startGuideProcs(t)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			procs.stop(t)
		}
	})
	run := runGuide(t, steps, work, guideEnv(t.TempDir(), t.TempDir()), procs)
	assert.Equal(t, 1, run.ran)
	assert.Contains(t, run.failure, "docs/operate.md:7 (Harness): exit status 1, want 0")
	_, output, _ := strings.Cut(run.failure, "=== output\n")
	assert.Contains(t, output, "checking")
	assert.NotContains(t, output, "never", "bash -e stops at the failing command")
	assert.Contains(t, run.failure, "--- start.log (last 1 lines)\nstarted")

	b, err := os.ReadFile(filepath.Join(work, "svc.pid"))
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	require.NoError(t, syscall.Kill(pid, 0), "the step's service runs until the end")
	procs.stop(t)
	stopped = true
	assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "stopped and reaped")

	timeout := []guideStep{{line: 1, heading: "Slow", script: "sleep 300\n", timeout: 200 * time.Millisecond}}
	procs2 := startGuideProcs(t)
	defer procs2.stop(t)
	run = runGuide(t, timeout, t.TempDir(), guideEnv(t.TempDir(), t.TempDir()), procs2)
	assert.Contains(t, run.failure, "did not finish within 200ms")
}

// TestOperatorGuideCoversTheIssue: the guide's run steps (not pending ones) include every
// stage issue 11 asks the operator's guide for, so none can quietly drop out of it.
func TestOperatorGuideCoversTheIssue(t *testing.T) {
	text, err := os.ReadFile(guidePath)
	require.NoError(t, err)
	steps, err := parseGuide(string(text))
	require.NoError(t, err)
	var run strings.Builder
	for _, s := range steps {
		if s.pending == "" {
			run.WriteString(s.script)
		}
	}
	for stage, cmd := range map[string]string{
		"SoftHSM tokens":           "setpay hsm init-softhsm",
		"CA hierarchy":             "setpay ca init",
		"CA service":               "setpay ca serve",
		"enrollment":               "setpay ca enroll",
		"gateway registration":     "setpay gateway register",
		"merchant registration":    "setpay merchant register",
		"TLS key and CSR":          "setpay tls request",
		"TLS certificate":          "setpay ca tls-issue",
		"store init":               "setpay store init",
		"gateway serve":            "setpay gateway serve",
		"merchant serve":           "setpay merchant serve",
		"cardholder registration":  "setpay wallet register",
		"purchase":                 "setpay wallet buy",
		"capture":                  "setpay merchant capture",
		"refund":                   "setpay merchant credit",
		"batch close":              "setpay merchant batch close",
		"revocation":               "setpay ca revoke",
		"gateway killed":           "kill -KILL",
		"token directory moved":    "mv tokens/gateway tokens/gateway.away",
		"token directory restored": "mv tokens/gateway.away tokens/gateway",
		"audit verify":             "setpay audit verify",
	} {
		assert.Contains(t, run.String(), cmd, "the guide runs no %s step", stage)
	}
}
