package moat

import (
	"context"
	"errors"
	"io"
	"io/fs"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/backend/execfs"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/tarfs"
	"github.com/moatsh/moat/moattype"
)

// File operations beyond read, write and list: remove, mkdir and whole trees as tar
// streams. Each uses the backend's native ability when it has one and falls back to
// commands in the sandbox (rm, mkdir) or, for archives, to packing and unpacking here one
// file at a time. Every archive passes through package internal/tarfs both ways, whatever
// moves it: names that escape the target, links, devices and tar bombs never get through.

// ArchiveLimits caps one archive transfer (PutArchive, GetArchive); a zero field takes its
// default (1 GiB of content, 100000 entries, a file up to the whole).
type ArchiveLimits = moattype.ArchiveLimits

// ArchiveResult counts what an archive transfer carried.
type ArchiveResult = moattype.ArchiveResult

// remover returns the native remover of inst, or the exec fallback.
func remover(inst backend.Instance) backend.FileRemover {
	if r, ok := inst.(backend.FileRemover); ok {
		return r
	}
	return execfs.New(inst)
}

// dirMaker returns the native DirMaker of inst, or the exec fallback.
func dirMaker(inst backend.Instance) backend.DirMaker {
	if d, ok := inst.(backend.DirMaker); ok {
		return d
	}
	return execfs.New(inst)
}

// Remove deletes the file or symlink (never its target) at p; a directory tree only with
// recursive. NotFound when nothing is there, FailedPrecondition for a directory without
// recursive, InvalidArgument for "/".
func (s *Sandbox) Remove(ctx context.Context, p string, recursive bool) error {
	p, err := s.filePath(p)
	if err != nil {
		return err
	}
	if p == "/" {
		return errdefs.InvalidArgumentf("moat: refusing to remove /")
	}
	return s.fileOp(ctx, func(inst backend.Instance) error { return remover(inst).Remove(ctx, p, recursive) })
}

// Mkdir creates the directory at p and its missing parents (0755); mode 0 means 0755. An
// existing directory is fine; AlreadyExists when something else is there.
func (s *Sandbox) Mkdir(ctx context.Context, p string, mode fs.FileMode) error {
	p, err := s.filePath(p)
	if err != nil {
		return err
	}
	if mode, err = permMode("directory", mode, 0o755); err != nil {
		return err
	}
	return s.fileOp(ctx, func(inst backend.Instance) error { return dirMaker(inst).Mkdir(ctx, p, mode) })
}

// PutArchive unpacks the tar stream r into directory dir, creating it. Only regular files
// and directories are accepted: absolute names, "..", links, devices and FIFOs are
// InvalidArgument, as is a broken stream; going over lim is ResourceExhausted. Entries are
// applied in order; on error the earlier ones stay. r is streamed, never held whole.
func (s *Sandbox) PutArchive(ctx context.Context, dir string, r io.Reader, lim ArchiveLimits) (ArchiveResult, error) {
	dir, err := s.filePath(dir)
	if err != nil {
		return ArchiveResult{}, err
	}
	var res ArchiveResult
	err = s.fileOp(ctx, func(inst backend.Instance) (err error) {
		// The stream stops when ctx ends (the client went away), whether or not the
		// backend unpacking it watches ctx.
		tr := tarfs.NewReader(ctxReader{ctx, r}, lim)
		tr.Base = dir
		res, err = s.putArchive(ctx, inst, dir, tr, lim)
		return err
	})
	return res, err
}

// ctxReader fails its reads once ctx has ended.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func (s *Sandbox) putArchive(ctx context.Context, inst backend.Instance, dir string, tr *tarfs.Reader, lim ArchiveLimits) (ArchiveResult, error) {
	if err := dirMaker(inst).Mkdir(ctx, dir, 0o755); err != nil {
		return ArchiveResult{}, err
	}
	a, ok := inst.(backend.Archiver)
	if !ok {
		return tarfs.Unpack(ctx, tr, unpackDest{files(inst), dirMaker(inst)}, dir)
	}
	// The backend unpacks a re-encoded stream of exactly the entries tarfs accepted.
	pr, pw := io.Pipe()
	type copied struct {
		res ArchiveResult
		err error
	}
	done := make(chan copied, 1)
	go func() {
		w := tarfs.NewWriter(pw, lim)
		res, err := tarfs.Copy(w, tr)
		if err == nil {
			err = w.Close()
		}
		pw.CloseWithError(err)
		done <- copied{res, err}
	}()
	berr := a.PutArchive(ctx, dir, pr)
	if berr != nil {
		pr.CloseWithError(berr)
	} else {
		pr.Close()
	}
	c := <-done
	switch {
	case c.err != nil && !errors.Is(c.err, io.ErrClosedPipe) && !errors.Is(c.err, berr):
		return c.res, c.err // the archive's fault: say so, not what the backend made of it
	case berr != nil:
		return c.res, berr
	}
	return c.res, c.err
}

// unpackDest is the file-at-a-time fallback of PutArchive.
type unpackDest struct {
	backend.FileTransferer
	backend.DirMaker
}

// GetArchive writes the tree at directory dir to w as a tar stream of its regular files and
// directories, names relative to dir; symlinks (never followed), devices and other special
// files are left out. NotFound when dir is missing and InvalidArgument when it is not a
// directory, both before anything is written to w; going over lim is ResourceExhausted.
func (s *Sandbox) GetArchive(ctx context.Context, dir string, w io.Writer, lim ArchiveLimits) error {
	dir, err := s.filePath(dir)
	if err != nil {
		return err
	}
	inst, err := s.usable(ctx)
	if err != nil {
		return err
	}
	s.m.touch(s.id)
	a, ok := inst.(backend.Archiver)
	if !ok {
		_, err := tarfs.Pack(ctx, w, files(inst), dir, lim)
		return s.checkGone(ctx, inst, err)
	}
	// What the sandbox sends is checked like an upload: it may lie.
	pr, pw := io.Pipe()
	sent := make(chan error, 1)
	go func() {
		err := a.GetArchive(ctx, dir, pw)
		pw.CloseWithError(err)
		sent <- err
	}()
	tr := tarfs.NewReader(pr, lim)
	tr.SkipSpecial = true
	tw := tarfs.NewWriter(w, lim)
	_, err = tarfs.Copy(tw, tr)
	if err == nil {
		err = tw.Close()
	}
	pr.CloseWithError(errors.Join(err, io.ErrClosedPipe)) // a backend still writing stops
	if berr := <-sent; berr != nil && !errors.Is(berr, io.ErrClosedPipe) {
		err = berr // the backend's own error (NotFound, a lost connection) says more
	}
	return s.checkGone(ctx, inst, err)
}
