package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDemoAndReadmePointToTheOperatorGuide: `make demo` (the Makefile target and the
// demo's own last lines) and the README's "Running the parties separately" tell the
// user where the separate-process guide is, and the README runs the built binary, not
// `go run ... &` (issue 11, operator conventions and "The operator's guide is a test").
func TestDemoAndReadmePointToTheOperatorGuide(t *testing.T) {
	dir := demoFixture(t)
	require.NotEmpty(t, dir)
	out := strings.TrimRight(demoVar.res.stdout, "\n")
	lines := strings.Split(out, "\n")
	require.NotEmpty(t, lines)
	assert.Contains(t, lines[len(lines)-1], "docs/operate.md", "the demo's last line names the guide")

	mk, err := os.ReadFile("../../Makefile")
	require.NoError(t, err)
	target := regexp.MustCompile(`(?m)^demo:.*\n((?:\t.*\n)+)`).FindSubmatch(mk)
	require.NotNil(t, target, "Makefile has a demo target")
	assert.Contains(t, string(target[1]), "docs/operate.md")

	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	section := regexp.MustCompile(`(?s)## Running the parties separately\n(.*?)\n## `).FindSubmatch(readme)
	require.NotNil(t, section, "README has the section")
	s := string(section[1])
	assert.Contains(t, s, "(docs/operate.md)", "links the guide")
	assert.Contains(t, s, "make build")
	assert.NotContains(t, s, "go run", "uses the built binary")
}
