package taas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// KVBucket is the JetStream key-value bucket of tap id allocations: key "id.<tap id>",
// value the ServiceInfo as JSON. One key per tap id makes allocation a compare-and-set:
// kv.Create succeeds for exactly one agent, so two hosts never get the same id, whatever
// their timing. Every agent watches the bucket and answers Lookup from that cache.
const KVBucket = "NETSOURCE_TAAS"

const keyPrefix = "id."

// KV is the Directory shared by all agents of a JetStream deployment.
type KV struct {
	kv   jetstream.KeyValue
	host string // this agent: Release frees only entries it owns
	log  zerolog.Logger

	mu    sync.Mutex
	byID  map[int]kvEntry
	ready chan struct{} // closed once the initial values are loaded
	subs  subscribers

	stop context.CancelFunc
	done chan struct{}
}

type kvEntry struct {
	info ServiceInfo
	rev  uint64
}

var _ Directory = (*KV)(nil)

// NewKV creates the bucket if needed (file storage, one value per key) and starts watching
// it. replicas is the bucket's replica count (0: 1). Close stops the watch.
func NewKV(ctx context.Context, js jetstream.JetStream, host string, replicas int, log zerolog.Logger) (*KV, error) {
	if replicas <= 0 {
		replicas = 1
	}
	// Open first: an agent with restricted permissions may look the bucket up but not
	// create it (as with the streams, an administrator or the first agent creates it).
	kv, err := js.KeyValue(ctx, KVBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: KVBucket, Description: "netsource tap id allocations (TaaS taas_id)", History: 1,
			Storage: jetstream.FileStorage, Replicas: replicas,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, KVBucket) // another agent was faster
		}
	}
	if err != nil {
		return nil, fmt.Errorf("tap id bucket %s: %w", KVBucket, err)
	}
	watchCtx, stop := context.WithCancel(context.Background())
	w, err := kv.WatchAll(watchCtx)
	if err != nil {
		stop()
		return nil, fmt.Errorf("watch tap id bucket %s: %w", KVBucket, err)
	}
	d := &KV{kv: kv, host: host, log: log, byID: map[int]kvEntry{}, ready: make(chan struct{}), stop: stop, done: make(chan struct{})}
	go d.watch(watchCtx, w)
	select {
	case <-d.ready:
	case <-ctx.Done():
		d.Close()
		return nil, fmt.Errorf("load tap id bucket %s: %w", KVBucket, ctx.Err())
	}
	return d, nil
}

// Close stops watching the bucket.
func (d *KV) Close() {
	d.stop()
	<-d.done
}

func (d *KV) watch(ctx context.Context, w jetstream.KeyWatcher) {
	defer close(d.done)
	defer func() { _ = w.Stop() }()
	readyOnce := sync.OnceFunc(func() { close(d.ready) })
	defer readyOnce()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil { // end of the initial values
				readyOnce()
				continue
			}
			d.apply(e)
		}
	}
}

// apply folds one bucket entry into the cache and tells the subscribers.
func (d *KV) apply(e jetstream.KeyValueEntry) {
	id, err := strconv.Atoi(strings.TrimPrefix(e.Key(), keyPrefix))
	if err != nil || !strings.HasPrefix(e.Key(), keyPrefix) {
		return
	}
	var changed []string
	d.mu.Lock()
	old, had := d.byID[id]
	if had {
		changed = append(changed, old.info.ServiceID)
	}
	if e.Operation() == jetstream.KeyValuePut {
		var info ServiceInfo
		if err := json.Unmarshal(e.Value(), &info); err != nil {
			d.log.Warn().Err(err).Str("key", e.Key()).Msg("undecodable tap id entry")
			delete(d.byID, id)
		} else {
			info.TapID = id
			d.byID[id] = kvEntry{info: info, rev: e.Revision()}
			if info.ServiceID != old.info.ServiceID {
				changed = append(changed, info.ServiceID)
			}
		}
	} else {
		delete(d.byID, id)
	}
	d.mu.Unlock()
	for _, s := range changed {
		d.subs.notify(s)
	}
}

func (d *KV) findLocked(serviceID string) (kvEntry, bool) {
	best, found := kvEntry{}, false
	for _, e := range d.byID {
		if e.info.ServiceID == serviceID && (!found || e.info.TapID < best.info.TapID) {
			best, found = e, true
		}
	}
	return best, found
}

// Allocate implements Directory: the lowest free tap id is claimed with kv.Create; losing a
// race to another agent moves on to the next id.
func (d *KV) Allocate(ctx context.Context, s ServiceInfo) (ServiceInfo, error) {
	d.mu.Lock()
	e, ok := d.findLocked(s.ServiceID)
	var free []int
	if !ok {
		for id := FirstTapID; id < EndTapID; id++ {
			if _, used := d.byID[id]; !used {
				free = append(free, id)
			}
		}
	}
	d.mu.Unlock()
	if ok {
		s.TapID = e.info.TapID
		if e.info == s {
			return s, nil
		}
		// The service moved to another port or host: it keeps its tap id, so flows on
		// other hosts need no change.
		rev, err := d.kv.Update(ctx, key(s.TapID), encode(s), e.rev)
		if err != nil {
			return ServiceInfo{}, fmt.Errorf("update tap id %d of tap service %s: %w", s.TapID, s.ServiceID, err)
		}
		d.remember(s, rev)
		return s, nil
	}
	for _, id := range free {
		s.TapID = id
		rev, err := d.kv.Create(ctx, key(id), encode(s))
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue // another agent was faster; its entry reaches the cache through the watch
		}
		if err != nil {
			return ServiceInfo{}, fmt.Errorf("claim tap id %d for tap service %s: %w", id, s.ServiceID, err)
		}
		d.remember(s, rev)
		return s, nil
	}
	return ServiceInfo{}, ErrExhausted
}

// remember puts a write into the cache at once, so a Lookup right after Allocate sees it;
// the watch delivers the same entry again later.
func (d *KV) remember(s ServiceInfo, rev uint64) {
	d.mu.Lock()
	if old, ok := d.byID[s.TapID]; !ok || old.rev < rev {
		d.byID[s.TapID] = kvEntry{info: s, rev: rev}
	}
	d.mu.Unlock()
	d.subs.notify(s.ServiceID)
}

// Release implements Directory. Only entries this host owns are freed, so a service that
// moved to another host (and kept its id there) is not released by its old host.
func (d *KV) Release(ctx context.Context, serviceID string) error {
	d.mu.Lock()
	var mine []kvEntry
	for _, e := range d.byID {
		if e.info.ServiceID == serviceID && (e.info.Host == d.host || d.host == "") {
			mine = append(mine, e)
		}
	}
	d.mu.Unlock()
	var errs []error
	for _, e := range mine {
		err := d.kv.Delete(ctx, key(e.info.TapID), jetstream.LastRevision(e.rev))
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // changed meanwhile (taken over by another host): not ours any more
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("release tap id %d of tap service %s: %w", e.info.TapID, serviceID, err))
			continue
		}
		d.mu.Lock()
		if cur, ok := d.byID[e.info.TapID]; ok && cur.rev == e.rev {
			delete(d.byID, e.info.TapID)
		}
		d.mu.Unlock()
		d.subs.notify(serviceID)
	}
	return errors.Join(errs...)
}

// Lookup implements Directory.
func (d *KV) Lookup(serviceID string) (ServiceInfo, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.findLocked(serviceID)
	return e.info, ok
}

// Subscribe implements Directory.
func (d *KV) Subscribe(fn func(serviceID string)) func() { return d.subs.add(fn) }

func key(id int) string { return keyPrefix + strconv.Itoa(id) }

func encode(s ServiceInfo) []byte {
	b, _ := json.Marshal(s) // plain strings and an int: cannot fail
	return b
}
