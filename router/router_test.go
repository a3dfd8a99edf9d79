package router

import (
	"strings"
	"testing"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// ranks are the auto ranks the real backends state; "fake" has none (never auto).
var ranks = map[string]int{
	"docker": backend.RankDocker, "bwrap": backend.RankBwrap, "vercel": backend.RankVercel,
	"daytona": backend.RankDaytona, "host": backend.RankHost,
}

func cand(name string, iso backend.Isolation, st backend.HealthState, reason string) Candidate {
	return Candidate{Name: name, Descriptor: backend.Descriptor{Name: name, Isolation: iso, AutoRank: ranks[name]},
		Health: backend.Health{State: st, Reason: reason}}
}

func TestAutoPicksFirstUsableInOrder(t *testing.T) {
	cands := []Candidate{
		cand("host", backend.IsolationNone, backend.Degraded, "host: no isolation"),
		cand("bwrap", backend.IsolationNamespace, backend.Ready, ""),
		cand("docker", backend.IsolationContainer, backend.Unavailable, "docker: cannot reach /var/run/docker.sock"),
		cand("daytona", backend.IsolationRemote, backend.Ready, ""),
		cand("fake", backend.IsolationContainer, backend.Ready, ""),
	}
	d, err := Auto(cands, Policy{AllowUnisolated: true})
	if err != nil {
		t.Fatal(err)
	}
	if d.Chosen != "bwrap" {
		t.Fatalf("chosen %q, want bwrap", d.Chosen)
	}
	if len(d.Skipped) != 2 || d.Skipped[0].Name != "docker" || !strings.Contains(d.Skipped[0].Reason, "docker.sock") ||
		d.Skipped[1].Name != "fake" || !strings.Contains(d.Skipped[1].Reason, "never picked by auto") {
		t.Fatalf("skipped = %+v, want docker with its reason, then fake", d.Skipped)
	}
	if strings.Join(d.Rest, ",") != "daytona,host" {
		t.Fatalf("rest = %v, want [daytona host] (fake is never auto)", d.Rest)
	}
	if !strings.Contains(d.Explain(), "; skipped: docker: cannot reach") {
		t.Fatalf("explain lacks the skip reason: %s", d.Explain())
	}
}

func TestAutoPrefersReadyOverDegraded(t *testing.T) {
	cands := []Candidate{
		cand("docker", backend.IsolationContainer, backend.Degraded, "docker: default image missing"),
		cand("bwrap", backend.IsolationNamespace, backend.Ready, ""),
		cand("host", backend.IsolationNone, backend.Degraded, "host: no isolation"),
	}
	d, err := Auto(cands, Policy{AllowUnisolated: true})
	if err != nil || d.Chosen != "bwrap" || strings.Join(d.Rest, ",") != "docker,host" {
		t.Fatalf("decision = %+v %v; want bwrap, then docker, host", d, err)
	}
	d, err = Auto(cands[:1], Policy{})
	if err != nil || d.Chosen != "docker" || !strings.Contains(d.Reason, "default image missing") {
		t.Fatalf("a degraded backend is still picked when it is the only one: %+v %v", d, err)
	}
}

func TestAutoNeverPicksUnisolatedWithoutPolicy(t *testing.T) {
	cands := []Candidate{
		cand("host", backend.IsolationNone, backend.Ready, ""),
		cand("docker", backend.IsolationContainer, backend.Unavailable, "docker: down"),
	}
	_, err := Auto(cands, Policy{})
	if !errdefs.Is(err, errdefs.KindUnavailable) {
		t.Fatalf("err = %v, want unavailable", err)
	}
	for _, want := range []string{"docker: down", "allow_unisolated"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	d, err := Auto(cands, Policy{AllowUnisolated: true})
	if err != nil || d.Chosen != "host" {
		t.Fatalf("with policy: %v %v, want host", d.Chosen, err)
	}
}

func TestExplicit(t *testing.T) {
	if _, err := Explicit(cand("docker", backend.IsolationContainer, backend.Unavailable, "docker: down"), Policy{}); !errdefs.Is(err, errdefs.KindUnavailable) || !strings.Contains(err.Error(), "docker: down") {
		t.Fatalf("unavailable explicit: %v", err)
	}
	if _, err := Explicit(cand("host", backend.IsolationNone, backend.Degraded, ""), Policy{}); !errdefs.Is(err, errdefs.KindPermissionDenied) {
		t.Fatalf("host without policy: %v", err)
	}
	d, err := Explicit(cand("bwrap", backend.IsolationNamespace, backend.Degraded, "bwrap: no cgroups"), Policy{})
	if err != nil || d.Chosen != "bwrap" || !strings.Contains(d.Reason, "no cgroups") {
		t.Fatalf("degraded explicit: %+v %v", d, err)
	}
}

func TestRankDropsUnranked(t *testing.T) {
	var cands []Candidate
	for _, n := range []string{"host", "fake", "docker", "vercel"} {
		cands = append(cands, cand(n, backend.IsolationContainer, backend.Ready, ""))
	}
	var got []string
	for _, c := range Rank(cands) {
		got = append(got, c.Name)
	}
	if strings.Join(got, ",") != "docker,vercel,host" {
		t.Fatalf("Rank = %v", got)
	}
}

func TestRankBreaksTiesByName(t *testing.T) {
	mk := func(n string, r int) Candidate {
		return Candidate{Name: n, Descriptor: backend.Descriptor{Name: n, AutoRank: r}}
	}
	var got []string
	for _, c := range Rank([]Candidate{mk("zeta", 5), mk("alpha", 5), mk("first", 1), mk("never", 0)}) {
		got = append(got, c.Name)
	}
	if strings.Join(got, ",") != "first,alpha,zeta" {
		t.Fatalf("Rank = %v, want first,alpha,zeta", got)
	}
}
