package cli

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moatsh/moat/client"
	"github.com/moatsh/moat/errdefs"
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
			m, done, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			ctx := cmd.Context()
			if srcID == "" {
				sb, err := m.Get(ctx, dstID)
				if err != nil {
					return err
				}
				return upload(ctx, sb, srcPath, dstPath)
			}
			sb, err := m.Get(ctx, srcID)
			if err != nil {
				return err
			}
			return download(ctx, sb, srcPath, dstPath)
		},
	}
}

// upload copies a local file or tree to dst in the sandbox. When dst is an existing
// directory the source goes inside it.
func upload(ctx context.Context, sb client.Handle, src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return errdefs.Wrap(errdefs.ErrNotFound, fmt.Errorf("cp: %w", err))
	}
	if _, lerr := sb.ListDir(ctx, dst); lerr == nil {
		dst = path.Join(dst, filepath.Base(src))
	}
	if !st.IsDir() {
		return uploadFile(ctx, sb, src, dst, st.Mode())
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil // directories are created with their files; links and devices are skipped
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return uploadFile(ctx, sb, p, path.Join(dst, filepath.ToSlash(rel)), info.Mode())
	})
}

func uploadFile(ctx context.Context, sb client.Handle, src, dst string, mode fs.FileMode) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	return sb.WriteFile(ctx, dst, f, mode.Perm())
}

// download copies a sandbox file or tree to the local dst.
func download(ctx context.Context, sb client.Handle, src, dst string) error {
	if st, err := os.Stat(dst); err == nil && st.IsDir() {
		dst = filepath.Join(dst, path.Base(src))
	}
	entries, err := sb.ListDir(ctx, src)
	if err != nil {
		// Not a directory (or missing): copy it as a file, which reports NotFound properly.
		return downloadFile(ctx, sb, src, dst, 0o644)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		// Names come from the sandbox, which may lie: only a plain name stays inside dst.
		if !plainName(e.Name) {
			return errdefs.InvalidArgumentf("cp: %s lists an entry %q that is not a file name", src, e.Name)
		}
		s, d := path.Join(src, e.Name), filepath.Join(dst, e.Name)
		switch {
		case e.Mode&fs.ModeSymlink != 0:
			// Skipped like other links (upload does the same); following one to "." or a
			// parent would never end.
		case e.IsDir:
			if err := download(ctx, sb, s, d); err != nil {
				return err
			}
		case e.Mode.IsRegular():
			if err := downloadFile(ctx, sb, s, d, e.Mode.Perm()); err != nil {
				return err
			}
		}
	}
	return nil
}

// plainName reports whether name is one path element both in the sandbox and on this
// host: not empty, ".", "..", and without a separator or NUL.
func plainName(name string) bool {
	return name != "." && filepath.IsLocal(name) && filepath.Base(name) == name &&
		!strings.ContainsAny(name, "/\x00")
}

func downloadFile(ctx context.Context, sb client.Handle, src, dst string, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".moat-cp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := sb.ReadFile(ctx, src, tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// Rename last, so a failed copy never leaves a half-written destination.
	return os.Rename(tmp.Name(), dst)
}
