package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat/internal/syncbuf"
)

func envMap(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestServeAndShutdown(t *testing.T) {
	home := t.TempDir()
	env := envMap(map[string]string{"MOAT_HOME": home, "MOAT_API_TOKEN": "tok-123", "MOAT_BACKEND": "auto"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncbuf.Buffer
	ready := make(chan string, 1)
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, []string{"--listen", "127.0.0.1:0"}, env, &stdout, &stderr, ready) }()
	var url string
	select {
	case url = <-ready:
	case code := <-exit:
		t.Fatalf("moatd exited %d: %s", code, stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatal("moatd did not start")
	}
	if !strings.Contains(stdout.String(), url) {
		t.Errorf("stdout does not print the url: %q", stdout.String())
	}
	get := func(path, token string) int {
		req, _ := http.NewRequest("GET", url+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get("/healthz", ""); c != 200 {
		t.Errorf("healthz: %d", c)
	}
	if c := get("/v1/sandboxes", ""); c != 401 {
		t.Errorf("without token: %d", c)
	}
	if c := get("/v1/sandboxes", "tok-123"); c != 200 {
		t.Errorf("with token: %d", c)
	}
	// The web UI loads without the token (it asks for one).
	if c := get("/", ""); c != 200 {
		t.Errorf("web UI: %d", c)
	}
	if c := get("/ui/app.js", ""); c != 200 {
		t.Errorf("web UI script: %d", c)
	}
	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Errorf("exit %d: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("moatd did not stop")
	}
	if strings.Contains(stderr.String(), "tok-123") {
		t.Error("the token reached the logs")
	}
}

func TestRefusesOpenNonLoopback(t *testing.T) {
	env := envMap(map[string]string{"MOAT_HOME": t.TempDir()})
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--listen", "0.0.0.0:0"}, env, &stdout, &stderr, nil)
	if code == 0 || !strings.Contains(stderr.String(), "without an API token") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}

func TestBadFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--nope"}, envMap(nil), &stdout, &stderr, nil); code != 2 {
		t.Errorf("bad flag: exit %d", code)
	}
	if code := run(context.Background(), []string{"-c", "/does/not/exist.toml", "--listen", "127.0.0.1:0"}, envMap(map[string]string{"MOAT_HOME": t.TempDir()}), &stdout, &stderr, nil); code != 1 {
		t.Errorf("missing config: exit %d", code)
	}
}
