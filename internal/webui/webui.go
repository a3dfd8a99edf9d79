// Package webui answers "what does moatd show in a browser?": a static HTML/CSS/JavaScript
// page (no build step, nothing fetched from elsewhere) embedded in the binary, served at /
// and /ui/..., that drives the v1 API of the same origin: sandboxes (create, exec, files,
// lifecycle, terminal), backends, remote backend settings and sessions (their settings, and destroying their sandboxes).
//
// Mount it with httpapi.Options{UI: webui.Handler()}.
package webui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

//go:embed static
var static embed.FS

// contentTypes are the types of the files the UI may embed; any other extension is an
// error at start-up (and in the tests), not a guess.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".json": "application/json",
}

// CSP allows nothing but this origin: scripts and styles from the embedded files only (no
// inline code), API calls and WebSockets to the same origin, no framing.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type asset struct {
	name  string
	body  []byte
	ctype string
	etag  string
}

var (
	loadOnce sync.Once
	loaded   map[string]*asset
	loadErr  error
)

func load() (map[string]*asset, error) {
	loadOnce.Do(func() { loaded, loadErr = build() })
	return loaded, loadErr
}

func build() (map[string]*asset, error) {
	out := map[string]*asset{}
	add := func(urlPath, name string, body []byte) error {
		ct, ok := contentTypes[path.Ext(name)]
		if !ok {
			return fmt.Errorf("webui: %s: no content type for %q files", name, path.Ext(name))
		}
		sum := sha256.Sum256(body)
		out[urlPath] = &asset{name: name, body: body, ctype: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, "static/")
		if rel == "index.html" {
			return add("/", rel, b)
		}
		return add("/ui/"+rel, rel, b)
	})
	if err != nil {
		return nil, err
	}
	if out["/"] == nil {
		return nil, fmt.Errorf("webui: static/index.html is missing")
	}
	return out, nil
}

// Handler serves the UI: GET / is the page, GET /ui/<file> its files. Every answer says
// "no-cache" with an ETag, so a browser revalidates (a cheap 304) and never runs a stale
// script against a newer moatd; there is no build step to give files hashed names.
func Handler() http.Handler {
	as, err := load()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", CSP)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		a := as[r.URL.Path]
		if a == nil {
			http.NotFound(w, r)
			return
		}
		h.Set("Content-Type", a.ctype)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		// ServeContent answers If-None-Match with 304, HEAD and ranges.
		http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
	})
}
