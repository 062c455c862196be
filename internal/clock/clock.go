// Package clock holds the one test clock of the module: a Manual clock moves only
// when the test says so, so a test that needs time to pass moves it instead of
// sleeping. Production code takes a func() time.Time (nil: time.Now); tests pass
// Manual.Now.
package clock

import (
	"sync"
	"time"
)

// Manual is a clock that stands still until Add or Set moves it. It is safe for
// concurrent use.
type Manual struct {
	mu sync.Mutex
	t  time.Time
}

// NewManual returns a clock reading t.
func NewManual(t time.Time) *Manual { return &Manual{t: t} }

// Now reads the clock; pass it where a func() time.Time is wanted.
func (c *Manual) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock by d (backwards if d is negative).
func (c *Manual) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Set moves the clock to t.
func (c *Manual) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}
