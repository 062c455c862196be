package hsm

import "time"

// SetReinitClock makes the module's re-initialisation backoff read now instead of the
// wall clock, so tests step through it without waiting.
func SetReinitClock(m *Module, now func() time.Time) {
	m.reMu.Lock()
	defer m.reMu.Unlock()
	m.now = now
}

// SetReinitBackoff sets the module's re-initialisation backoff bounds.
func SetReinitBackoff(m *Module, lo, hi time.Duration) {
	m.reMu.Lock()
	defer m.reMu.Unlock()
	m.minBackoff, m.maxBackoff = lo, hi
}
