package moattest_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/httpapi"
	"github.com/moatsh/moat/moattest"
)

// TestOOMKilledSurvivesTheHop checks that a backend's OOM report reaches the caller in
// process and over HTTP (buffered and streamed), and that a plain kill does not claim one.
func TestOOMKilledSurvivesTheHop(t *testing.T) {
	oom := fake.WithCommand("hog", func(ctx context.Context, req *backend.ExecRequest) (int, error) {
		req.SetOOMKilled()
		return 137, nil
	})
	kill := fake.WithCommand("killed", func(ctx context.Context, req *backend.ExecRequest) (int, error) { return 137, nil })
	local := moattest.NewManager(t, oom, kill).Target()
	for name, tg := range map[string]moattest.Target{"local": local, "http": moattest.Serve(t, moattest.NewManager(t, oom, kill).Target(), httpapi.Options{})} {
		ctx := context.Background()
		sb, err := tg.API.Create(ctx, moat.Spec{})
		if err != nil {
			t.Fatal(err)
		}
		for _, streamed := range []bool{false, true} {
			req := func(cmd string) moat.ExecRequest {
				r := moat.ExecRequest{Cmd: []string{cmd}}
				if streamed {
					r.Stdout, r.Stderr = &bytes.Buffer{}, &bytes.Buffer{}
				}
				return r
			}
			res, err := sb.Exec(ctx, req("hog"))
			if err != nil || res.ExitCode != 137 || !res.OOMKilled {
				t.Errorf("%s (streamed %v): OOM-killed command = %+v, %v; want 137 and oom_killed", name, streamed, res, err)
			}
			res, err = sb.Exec(ctx, req("killed"))
			if err != nil || res.ExitCode != 137 || res.OOMKilled {
				t.Errorf("%s (streamed %v): SIGKILLed command = %+v, %v; want 137 without oom_killed", name, streamed, res, err)
			}
		}
		_ = sb.Destroy(ctx)
	}
}
