package httpapi

import (
	"net"
	"net/netip"
	"strings"

	"github.com/moatsh/moat/errdefs"
)

// CheckListen refuses to serve the API without a token on an address other hosts can reach.
// Loopback addresses ("127.0.0.1:8080", "[::1]:0", "localhost:8080") are fine without one;
// empty hosts and wildcards (":8080", "0.0.0.0:8080") are not.
func CheckListen(addr string, haveToken bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return errdefs.InvalidArgumentf("httpapi: listen address %q: %v", addr, err)
	}
	if haveToken || isLoopback(host) {
		return nil
	}
	return errdefs.Newf(errdefs.ErrPermissionDenied, "httpapi: refusing to listen on %q without an API token: set [server] tokens or MOAT_API_TOKEN, or listen on 127.0.0.1", addr)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
