package console

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// noOperator is an Operator the login path never calls.
type noOperator struct{ Operator }

func (noOperator) ID() string { return "shop-1" }

// TestConsoleUnknownNameCostsAsMuchAsAKnownOne: the hash an unknown login name is
// compared with has the bcrypt cost of the users file's hashes (a file made with
// another tool, such as htpasswd -B at cost 5, is not setpay's DefaultCost), so a
// wrong name and a wrong password cost the same work: names cannot be told apart by
// the answer's time. Without users: DefaultCost. (Checked on the cost, not by
// timing.)
func TestConsoleUnknownNameCostsAsMuchAsAKnownOne(t *testing.T) {
	for _, cost := range []int{bcrypt.MinCost, 5, bcrypt.DefaultCost + 1} {
		h, err := bcrypt.GenerateFromPassword([]byte("correct horse battery"), cost)
		require.NoError(t, err)
		users := Users{"ops-alice": h}
		c, err := New(Config{Operator: noOperator{}, Users: func() (Users, error) { return users, nil }})
		require.NoError(t, err)
		d, err := c.dummyHash(users)
		require.NoError(t, err)
		got, err := bcrypt.Cost(d)
		require.NoError(t, err)
		assert.Equal(t, cost, got, "users at cost %d", cost)
		assert.Error(t, bcrypt.CompareHashAndPassword(d, []byte("correct horse battery")))
	}
	c, err := New(Config{Operator: noOperator{}, ClientCert: true})
	require.NoError(t, err)
	d, err := c.dummyHash(nil)
	require.NoError(t, err)
	got, err := bcrypt.Cost(d)
	require.NoError(t, err)
	assert.Equal(t, bcrypt.DefaultCost, got)
}
