package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// dialSocket connects to the unix socket at path without following a symlink there, in
// one step: the directory holding it is writable from inside the sandbox, which can swap
// the socket for a symlink to any socket on the host between a check and a connect. The
// path is opened O_PATH|O_NOFOLLOW (a symlink opens as itself), checked to be a socket,
// and connected to through /proc/self/fd, which names exactly that inode.
func dialSocket(ctx context.Context, d *net.Dialer, path string) (net.Conn, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &net.OpError{Op: "open", Net: "unix", Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &net.OpError{Op: "stat", Net: "unix", Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, errors.New("not a socket")
	}
	conn, err := d.DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(fd))
	if err != nil {
		// The error names the /proc path; say what was dialled.
		var oe *net.OpError
		if errors.As(err, &oe) {
			return nil, fmt.Errorf("dial %s: %w", path, oe.Err)
		}
		return nil, err
	}
	return conn, nil
}
