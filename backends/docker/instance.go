package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/moatsh/moat/agent"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// Instance is one sandbox container. It is safe for concurrent use.
type Instance struct {
	b       *Backend
	id      string // full container id
	name    string
	runtime string // OCI runtime the container was created with ("" = daemon default)

	agentDir string        // host directory mounted at /.moat; "" without the agent
	agent    *agent.Client // nil without the agent

	killMu      sync.Mutex
	killDecided bool
	hostKill    bool // exec processes can be killed from this host by pid
}

func (b *Backend) newInstance(id, name, runtime, agentDir string) *Instance {
	return &Instance{b: b, id: id, name: name, runtime: runtime, agentDir: agentDir,
		agent: agentClient(agentDir)}
}

// ContainerID returns the Docker container id.
func (i *Instance) ContainerID() string { return i.id }

// Handle implements backend.Instance.
func (i *Instance) Handle() backend.Handle {
	st, _ := json.Marshal(handleState{ContainerID: i.id, Name: i.name, AgentDir: i.agentDir})
	return backend.Handle{Backend: Name, Version: handleVersion, State: st}
}

// Status implements backend.Instance.
func (i *Instance) Status(ctx context.Context) (backend.Status, error) {
	info, err := i.b.cli.ContainerInspect(ctx, i.id)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return backend.StatusGone, nil
		}
		return "", i.b.mapErr(err, "docker: inspect container %s", i.name)
	}
	switch {
	case info.State == nil:
		return backend.StatusStopped, nil
	case info.State.Paused:
		return backend.StatusPaused, nil
	case info.State.Running:
		return backend.StatusRunning, nil
	case info.State.Dead || info.State.Status == "removing":
		return backend.StatusGone, nil
	}
	return backend.StatusStopped, nil
}

// Destroy implements backend.Instance: the container and its anonymous volumes go; a
// container that is already gone is success.
func (i *Instance) Destroy(ctx context.Context) error {
	err := i.b.cli.ContainerRemove(ctx, i.id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	// Conflict is "removal already in progress": someone else finishes the container, but
	// its agent directory is ours to remove.
	if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
		return i.b.mapErr(err, "docker: remove container %s", i.name)
	}
	i.b.removeAgentDir(i.agentDir)
	return nil
}

// Stop implements backend.Stopper. The filesystem stays; Start brings the container back.
func (i *Instance) Stop(ctx context.Context) error {
	if err := i.b.cli.ContainerStop(ctx, i.id, container.StopOptions{}); err != nil {
		return i.b.mapErr(err, "docker: stop container %s", i.name)
	}
	return nil
}

// Start implements backend.Stopper. Starting a running container succeeds.
func (i *Instance) Start(ctx context.Context) error {
	if err := i.b.cli.ContainerStart(ctx, i.id, container.StartOptions{}); err != nil {
		return i.b.mapErr(err, "docker: start container %s", i.name)
	}
	if i.agent != nil {
		// The agent restarts with the container; until it answers, Exec falls back.
		_ = i.waitAgent(ctx)
	}
	return nil
}

// Pause implements backend.Pauser (the cgroup freezer).
func (i *Instance) Pause(ctx context.Context) error {
	if err := i.b.cli.ContainerPause(ctx, i.id); err != nil {
		return i.pauseErr(ctx, err, "pause")
	}
	return nil
}

// Resume implements backend.Pauser.
func (i *Instance) Resume(ctx context.Context) error {
	if err := i.b.cli.ContainerUnpause(ctx, i.id); err != nil {
		return i.pauseErr(ctx, err, "unpause")
	}
	return nil
}

// pauseErr makes pausing a paused (or resuming a running) container idempotent; the daemon
// refuses those (with Conflict or a plain error, depending on the version).
func (i *Instance) pauseErr(ctx context.Context, err error, op string) error {
	if !cerrdefs.IsNotFound(err) && !client.IsErrConnectionFailed(err) {
		if st, serr := i.Status(ctx); serr == nil {
			switch {
			case op == "pause" && st == backend.StatusPaused, op == "unpause" && st == backend.StatusRunning:
				return nil
			case st == backend.StatusStopped:
				return errdefs.FailedPreconditionf("docker: %s container %s: it is stopped", op, i.name)
			}
		}
	}
	return i.b.mapErr(err, "docker: %s container %s", op, i.name)
}

// tagPart is what Docker accepts in an image tag.
var tagPart = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// Snapshot implements backend.Snapshotter: the container's filesystem is committed to the
// local image moat-snapshot:<container name without "moat-">-<name>, which CreateRequest.Image
// may then name. Volumes are not part of it. The container is paused while committing.
func (i *Instance) Snapshot(ctx context.Context, name string) (backend.Snapshot, error) {
	tag := fmt.Sprintf("%s-%s", trimMoat(i.name), name)
	if !tagPart.MatchString(tag) {
		return backend.Snapshot{}, errdefs.InvalidArgumentf("docker: snapshot name %q does not make a valid image tag", name)
	}
	ref := "moat-snapshot:" + tag
	resp, err := i.b.cli.ContainerCommit(ctx, i.id, container.CommitOptions{
		Reference: ref,
		Pause:     true,
		Comment:   "moat snapshot of " + i.name,
	})
	if err != nil {
		return backend.Snapshot{}, i.b.mapErr(err, "docker: commit container %s", i.name)
	}
	return backend.Snapshot{ID: resp.ID, Image: ref, CreatedAt: time.Now().UTC()}, nil
}

func trimMoat(name string) string {
	if len(name) > 5 && name[:5] == "moat-" {
		return name[5:]
	}
	return name
}

var (
	_ backend.Instance       = (*Instance)(nil)
	_ backend.Stopper        = (*Instance)(nil)
	_ backend.Pauser         = (*Instance)(nil)
	_ backend.Snapshotter    = (*Instance)(nil)
	_ backend.FileTransferer = (*Instance)(nil)
)
