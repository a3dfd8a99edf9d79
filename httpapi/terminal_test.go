package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/backends/fake"
	"github.com/moatsh/moat/client"
	"github.com/moatsh/moat/client/local"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/httpapi"
	"github.com/moatsh/moat/internal/syncbuf"
	"github.com/moatsh/moat/internal/testenv"
	"github.com/moatsh/moat/store/memstore"
)

func TestTerminal(t *testing.T) {
	m, err := moat.Open(context.Background(), moat.Config{Storage: memstore.New(), Sandbox: moat.SandboxConfig{Backend: "fake"}}, moat.WithoutRegistered(), moat.WithBackend("fake", fake.New()))
	if err != nil {
		t.Fatal(err)
	}
	h := httpapi.New(m, httpapi.Options{Tokens: []string{token}})
	srv := httptest.NewServer(h)
	defer func() { srv.Close(); _ = h.Shutdown(context.Background()) }()
	c, _ := client.New(srv.URL, client.WithToken(token))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for name, api := range map[string]client.API{"local": local.New(m), "remote": client.Remote(c)} {
		t.Run(name, func(t *testing.T) {
			sb, err := api.Create(ctx, moat.Spec{})
			if err != nil {
				t.Fatal(err)
			}
			defer sb.Destroy(context.Background())
			inR, inW := io.Pipe()
			resize := make(chan moat.WinSize)
			out := syncbuf.New()
			done := make(chan struct{})
			var res moat.ExitResult
			var terr error
			go func() {
				defer close(done)
				res, terr = sb.Terminal(ctx, moat.TerminalRequest{Cmd: []string{"sh", "-l"}, Stdin: inR, Stdout: out,
					Size: moat.WinSize{Rows: 30, Cols: 100}, Resize: resize})
			}()
			out.WaitForText(t, "argv sh -l size 30x100", 10*time.Second)
			fmt.Fprintf(inW, "echo hi\n")
			out.WaitForText(t, "> echo hi", 10*time.Second)
			resize <- moat.WinSize{Rows: 50, Cols: 132}
			out.WaitForText(t, "size 50x132", 10*time.Second)
			fmt.Fprintf(inW, "exit 7\n")
			<-done
			inW.Close()
			if terr != nil || res.ExitCode != 7 {
				t.Errorf("terminal: exit %d, %v", res.ExitCode, terr)
			}
			_, err = sb.Terminal(ctx, moat.TerminalRequest{Cmd: []string{"sh\x00"}, Stdout: io.Discard})
			if errdefs.KindOf(err) != errdefs.KindInvalidArgument {
				t.Errorf("bad argv: %v", err)
			}
		})
	}
	// Canceling the client's context ends the remote terminal.
	sb, err := c.Create(ctx, moat.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Destroy(context.Background())
	cctx, ccancel := context.WithCancel(ctx)
	inR, inW := io.Pipe()
	defer inW.Close()
	out := syncbuf.New()
	done := make(chan error, 1)
	go func() {
		_, err := sb.Terminal(cctx, moat.TerminalRequest{Stdin: inR, Stdout: out})
		done <- err
	}()
	out.WaitForText(t, "argv sh size 24x80", 10*time.Second)
	ccancel()
	if err := testenv.Returned(t, done, 10*time.Second, "canceled terminal"); errdefs.KindOf(err) != errdefs.KindCanceled {
		t.Errorf("canceled terminal: %v", err)
	}
}
