package main

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startAnnounced starts cmd and waits for a stdout line beginning with each prefix
// given, returning the rest of each line (trimmed). It fails t if the process exits
// or stays silent within d. Stdout is read to its end, so the process never blocks.
func startAnnounced(t *testing.T, cmd *exec.Cmd, d time.Duration, prefixes ...string) map[string]string {
	t.Helper()
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	cmd.Stdout = pw
	err = cmd.Start()
	_ = pw.Close()
	if err != nil {
		_ = pr.Close()
		require.NoError(t, err)
	}
	done := make(chan map[string]string, 1)
	go func() {
		defer pr.Close()
		got := map[string]string{}
		sent := false
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			for _, p := range prefixes {
				if i := strings.Index(line, p); i >= 0 {
					if _, seen := got[p]; !seen {
						got[p] = strings.TrimSpace(line[i+len(p):])
					}
				}
			}
			if !sent && len(got) == len(prefixes) {
				sent = true
				done <- got
			}
		}
		if !sent {
			close(done)
		}
	}()
	select {
	case got, ok := <-done:
		require.True(t, ok, "%s %s exited before announcing %q", cmd.Path, strings.Join(cmd.Args[1:], " "), prefixes)
		return got
	case <-time.After(d):
		require.Failf(t, "no announcement", "%s %s said none of %q within %s", cmd.Path, strings.Join(cmd.Args[1:], " "), prefixes, d)
	}
	return nil
}
