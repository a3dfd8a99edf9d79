package config

import (
	"math"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/errdefs"
)

// FuzzParse feeds arbitrary documents to Parse: it never panics, every error is
// InvalidArgument with a message, and an accepted document yields limits that are
// non-negative finite numbers and a non-negative TTL.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		"home = \"/var/lib/moat\"\nstore = \"mem:\"\n[sandbox]\nbackend = \"docker\"\nmemory = \"512m\"\ncpus = 1.5\npids = 256\nttl = \"1h\"\nenv = { LANG = \"C.UTF-8\" }\n[network]\nallow_outbound = true\n[server]\nlisten = \"127.0.0.1:9999\"\ntokens = [\"a\"]\n[backends.docker]\nimage = \"debian\"\n",
		"[sandbox]\ncpus = nan\n",
		"[sandbox]\ncpus = inf\n",
		"[sandbox]\ncpus = -1\n",
		"[sandbox]\npids = 9223372036854775807\n",
		"[sandbox]\nmemory = \"9.2e18\"\n",
		"[sandbox]\nmemory = \"-1g\"\n",
		"[sandbox]\nttl = \"-1s\"\n",
		"[sandbox]\nttl = \"9999999999h\"\n",
		"nope = 1\n",
		"[sandbox\n",
		"[backends.x]\na = { b = [1, 2, { c = 3 }] }\n",
		"home = 1\n",
		"[[sandbox]]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse(data, func(string) string { return "" })
		if err != nil {
			if !errdefs.Is(err, errdefs.KindInvalidArgument) || err.Error() == "" {
				t.Fatalf("Parse error of kind %v: %v", errdefs.KindOf(err), err)
			}
			return
		}
		lim := l.Moat.Sandbox.Limits
		// moat.Unlimited (-1) is an explicit "no limit" ("unlimited" or 0); nothing else
		// below zero is a limit.
		if (lim.MemoryBytes < 0 && lim.MemoryBytes != moat.Unlimited) || (lim.PIDs < 0 && lim.PIDs != moat.Unlimited) || lim.DiskBytes < 0 {
			t.Fatalf("accepted negative limits %+v from %q", lim, data)
		}
		if (lim.CPUs < 0 && lim.CPUs != moat.Unlimited) || math.IsNaN(lim.CPUs) || math.IsInf(lim.CPUs, 0) {
			t.Fatalf("accepted cpus %g from %q", lim.CPUs, data)
		}
		if l.Moat.Sandbox.TTL < 0 {
			t.Fatalf("accepted a negative ttl from %q", data)
		}
		if l.Server.Listen == "" {
			t.Fatalf("no listen address after defaults")
		}
	})
}
