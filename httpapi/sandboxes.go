package httpapi

import (
	"context"

	"net/http"
	"strconv"
	"strings"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/errdefs"
)

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) {
	var spec apitype.CreateSandboxRequest
	if err := decodeJSON(r, w, s.opts.MaxJSONBytes, &spec); err != nil {
		s.writeError(w, r, err)
		return
	}
	// A client that goes away cancels the create: nobody would learn the new id. The
	// manager records the failed create, and the reconciler removes what a backend made.
	ctx, cancel := s.opContext(r.Context())
	defer cancel()
	sb, err := s.m.Create(ctx, spec)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	info, err := sb.Info(ctx)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/sandboxes/"+info.ID)
	writeJSON(w, http.StatusCreated, info)
}

// listSandboxes filters by ?backend=, ?session=, ?status= (repeatable or comma-separated),
// ?name=, ?label=k=v (repeatable, all must match) and ?include_destroyed=1.
func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := moat.ListFilter{Backend: q.Get("backend"), SessionID: q.Get("session"), Name: q.Get("name")}
	f.IncludeDestroyed, _ = strconv.ParseBool(q.Get("include_destroyed"))
	for _, v := range q["status"] {
		for _, st := range strings.Split(v, ",") {
			switch moat.Status(st) {
			case moat.StatusCreating, moat.StatusActive, moat.StatusPaused, moat.StatusStopped,
				moat.StatusError, moat.StatusDestroyed:
				f.Status = append(f.Status, moat.Status(st))
			default:
				s.writeError(w, r, errdefs.InvalidArgumentf("httpapi: unknown status %q", st))
				return
			}
		}
	}
	for _, l := range q["label"] {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			s.writeError(w, r, errdefs.InvalidArgumentf("httpapi: label filter %q: want key=value", l))
			return
		}
		if f.Labels == nil {
			f.Labels = map[string]string{}
		}
		f.Labels[k] = v
	}
	infos, err := s.m.List(r.Context(), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if infos == nil {
		infos = []moat.Info{}
	}
	writeJSON(w, http.StatusOK, apitype.SandboxList{Sandboxes: infos})
}

// withSandbox runs op on the sandbox {id} under the op context. An error (the lookup's or
// the one op returns) is answered with its status: op returns one only before it has
// written an answer.
func (s *Server) withSandbox(w http.ResponseWriter, r *http.Request, op func(ctx context.Context, sb *moat.Sandbox) error) {
	ctx, cancel := s.opContext(r.Context())
	defer cancel()
	sb, err := s.m.Get(ctx, r.PathValue("id"))
	if err == nil {
		err = op(ctx, sb)
	}
	if err != nil {
		s.writeError(w, r, err)
	}
}

// sandboxJSON runs op on the sandbox {id} (see withSandbox) and answers status with the
// value it returns.
func sandboxJSON[T any](s *Server, w http.ResponseWriter, r *http.Request, status int, op func(ctx context.Context, sb *moat.Sandbox) (T, error)) {
	s.withSandbox(w, r, func(ctx context.Context, sb *moat.Sandbox) error {
		v, err := op(ctx, sb)
		if err != nil {
			return err
		}
		writeJSON(w, status, v)
		return nil
	})
}

// noContent answers 204 when err is nil, and returns err.
func noContent(w http.ResponseWriter, err error) error {
	if err == nil {
		w.WriteHeader(http.StatusNoContent)
	}
	return err
}

func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request) {
	sandboxJSON(s, w, r, http.StatusOK, func(ctx context.Context, sb *moat.Sandbox) (moat.Info, error) {
		return sb.Info(ctx)
	})
}

func (s *Server) destroySandbox(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.opContext(r.Context())
	defer cancel()
	if err := s.m.Destroy(ctx, r.PathValue("id")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) stopSandbox(w http.ResponseWriter, r *http.Request) {
	s.setRunning(w, r, (*moat.Sandbox).Stop)
}

func (s *Server) startSandbox(w http.ResponseWriter, r *http.Request) {
	s.setRunning(w, r, (*moat.Sandbox).Start)
}

func (s *Server) pauseSandbox(w http.ResponseWriter, r *http.Request) {
	s.setRunning(w, r, (*moat.Sandbox).Pause)
}

func (s *Server) resumeSandbox(w http.ResponseWriter, r *http.Request) {
	s.setRunning(w, r, (*moat.Sandbox).Resume)
}

func (s *Server) snapshotSandbox(w http.ResponseWriter, r *http.Request) {
	var req apitype.SnapshotRequest
	if err := decodeJSON(r, w, s.opts.MaxJSONBytes, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	sandboxJSON(s, w, r, http.StatusCreated, func(ctx context.Context, sb *moat.Sandbox) (moat.Snapshot, error) {
		return sb.Snapshot(ctx, req.Name)
	})
}

func (s *Server) exposePort(w http.ResponseWriter, r *http.Request) {
	port, err := strconv.Atoi(r.PathValue("port"))
	if err != nil {
		s.writeError(w, r, errdefs.InvalidArgumentf("httpapi: port %q is not a number", r.PathValue("port")))
		return
	}
	sandboxJSON(s, w, r, http.StatusOK, func(ctx context.Context, sb *moat.Sandbox) (apitype.PortResponse, error) {
		u, err := sb.ExposePort(ctx, port)
		return apitype.PortResponse{Port: port, URL: u}, err
	})
}

func (s *Server) setRunning(w http.ResponseWriter, r *http.Request, op func(*moat.Sandbox, context.Context) error) {
	sandboxJSON(s, w, r, http.StatusOK, func(ctx context.Context, sb *moat.Sandbox) (moat.Info, error) {
		if err := op(sb, ctx); err != nil {
			return moat.Info{}, err
		}
		return sb.Info(ctx)
	})
}

func (s *Server) backends(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.m.Backends(r.Context()))
}

func (s *Server) listSettings(w http.ResponseWriter, r *http.Request) {
	views, err := s.m.AllBackendSettings(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apitype.BackendSettingsList{Backends: views})
}

func (s *Server) getSettings(w http.ResponseWriter, r *http.Request) {
	v, err := s.m.BackendSettings(r.Context(), r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) putSettings(w http.ResponseWriter, r *http.Request) {
	var body apitype.PutBackendSettings
	if err := decodeJSON(r, w, 64<<10, &body); err != nil {
		s.writeError(w, r, err)
		return
	}
	name := r.PathValue("name")
	v, err := s.m.PutBackendSettings(r.Context(), name, body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	keys := make([]string, 0, len(body))
	for k := range body {
		keys = append(keys, k)
	}
	// Keys only: values may be secrets.
	s.log.Info("backend settings changed", "request_id", RequestID(r.Context()), "backend", name, "keys", keys)
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) getSessionBackend(w http.ResponseWriter, r *http.Request) {
	sess := r.PathValue("session")
	name, err := s.m.SessionBackend(r.Context(), sess)
	if err != nil {
		if errdefs.Is(err, errdefs.KindNotFound) {
			err = errdefs.NotFoundf("httpapi: session %q has no backend override", sess)
		}
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apitype.SessionBackend{Session: sess, Backend: name})
}

func (s *Server) putSessionBackend(w http.ResponseWriter, r *http.Request) {
	var body apitype.SessionBackend
	if err := decodeJSON(r, w, 4<<10, &body); err != nil {
		s.writeError(w, r, err)
		return
	}
	sess := r.PathValue("session")
	if body.Session != "" && body.Session != sess {
		s.writeError(w, r, errdefs.InvalidArgumentf("httpapi: body names session %q, path %q", body.Session, sess))
		return
	}
	if body.Backend == "" {
		s.writeError(w, r, errdefs.InvalidArgumentf("httpapi: missing \"backend\""))
		return
	}
	if err := s.m.SetSessionBackend(r.Context(), sess, body.Backend); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apitype.SessionBackend{Session: sess, Backend: body.Backend})
}

func (s *Server) deleteSessionBackend(w http.ResponseWriter, r *http.Request) {
	if err := s.m.ClearSessionBackend(r.Context(), r.PathValue("session")); err != nil && !errdefs.Is(err, errdefs.KindNotFound) {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, apitype.Health{Status: "ok"})
}

// readyz is ready when the server is not shutting down and the store answers.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, apitype.Health{Status: "shutting down"})
		return
	}
	_, err := s.m.Store().GetSetting(r.Context(), "readyz/probe")
	if err != nil && !errdefs.Is(err, errdefs.KindNotFound) {
		// readyz needs no token: the detail (a driver's message may name hosts, paths or
		// a DSN) goes to the log only.
		s.log.Warn("readyz: store check failed", "request_id", RequestID(r.Context()), "err", err)
		writeJSON(w, http.StatusServiceUnavailable, apitype.Health{Status: "store unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, apitype.Health{Status: "ok"})
}

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(OpenAPI)
}
