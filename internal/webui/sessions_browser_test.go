package webui

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/httpapi"
)

// openPage opens url in a new tab of a fresh headless Chromium and returns its driver.
func openPage(t *testing.T, url string) *page {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	d := dialCDP(ctx, t, startChromium(ctx, t))
	res, err := d.call(ctx, "", "Target.createTarget", map[string]any{"url": url})
	if err != nil {
		t.Fatal(err)
	}
	var target struct {
		TargetID string `json:"targetId"`
	}
	_ = json.Unmarshal(res, &target)
	res, err = d.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true})
	if err != nil {
		t.Fatal(err)
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	_ = json.Unmarshal(res, &att)
	return &page{t: t, ctx: ctx, d: d, session: att.SessionID}
}

// TestBrowserSessions: the Sessions page lists the stored sessions (ids as text, not
// markup), loads one into the form, saves an edit as the whole record, and destroys the
// session's sandboxes.
func TestBrowserSessions(t *testing.T) {
	tg := serve(t, httpapi.Options{})
	ctx := context.Background()
	const id = "s-<i>1"
	if _, err := tg.Manager.PutSession(ctx, moat.Session{ID: id, Image: "img:1",
		Limits: moat.Limits{MemoryBytes: 256 << 20}, Env: map[string]string{"A": "1"}}); err != nil {
		t.Fatal(err)
	}
	p := openPage(t, tg.Server.URL+"/#sessions")
	p.waitText("the session row", `document.getElementById("sess-rows").textContent`, func(s string) bool { return strings.Contains(s, id) && strings.Contains(s, "256m") })
	if n := p.eval(`document.querySelectorAll("#sess-rows i").length`); string(n) != "0" {
		t.Errorf("a session id was rendered as markup")
	}
	p.eval(`document.querySelector("#sess-rows button.link").click(); ""`)
	if got := p.waitText("the form", `document.getElementById("sess-memory").value`, func(s string) bool { return s != "" }); got != "256m" {
		t.Errorf("memory in the form %q", got)
	}
	p.eval(`document.getElementById("sess-image").value = "img:2";
		document.getElementById("sess-pids").value = "300";
		document.getElementById("sess-form").requestSubmit(); ""`)
	p.waitText("the saved message", `document.getElementById("sess-result").textContent`, func(s string) bool { return strings.HasPrefix(s, "Saved session") })
	s, err := tg.Manager.Session(ctx, id)
	if err != nil || s.Image != "img:2" || s.Limits.PIDs != 300 || s.Limits.MemoryBytes != 256<<20 || s.Env["A"] != "1" || s.Mode != moat.SessionIsolated {
		t.Errorf("session after saving in the page: %+v, %v", s, err)
	}

	for range 2 {
		if _, err := tg.API.Create(ctx, moat.Spec{SessionID: id}); err != nil {
			t.Fatal(err)
		}
	}
	p.eval(`window.confirm = () => true; document.getElementById("sess-destroy").click(); ""`)
	p.waitText("the teardown", `document.getElementById("sess-result").textContent`, func(s string) bool { return strings.HasPrefix(s, "Destroyed 2 sandboxes") })
	if left, err := tg.Manager.List(ctx, moat.ListFilter{SessionID: id}); err != nil || len(left) != 0 {
		t.Errorf("left after destroying in the page: %v, %v", left, err)
	}
	p.eval(`document.getElementById("sess-clear").click(); ""`)
	p.waitText("the deleted message", `document.getElementById("sess-result").textContent`, func(s string) bool { return strings.HasPrefix(s, "Deleted the settings") })
	if _, err := tg.Manager.Session(ctx, id); err == nil {
		t.Errorf("session still stored after Delete settings")
	}
}
