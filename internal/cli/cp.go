package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/client"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/tarfs"
)

// splitRef splits "ID:/path" into its parts; a plain local path has no id. A local path
// that contains ':' can be written as ./name.
func splitRef(s string) (id, p string) {
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") {
		return "", s
	}
	if i := strings.IndexByte(s, ':'); i > 0 {
		return s[:i], s[i+1:]
	}
	return "", s
}

func (a *app) cpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cp SRC DST",
		Short: "copy files and directories between the host and a sandbox (ID:/path on one side)",
		Long: "Copy a file or directory between the host and a sandbox, like docker cp.\n" +
			"One side is ID:/path (or NAME:/path), the other a local path.\n" +
			"When DST is an existing directory, SRC is copied into it.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcID, srcPath := splitRef(args[0])
			dstID, dstPath := splitRef(args[1])
			if (srcID == "") == (dstID == "") {
				return errdefs.InvalidArgumentf("cp: exactly one of SRC and DST must be ID:/path")
			}
			ctx := cmd.Context()
			if srcID == "" {
				return a.withSandbox(ctx, dstID, func(sb client.Handle) error { return upload(ctx, sb, srcPath, dstPath) })
			}
			return a.withSandbox(ctx, srcID, func(sb client.Handle) error { return download(ctx, sb, srcPath, dstPath) })
		},
	}
}

// upload copies a local file or tree to dst in the sandbox. When dst is an existing
// directory the source goes inside it. A tree travels as one tar stream (package tarfs
// packs it; links and special files are left out, as the sandbox side would refuse them).
func upload(ctx context.Context, sb client.Handle, src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return errdefs.Wrap(errdefs.ErrNotFound, fmt.Errorf("cp: %w", err))
	}
	if _, lerr := sb.ListDir(ctx, dst); lerr == nil {
		dst = path.Join(dst, filepath.Base(src))
	}
	if !st.IsDir() {
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		return sb.WriteFile(ctx, dst, f, st.Mode().Perm())
	}
	host, err := tarfs.OpenHostDir(src, false)
	if err != nil {
		return err
	}
	defer host.Close()
	pr, pw := io.Pipe()
	packed := make(chan error, 1)
	go func() {
		_, err := tarfs.Pack(ctx, pw, host, ".", tarfs.Limits{})
		pw.CloseWithError(err)
		packed <- err
	}()
	_, err = sb.PutArchive(ctx, dst, pr, moat.ArchiveLimits{})
	pr.CloseWithError(errors.Join(err, io.ErrClosedPipe))
	if perr := <-packed; perr != nil && !errors.Is(perr, io.ErrClosedPipe) {
		return fmt.Errorf("cp: %s: %w", src, perr) // the local side failed first
	}
	return err
}

// download copies a sandbox file or tree to the local dst. A tree comes as one tar stream
// that package tarfs unpacks under dst only: names that escape it, links and special files
// are refused, and no symlink already under dst leads a write outside it.
func download(ctx context.Context, sb client.Handle, src, dst string) error {
	if st, err := os.Stat(dst); err == nil && st.IsDir() {
		dst = filepath.Join(dst, path.Base(src))
	}
	if _, err := sb.ListDir(ctx, src); err != nil {
		// Not a directory (or missing): copy it as a file, which reports NotFound properly.
		return downloadFile(ctx, sb, src, dst)
	}
	host, err := tarfs.OpenHostDir(dst, true)
	if err != nil {
		return err
	}
	defer host.Close()
	pr, pw := io.Pipe()
	sent := make(chan error, 1)
	go func() {
		err := sb.GetArchive(ctx, src, pw, moat.ArchiveLimits{})
		pw.CloseWithError(err)
		sent <- err
	}()
	_, err = tarfs.Unpack(ctx, tarfs.NewReader(pr, tarfs.Limits{}), host, ".")
	pr.CloseWithError(errors.Join(err, io.ErrClosedPipe))
	if serr := <-sent; serr != nil && !errors.Is(serr, io.ErrClosedPipe) {
		return serr // the sandbox side failed first
	}
	return err
}

// downloadFile copies one sandbox file to the local dst, replacing it only once complete.
func downloadFile(ctx context.Context, sb client.Handle, src, dst string) error {
	host, err := tarfs.OpenHostDir(filepath.Dir(dst), false)
	if err != nil {
		return err
	}
	defer host.Close()
	pr, pw := io.Pipe()
	read := make(chan error, 1)
	go func() {
		err := sb.ReadFile(ctx, src, pw)
		pw.CloseWithError(err)
		read <- err
	}()
	err = host.WriteFile(ctx, filepath.Base(dst), pr, 0o644)
	pr.CloseWithError(errors.Join(err, io.ErrClosedPipe))
	if rerr := <-read; rerr != nil && !errors.Is(rerr, io.ErrClosedPipe) {
		return rerr
	}
	return err
}
