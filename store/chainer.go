package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// chainEvery is how often an idle chainer looks for records other processes
// committed (another replica, or one killed before its chainer ran).
const chainEvery = 250 * time.Millisecond

// chainLinger is how long a kicked chainer waits before its pass, so that the
// records of the commits arriving meanwhile share one chaining transaction
// (seven statements and a WAL flush). At 10 ms, two chainers on one database
// at ~50 purchases/s issued about a third as many statements as the purchases
// themselves.
const chainLinger = 50 * time.Millisecond

// chainer links a PostgreSQL store's committed audit records into the chain
// (see chainPending). It starts with the first commit that appended a record,
// so a process that only reads (`setpay audit verify`) never writes; after
// that it runs whenever this process commits audit records and every
// chainEvery, and once more when the store closes.
type chainer struct {
	log   *slog.Logger
	every time.Duration
	kick  chan struct{} // capacity 1: kicks while a pass runs coalesce into one more pass

	mu      sync.Mutex
	manual  bool // tests: no background loop; they call ChainAudit themselves
	running bool
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{}
}

func newChainer(log *slog.Logger) *chainer {
	return &chainer{log: log, every: chainEvery, kick: make(chan struct{}, 1)}
}

// chainSoon asks for a chaining pass after this process committed audit records.
func (s *Store) chainSoon() {
	c := s.chain
	c.mu.Lock()
	if !c.running && !c.closed && !c.manual {
		ctx, cancel := context.WithCancel(context.Background())
		c.running, c.cancel, c.done = true, cancel, make(chan struct{})
		go s.chainLoop(ctx, c.done)
	}
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (s *Store) chainLoop(ctx context.Context, done chan struct{}) {
	defer close(done)
	c := s.chain
	tick := time.NewTicker(c.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
			select {
			case <-ctx.Done():
				return
			case <-time.After(chainLinger):
			}
		case <-tick.C:
		}
		// One statement to find nothing to do (often: another replica's
		// chainer, kicked by the same commits, got there first), instead of a
		// transaction.
		var one int
		err := s.db.QueryRowContext(ctx, `SELECT 1 FROM audit_pending LIMIT 1`).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if _, err := s.ChainAudit(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("store: audit chainer: records stay unchained until the next pass", "err", err)
		}
	}
}

// stopChainer ends the background loop and links what this process left.
func (s *Store) stopChainer() error {
	c := s.chain
	c.mu.Lock()
	c.closed = true
	wasRunning, done := c.running, c.done
	c.running = false
	if c.cancel != nil {
		c.cancel()
	}
	c.mu.Unlock()
	if !wasRunning {
		return nil
	}
	<-done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.ChainAudit(ctx); err != nil {
		return fmt.Errorf("store: close: link the last audit records (the next chainer will): %w", err)
	}
	return nil
}
