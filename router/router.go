// Package router answers "which backend should this sandbox run on?": pure logic that ranks
// the configured backends for backend = "auto", applies the isolation policy, and explains
// every choice and every skipped candidate, so the CLI, API and UI can show the reason.
package router

import (
	"fmt"
	"slices"
	"strings"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
)

// Candidate is one backend as the router sees it.
type Candidate struct {
	Name       string
	Descriptor backend.Descriptor
	Health     backend.Health
}

// Policy limits what the router may pick.
type Policy struct {
	// AllowUnisolated lets auto pick a backend with isolation "none" (the restricted host).
	AllowUnisolated bool
}

// Skip says why a candidate was passed over.
type Skip struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// Decision is the router's answer: the chosen backend and the candidates it passed over, in
// the order considered. Rest holds the acceptable candidates after Chosen, for failover.
type Decision struct {
	Chosen  string   `json:"chosen"`
	Reason  string   `json:"reason"`
	Skipped []Skip   `json:"skipped,omitempty"`
	Rest    []string `json:"-"`
}

// Explain renders the decision in one line: "docker (ready); skipped: podman: not installed".
func (d Decision) Explain() string {
	var b strings.Builder
	b.WriteString(d.Chosen)
	if d.Reason != "" {
		fmt.Fprintf(&b, " (%s)", d.Reason)
	}
	if len(d.Skipped) > 0 {
		b.WriteString("; skipped: ")
		for i, s := range d.Skipped {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(s.line())
		}
	}
	return b.String()
}

// Rank returns the candidates auto may consider, in its order: by ascending
// Descriptor.AutoRank, equal ranks by name. Candidates of rank 0 are never picked by auto
// and are dropped. Each backend states its own rank, so the order has no central table.
func Rank(cands []Candidate) []Candidate {
	var out []Candidate
	for _, c := range cands {
		if c.Descriptor.AutoRank > 0 {
			out = append(out, c)
		}
	}
	slices.SortStableFunc(out, func(a, b Candidate) int {
		if a.Descriptor.AutoRank != b.Descriptor.AutoRank {
			return a.Descriptor.AutoRank - b.Descriptor.AutoRank
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// Auto picks the first ready candidate in Rank's order, else the first degraded one: a
// degraded backend works with a caveat (a missing default image, no cgroups), so a ready
// one later in the order is the better pick. Unavailable candidates and those the policy
// forbids are skipped with their reason. The error is errdefs Unavailable and lists every
// reason when nothing is usable.
func Auto(cands []Candidate, p Policy) (Decision, error) {
	byName := map[string]Candidate{}
	for _, c := range cands {
		byName[c.Name] = c
	}
	var d Decision
	var ready, degraded []string
	for _, c := range Rank(cands) {
		n := c.Name
		if reason := unusable(c, p); reason != "" {
			d.Skipped = append(d.Skipped, Skip{Name: n, Reason: reason})
			continue
		}
		if c.Health.State == backend.Degraded {
			degraded = append(degraded, n)
		} else {
			ready = append(ready, n)
		}
	}
	for _, c := range cands {
		if c.Descriptor.AutoRank <= 0 {
			d.Skipped = append(d.Skipped, Skip{Name: c.Name, Reason: "never picked by auto; select it by name"})
		}
	}
	order := append(ready, degraded...)
	if len(order) == 0 {
		var reasons []string
		for _, s := range d.Skipped {
			reasons = append(reasons, s.line())
		}
		if len(reasons) == 0 {
			reasons = append(reasons, "no backend is registered")
		}
		return d, errdefs.Unavailablef("router: no usable backend for auto: %s", strings.Join(reasons, "; "))
	}
	d.Chosen, d.Rest = order[0], order[1:]
	d.Reason = describe(byName[d.Chosen])
	return d, nil
}

// line renders a skip as "name: reason" without repeating a name the reason starts with.
func (s Skip) line() string {
	if strings.HasPrefix(s.Reason, s.Name+":") {
		return s.Reason
	}
	return s.Name + ": " + s.Reason
}

// Explicit checks a backend the caller named. It may be degraded but not unavailable, and
// it must be allowed by the policy.
func Explicit(c Candidate, p Policy) (Decision, error) {
	if c.Health.State == backend.Unavailable {
		return Decision{}, errdefs.Unavailablef("router: backend %s is unavailable: %s", c.Name, c.Health.Reason)
	}
	if c.Descriptor.Isolation == backend.IsolationNone && !p.AllowUnisolated {
		return Decision{}, errdefs.Newf(errdefs.ErrPermissionDenied,
			"router: backend %s runs commands on the host without isolation; set [sandbox] allow_unisolated = true to use it", c.Name)
	}
	return Decision{Chosen: c.Name, Reason: "requested; " + describe(c)}, nil
}

func unusable(c Candidate, p Policy) string {
	if c.Health.State == backend.Unavailable {
		if c.Health.Reason == "" {
			return "unavailable"
		}
		return c.Health.Reason
	}
	if c.Descriptor.Isolation == backend.IsolationNone && !p.AllowUnisolated {
		return "no isolation; not allowed (set [sandbox] allow_unisolated = true)"
	}
	return ""
}

func describe(c Candidate) string {
	s := string(c.Health.State)
	if s == "" {
		s = string(backend.Ready)
	}
	s += ", isolation " + string(c.Descriptor.Isolation)
	if c.Health.State == backend.Degraded && c.Health.Reason != "" {
		s += ": " + c.Health.Reason
	}
	return s
}
