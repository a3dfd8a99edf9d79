package fakeprovider

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

func TestFaults(t *testing.T) {
	var fs Faults
	fs.Inject(Fault{Count: 2, Status: 429, RetryAfter: "1"})
	fs.Inject(Fault{PathPrefix: "/files", Status: 500})
	if f, ok := fs.Take("/files/x"); !ok || f.Status != 429 {
		t.Fatalf("first: %+v %v", f, ok)
	}
	if f, ok := fs.Take("/sandboxes"); !ok || f.Status != 429 {
		t.Fatalf("second use of Count 2: %+v %v", f, ok)
	}
	if _, ok := fs.Take("/sandboxes"); ok {
		t.Fatal("the /files fault applied to /sandboxes")
	}
	if f, ok := fs.Take("/files"); !ok || f.Status != 500 {
		t.Fatalf("path fault: %+v %v", f, ok)
	}
	if _, ok := fs.Take("/files"); ok {
		t.Fatal("queue not empty")
	}
}

func TestApply(t *testing.T) {
	envelope := func(w http.ResponseWriter, _ *http.Request, status int) {
		WriteJSON(w, status, map[string]int{"code": status})
	}
	r := httptest.NewRequest("GET", "/x", nil)
	w := httptest.NewRecorder()
	if !Apply(w, r, Fault{Status: 429, RetryAfter: "2"}, "text/plain", envelope) || w.Code != 429 ||
		w.Header().Get("Retry-After") != "2" || w.Body.String() != "{\"code\":429}\n" {
		t.Errorf("envelope answer: %d %v %q", w.Code, w.Header(), w.Body)
	}
	w = httptest.NewRecorder()
	if !Apply(w, r, Fault{Status: 502, Body: "<html>"}, "text/html", envelope) || w.Code != 502 ||
		w.Header().Get("Content-Type") != "text/html" || w.Body.String() != "<html>" {
		t.Errorf("body answer: %d %v %q", w.Code, w.Header(), w.Body)
	}
	if Apply(httptest.NewRecorder(), r, Fault{Delay: time.Millisecond}, "", envelope) {
		t.Error("a delay alone must let the request be served")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if !Apply(httptest.NewRecorder(), r.WithContext(ctx), Fault{Delay: time.Hour}, "", envelope) {
		t.Error("a request gone during the delay is done")
	}
}

func TestCounterBearerTable(t *testing.T) {
	var c Counter
	c.Count(httptest.NewRequest("GET", "/a?q=1", nil))
	c.Count(httptest.NewRequest("GET", "/a", nil))
	c.Count(httptest.NewRequest("POST", "/a", nil))
	if c.Total() != 3 || c.Of("GET /a") != 2 || c.Of("POST /a") != 1 {
		t.Errorf("counts %d %d", c.Total(), c.Of("GET /a"))
	}
	r := httptest.NewRequest("GET", "/", nil)
	if _, ok := Bearer(r); ok {
		t.Error("no header")
	}
	r.Header.Set("Authorization", "Bearer ")
	if _, ok := Bearer(r); ok {
		t.Error("empty token")
	}
	r.Header.Set("Authorization", "Bearer tok")
	if tok, ok := Bearer(r); !ok || tok != "tok" {
		t.Error("token")
	}
	var mu sync.Mutex
	m := map[string]int{"b": 2, "a": 1}
	if k := Keys(&mu, m); len(k) != 2 || k[0] != "a" {
		t.Errorf("keys %v", k)
	}
	if v, ok := Remove(&mu, m, "a"); !ok || v != 1 || len(m) != 1 {
		t.Errorf("remove %v %v", v, ok)
	}
	if _, ok := Remove(&mu, m, "zz"); ok {
		t.Error("removed a missing key")
	}
	if all := TakeAll(&mu, &m); len(all) != 1 || len(m) != 0 {
		t.Errorf("take all %v %v", all, m)
	}
}
