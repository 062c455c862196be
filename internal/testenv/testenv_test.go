package testenv

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestRequired(t *testing.T) {
	tests := []struct {
		env, name string
		want      bool
	}{
		{"", "postgres", false},
		{"all", "postgres", true},
		{"all", "openssl", true},
		{"postgres", "postgres", true},
		{"postgres", "openssl", false},
		{" openssl , postgres ", "postgres", true},
		{"postgresql", "postgres", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q/%s", tt.env, tt.name), func(t *testing.T) {
			t.Setenv(RequireEnv, tt.env)
			assert.Equal(t, tt.want, Required(tt.name))
		})
	}
}

// recorder is a testing.TB that records how the test would have ended.
type recorder struct {
	testing.TB
	how string
}

func (r *recorder) Helper()                  {}
func (r *recorder) Fatalf(string, ...any)    { r.how = "fatal" }
func (r *recorder) Skipf(string, ...any)     { r.how = "skip" }
func (r *recorder) Cleanup(func())           {}
func (r *recorder) Logf(string, ...any)      {}
func (r *recorder) Name() string             { return "recorder" }
func (r *recorder) Setenv(key, value string) {}
func (r *recorder) TempDir() string          { return "" }
func (r *recorder) Errorf(string, ...any)    { r.how = "error" }
func (r *recorder) FailNow()                 { r.how = "fatal" }
func (r *recorder) Failed() bool             { return r.how == "fatal" || r.how == "error" }
func (r *recorder) Skipped() bool            { return r.how == "skip" }
func (r *recorder) SkipNow()                 { r.how = "skip" }
func (r *recorder) Skip(...any)              { r.how = "skip" }
func (r *recorder) Fatal(...any)             { r.how = "fatal" }
func (r *recorder) Error(...any)             { r.how = "error" }
func (r *recorder) Log(...any)               {}
func (r *recorder) Attr(key, value string)   {}
func (r *recorder) Fail()                    { r.how = "error" }
func (r *recorder) ArtifactDir() string      { return "" }

func TestMissingFailsWhereRequired(t *testing.T) {
	tests := []struct{ env, want string }{
		{"", "skip"},
		{"all", "fatal"},
		{"no-such-tool-xyz", "fatal"},
		{"postgres", "skip"},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			t.Setenv(RequireEnv, tt.env)
			r := &recorder{TB: t}
			Tool(r, "no-such-tool-xyz")
			assert.Equal(t, tt.want, r.how)
		})
	}
}

func TestPostgresDSNWithoutServer(t *testing.T) {
	t.Setenv(PostgresEnv, "")
	t.Setenv(RequireEnv, "all")
	r := &recorder{TB: t}
	PostgresDSN(r)
	assert.Equal(t, "fatal", r.how, "CI must fail when no PostgreSQL is configured")
}
