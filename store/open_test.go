package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/internal/testenv"
)

func TestOpenMustExistCreatesNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	missing := filepath.Join(dir, "sub", "typo.db")
	_, err := Open(ctx, "sqlite:"+missing, MustExist())
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrNoStore)
	assert.NoDirExists(t, filepath.Join(dir, "sub"))

	empty := filepath.Join(dir, "empty.db")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	_, err = Open(ctx, "sqlite:"+empty, MustExist())
	assert.ErrorIs(t, err, ErrNoStore, "a file without the schema is not a store")

	made := filepath.Join(dir, "made.db")
	s, err := Open(ctx, "sqlite:"+made)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	s, err = Open(ctx, "sqlite:"+made, MustExist())
	require.NoError(t, err)
	assert.NoError(t, s.Close())
}

func TestOpenMustExistPostgres(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.PostgresSchema(t)
	_, err := Open(ctx, dsn, MustExist())
	assert.ErrorIs(t, err, ErrNoStore, "an empty schema is not a store")
	s, err := Open(ctx, dsn)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	s, err = Open(ctx, dsn, MustExist())
	require.NoError(t, err)
	assert.NoError(t, s.Close())
}
