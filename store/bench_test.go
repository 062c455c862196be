package store

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkIdempotentCapture measures one exactly-once capture: claim the
// request ID, capture 1 unit, store the answer, commit.
func BenchmarkIdempotentCapture(b *testing.B) {
	for _, be := range []struct {
		name string
		open func(testing.TB) *Store
	}{
		{"sqlite", openTestSQLite},
		{"postgres", openTestPG},
	} {
		b.Run(be.name, func(b *testing.B) {
			s := be.open(b)
			a := testAuth(b, "m1", "x1", 1<<40)
			insertAuth(b, s, a)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := fmt.Sprintf("req-%d", i)
				if _, _, err := s.Idempotent(ctx, "capture", id, reqHash(id), captureFn("m1", "x1", id, 1, nil)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIdempotentReplay measures answering a retry from the stored bytes.
func BenchmarkIdempotentReplay(b *testing.B) {
	for _, be := range []struct {
		name string
		open func(testing.TB) *Store
	}{
		{"sqlite", openTestSQLite},
		{"postgres", openTestPG},
	} {
		b.Run(be.name, func(b *testing.B) {
			s := be.open(b)
			insertAuth(b, s, testAuth(b, "m1", "x1", 1<<40))
			ctx := context.Background()
			fn := captureFn("m1", "x1", "c1", 1, nil)
			if _, _, err := s.Idempotent(ctx, "capture", "r1", reqHash("r1"), fn); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, replayed, err := s.Idempotent(ctx, "capture", "r1", reqHash("r1"), fn); err != nil || !replayed {
					b.Fatal(replayed, err)
				}
			}
		})
	}
}
