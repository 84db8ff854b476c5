package streams

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The error classes the publisher's retry logic rests on.
func TestPublishErrorClasses(t *testing.T) {
	api := func(code uint16) error {
		return fmt.Errorf("publish x: %w", &jetstream.APIError{Code: 400, ErrorCode: jetstream.ErrorCode(code)})
	}
	for _, tc := range []struct {
		name                string
		err                 error
		conflict, transient bool
	}{
		{"wrong last sequence", api(10071), true, false},
		{"wrong last sequence, in flight (R>1)", api(10164), true, false},
		{"duplicate message id in process (R>1 retry)", api(10158), false, true},
		{"jetstream temporarily unavailable", api(10008), false, true},
		{"no responders during election", fmt.Errorf("publish x: %w", jetstream.ErrNoStreamResponse), false, true},
		{"timeout", fmt.Errorf("publish x: %w", context.DeadlineExceeded), false, true},
		{"nats timeout", nats.ErrTimeout, false, true},
		{"conflict", &ConflictError{Subject: "x"}, false, false},
		{"stream not found", api(10059), false, false},
	} {
		conflict := isWrongLastSequence(tc.err)
		if conflict != tc.conflict || IsTransient(tc.err) != tc.transient {
			t.Errorf("%s: conflict %t transient %t, want %t %t", tc.name, conflict, IsTransient(tc.err), tc.conflict, tc.transient)
		}
	}
}
