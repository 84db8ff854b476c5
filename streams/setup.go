package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Config sizes the two streams. The zero value is the single-server default.
type Config struct {
	// Replicas of both streams: 1 on a single server, 3 in a cluster of three.
	Replicas int
	// Duplicates is the dedup window of the desired stream (publisher retries within it are
	// stored once).
	Duplicates time.Duration
	// DesiredMaxBytes caps the desired stream; when full, publishes fail loudly instead of
	// dropping history (Discard: New). 0 means unlimited.
	DesiredMaxBytes int64
	// StatusHistory is how many status events per object are kept.
	StatusHistory int64
	// StatusMaxAge is how long status events are kept.
	StatusMaxAge time.Duration
}

func (c Config) withDefaults() Config {
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.Duplicates <= 0 {
		c.Duplicates = 10 * time.Minute
	}
	if c.DesiredMaxBytes <= 0 {
		c.DesiredMaxBytes = -1
	}
	if c.StatusHistory <= 0 {
		c.StatusHistory = 100
	}
	if c.StatusMaxAge <= 0 {
		c.StatusMaxAge = 7 * 24 * time.Hour
	}
	return c
}

// ContractVersion is recorded in the streams' metadata.
const ContractVersion = "v1"

// DesiredConfig is the configuration of NETSOURCE_DESIRED: the event log, kept whole.
func DesiredConfig(c Config) jetstream.StreamConfig {
	c = c.withDefaults()
	return jetstream.StreamConfig{
		Name:              DesiredStream,
		Description:       "netsource desired state: one subject per aggregate, full spec per event",
		Subjects:          []string{DesiredRoot + ".>"},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          c.Replicas,
		MaxMsgsPerSubject: -1, // history is the product: the replay tool reads it
		MaxBytes:          c.DesiredMaxBytes,
		Discard:           jetstream.DiscardNew, // a full log refuses writes, never forgets
		Duplicates:        c.Duplicates,
		DenyDelete:        true,
		// Reads on the write path (conflict check after a lost ack) go to the leader so
		// they see the latest write.
		AllowDirect: false,
		Metadata:    map[string]string{"netsource_contract": ContractVersion},
	}
}

// StatusConfig is the configuration of NETSOURCE_STATUS: a short history per object.
func StatusConfig(c Config) jetstream.StreamConfig {
	c = c.withDefaults()
	return jetstream.StreamConfig{
		Name:              StatusStream,
		Description:       "netsource status events and agent heartbeats",
		Subjects:          []string{StatusRoot + ".>"},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          c.Replicas,
		MaxMsgsPerSubject: c.StatusHistory,
		MaxAge:            c.StatusMaxAge,
		Discard:           jetstream.DiscardOld,
		Duplicates:        time.Minute,
		AllowDirect:       true,
		Metadata:          map[string]string{"netsource_contract": ContractVersion},
	}
}

// EnsureStreams creates both streams or updates them to cfg. It is idempotent. A change the
// server refuses (storage type, a one-way flag) is returned as an error naming the stream,
// never papered over by deleting the stream.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	for _, sc := range []jetstream.StreamConfig{DesiredConfig(cfg), StatusConfig(cfg)} {
		if err := ensureStream(ctx, js, sc); err != nil {
			return err
		}
	}
	return nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) error {
	for {
		_, err := js.CreateStream(ctx, sc)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			_, err = js.UpdateStream(ctx, sc)
		}
		if err == nil {
			return nil
		}
		// A cluster that has just formed may still count a peer offline for placement
		// (10005, "no suitable peers"); that settles within moments, so wait for it while
		// ctx allows instead of failing the start.
		if !isNoPeersForPlacement(err) || ctx.Err() != nil {
			return fmt.Errorf("ensure stream %s: %w", sc.Name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ensure stream %s: %w", sc.Name, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// errCodeNoSuitablePeers is JetStream's "no suitable peers for placement".
const errCodeNoSuitablePeers = 10005

func isNoPeersForPlacement(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeNoSuitablePeers
}
