//go:build !linux

package agent

import (
	"context"
	"errors"
	"net"
	"os"
)

// dialSocket connects to the unix socket at path, refusing a symlink there. Without
// O_PATH the check and the connect are two steps; the agent is only used with a local
// Linux daemon, so this is a best effort for builds elsewhere.
func dialSocket(ctx context.Context, d *net.Dialer, path string) (net.Conn, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return nil, errors.New("not a socket")
	}
	return d.DialContext(ctx, "unix", path)
}
