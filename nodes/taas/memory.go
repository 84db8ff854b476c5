package taas

import (
	"context"
	"sync"
)

// Memory is a Directory inside one process: the allocation rules of KV without JetStream.
type Memory struct {
	mu   sync.Mutex
	byID map[int]ServiceInfo // tap id -> service
	subs subscribers
}

var _ Directory = (*Memory)(nil)

// NewMemory returns an empty directory.
func NewMemory() *Memory { return &Memory{byID: map[int]ServiceInfo{}} }

// Allocate implements Directory.
func (m *Memory) Allocate(ctx context.Context, s ServiceInfo) (ServiceInfo, error) {
	if err := ctx.Err(); err != nil {
		return ServiceInfo{}, err
	}
	m.mu.Lock()
	id, ok := m.findLocked(s.ServiceID)
	if !ok {
		for id = FirstTapID; id < EndTapID; id++ {
			if _, used := m.byID[id]; !used {
				ok = true
				break
			}
		}
		if !ok {
			m.mu.Unlock()
			return ServiceInfo{}, ErrExhausted
		}
	}
	s.TapID = id
	changed := m.byID[id] != s
	m.byID[id] = s
	m.mu.Unlock()
	if changed {
		m.subs.notify(s.ServiceID)
	}
	return s, nil
}

func (m *Memory) findLocked(serviceID string) (int, bool) {
	for id, s := range m.byID {
		if s.ServiceID == serviceID {
			return id, true
		}
	}
	return 0, false
}

// Release implements Directory.
func (m *Memory) Release(ctx context.Context, serviceID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	id, ok := m.findLocked(serviceID)
	if ok {
		delete(m.byID, id)
	}
	m.mu.Unlock()
	if ok {
		m.subs.notify(serviceID)
	}
	return nil
}

// Lookup implements Directory.
func (m *Memory) Lookup(serviceID string) (ServiceInfo, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id, ok := m.findLocked(serviceID)
	return m.byID[id], ok
}

// Subscribe implements Directory.
func (m *Memory) Subscribe(fn func(serviceID string)) func() { return m.subs.add(fn) }

// subscribers is the callback list of a Directory.
type subscribers struct {
	mu   sync.Mutex
	next int
	fns  map[int]func(string)
}

func (s *subscribers) add(fn func(string)) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fns == nil {
		s.fns = map[int]func(string){}
	}
	id := s.next
	s.next++
	s.fns[id] = fn
	return func() {
		s.mu.Lock()
		delete(s.fns, id)
		s.mu.Unlock()
	}
}

func (s *subscribers) notify(serviceID string) {
	s.mu.Lock()
	fns := make([]func(string), 0, len(s.fns))
	for _, fn := range s.fns {
		fns = append(fns, fn)
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn(serviceID)
	}
}
