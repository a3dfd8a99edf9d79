package agent

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/moatsh/moat/agent/wire"
	"github.com/moatsh/moat/errdefs"
)

// connectFor connects and checks the agent offers op; an agent that does not is
// unreachable for this operation, so the caller falls back.
func (c *Client) connectFor(ctx context.Context, op string) (*conn, error) {
	nc, r, w, hello, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	if !hello.Has(op) {
		_ = nc.Close()
		return nil, c.unreachable(fmt.Errorf("agent %q does not offer %s", clip(hello.Agent), op))
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Now()) })
	return &conn{r: r, w: w, close: func() { stop(); _ = nc.Close() }}, nil
}

type conn struct {
	r     *wire.Reader
	w     *wire.Writer
	close func()
}

// ReadFile copies the regular file at path inside the sandbox (absolute, clean; symlinks
// followed inside the sandbox) to w. NotFound when it does not exist, InvalidArgument for
// a directory or a non-regular file. Errors wrapping ErrUnreachable mean nothing was read.
func (c *Client) ReadFile(ctx context.Context, path string, w io.Writer) error {
	cn, err := c.connectFor(ctx, wire.OpReadFile)
	if err != nil {
		return c.ctxOr(ctx, "read "+path, err)
	}
	defer cn.close()
	if err := cn.w.WriteJSON(wire.ReadFile, wire.FileRequest{Path: path}); err != nil {
		return c.ctxOr(ctx, "read "+path, errdefs.Unavailablef("%s: read %s: %v", c.prefix(), path, err))
	}
	for {
		t, p, err := cn.r.Next()
		if err != nil {
			return c.ctxOr(ctx, "read "+path, errdefs.Unavailablef("%s: read %s: %w: %v", c.prefix(), path, ErrConnectionLost, err))
		}
		switch t {
		case wire.Data:
			if _, err := w.Write(p); err != nil {
				return fmt.Errorf("%s: read %s: %w", c.prefix(), path, err)
			}
		case wire.Done:
			return nil
		case wire.Error:
			return c.errorFrame(t, p, "read "+path)
		default:
			return errdefs.Unavailablef("%s: read %s: %w: unexpected %v frame", c.prefix(), path, wire.ErrProtocol, t)
		}
	}
}

// WriteFile creates or replaces the file at path inside the sandbox with r's bytes and the
// Unix permission bits perm (including setuid, setgid, sticky), creating missing parents
// 0755. A directory at path is InvalidArgument. Errors wrapping ErrUnreachable mean r was
// not read. WriteFile returns only once it has stopped reading r: when the agent answers
// early (an error), that is after the Read in progress returns.
func (c *Client) WriteFile(ctx context.Context, path string, r io.Reader, perm uint32) error {
	cn, err := c.connectFor(ctx, wire.OpWriteFile)
	if err != nil {
		return c.ctxOr(ctx, "write "+path, err)
	}
	defer cn.close()
	if err := cn.w.WriteJSON(wire.WriteFile, wire.FileRequest{Path: path, Mode: perm}); err != nil {
		return c.ctxOr(ctx, "write "+path, errdefs.Unavailablef("%s: write %s: %v", c.prefix(), path, err))
	}
	// The agent may refuse before the body (a directory there): read its answer while
	// sending, and stop sending when it comes.
	type sendResult struct {
		ended bool  // DATA_END went out: all of r was sent
		err   error // reading r failed
	}
	sent := make(chan sendResult, 1)
	go func() {
		buf := make([]byte, wire.ChunkSize)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				if werr := cn.w.Write(wire.Data, buf[:n]); werr != nil {
					sent <- sendResult{} // the agent hung up: its answer says why
					return
				}
			}
			if err == io.EOF {
				sent <- sendResult{ended: cn.w.Write(wire.DataEnd, nil) == nil}
				return
			}
			if err != nil {
				sent <- sendResult{err: fmt.Errorf("%s: write %s: reading input: %w", c.prefix(), path, err)}
				cn.close() // the agent removes its partial file
				return
			}
		}
	}()
	t, p, rerr := cn.r.Next()
	// Whatever the answer, the sender must be done with r before WriteFile returns (r
	// belongs to the caller); closing the connection fails its next write.
	cn.close()
	res := <-sent
	if rerr != nil {
		if res.err != nil {
			return c.ctxOr(ctx, "write "+path, res.err)
		}
		return c.ctxOr(ctx, "write "+path, errdefs.Unavailablef("%s: write %s: %w: %v", c.prefix(), path, ErrConnectionLost, rerr))
	}
	switch t {
	case wire.Done:
		if !res.ended { // only a lying agent reports success for a body it did not get
			return errdefs.Unavailablef("%s: write %s: %w: DONE before the end of the body", c.prefix(), path, wire.ErrProtocol)
		}
		return nil
	case wire.Error:
		return c.errorFrame(t, p, "write "+path)
	}
	return errdefs.Unavailablef("%s: write %s: %w: unexpected %v frame", c.prefix(), path, wire.ErrProtocol, t)
}

func (c *Client) errorFrame(t wire.Type, p []byte, what string) error {
	var m wire.ErrorMsg
	if err := wire.Decode(t, p, &m); err != nil {
		return errdefs.Unavailablef("%s: %s: %v", c.prefix(), what, err)
	}
	return c.remoteErr(m)
}

// ctxOr returns ctx's error, wrapped, when ctx ended, else err.
func (c *Client) ctxOr(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %s: %w", c.prefix(), what, ctx.Err())
	}
	return err
}
