package pki_test

import (
	"testing"

	"github.com/setpay/setpay/softhsm/softhsmtest"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }
