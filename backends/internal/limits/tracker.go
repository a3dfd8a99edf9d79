package limits

import (
	"context"
	"sync"

	"github.com/moatsh/moat/errdefs"
)

// Tracker remembers the running commands of each sandbox, so that Destroy (possibly
// called on another Instance attached to the same sandbox in this process) can kill them
// and no new one starts while it runs. The zero value is ready to use.
type Tracker struct {
	mu   sync.Mutex
	byID map[string]*tracked
}

type tracked struct {
	next    int
	cancels map[int]context.CancelFunc
	dead    bool
}

func (t *Tracker) get(id string) *tracked {
	if t.byID == nil {
		t.byID = map[string]*tracked{}
	}
	s := t.byID[id]
	if s == nil {
		s = &tracked{cancels: map[int]context.CancelFunc{}}
		t.byID[id] = s
	}
	return s
}

// Start registers one command of sandbox id. It returns a context that Kill cancels and a
// func to call when the command ended; NotFound once the sandbox was killed.
func (t *Tracker) Start(ctx context.Context, id string) (context.Context, func(), error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.get(id)
	if s.dead {
		return nil, nil, errdefs.NotFoundf("sandbox %s is gone", id)
	}
	ctx, cancel := context.WithCancel(ctx)
	n := s.next
	s.next++
	s.cancels[n] = cancel
	return ctx, func() {
		cancel()
		t.mu.Lock()
		delete(s.cancels, n)
		t.mu.Unlock()
	}, nil
}

// Kill cancels every running command of sandbox id and refuses new ones until Revive.
func (t *Tracker) Kill(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.get(id)
	s.dead = true
	for _, c := range s.cancels {
		c()
	}
}

// Revive allows commands of sandbox id again (a sandbox re-created under the same id).
func (t *Tracker) Revive(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byID, id)
}
