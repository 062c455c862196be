package clock_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/setpay/setpay/internal/clock"
)

func TestManual(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := clock.NewManual(t0)
	assert.Equal(t, t0, c.Now(), "a new clock reads its start")
	assert.Equal(t, t0, c.Now(), "and stands still")
	c.Add(90 * time.Second)
	assert.Equal(t, t0.Add(90*time.Second), c.Now())
	c.Add(-time.Minute)
	assert.Equal(t, t0.Add(30*time.Second), c.Now())
	c.Set(t0.AddDate(1, 0, 0))
	assert.Equal(t, t0.AddDate(1, 0, 0), c.Now())
}

func TestManualConcurrent(t *testing.T) {
	c := clock.NewManual(time.Time{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				c.Add(time.Millisecond)
				_ = c.Now()
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, time.Time{}.Add(800*time.Millisecond), c.Now())
}
