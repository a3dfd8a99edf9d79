package httpapi

import (
	"net/http"

	"github.com/moatsh/moat/apitype"
	"github.com/moatsh/moat/errdefs"
)

// Session records: /v1/sessions and /v1/sessions/{session}. The {session} segment is the
// session id, path-escaped ("agent 1/x" is agent%201%2Fx).

func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) {
	list, err := s.m.Sessions(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if list == nil {
		list = []apitype.Session{}
	}
	writeJSON(w, http.StatusOK, apitype.SessionList{Sessions: list})
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) {
	sess, err := s.m.Session(r.Context(), r.PathValue("session"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sess)
}

func (s *Server) putSession(w http.ResponseWriter, r *http.Request) {
	var body apitype.Session
	if err := decodeJSON(r, w, 64<<10, &body); err != nil {
		s.writeError(w, r, err)
		return
	}
	id := r.PathValue("session")
	if body.ID != "" && body.ID != id {
		s.writeError(w, r, errdefs.InvalidArgumentf("httpapi: body names session %q, path %q", body.ID, id))
		return
	}
	body.ID = id
	sess, err := s.m.PutSession(r.Context(), body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sess)
}

func (s *Server) patchSession(w http.ResponseWriter, r *http.Request) {
	var body apitype.SessionPatch
	if err := decodeJSON(r, w, 64<<10, &body); err != nil {
		s.writeError(w, r, err)
		return
	}
	sess, err := s.m.PatchSession(r.Context(), r.PathValue("session"), body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sess)
}

func (s *Server) deleteSession(w http.ResponseWriter, r *http.Request) {
	if err := s.m.DeleteSession(r.Context(), r.PathValue("session")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// destroySessionSandboxes answers 200 with what was destroyed and what was not, also when
// some sandboxes failed (the client turns Failed back into the library's error); an error
// status only when nothing was attempted (a bad session id, the store failing).
func (s *Server) destroySessionSandboxes(w http.ResponseWriter, r *http.Request) {
	td, err := s.m.DestroySessionSandboxes(r.Context(), r.PathValue("session"))
	if err != nil && len(td.Failed) == 0 {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("session sandboxes destroyed", "request_id", RequestID(r.Context()), "session", td.Session,
		"destroyed", len(td.Destroyed), "failed", len(td.Failed))
	writeJSON(w, http.StatusOK, td)
}
