//go:build !moat_omit_host

package all

import _ "github.com/moatsh/moat/backends/host" // registers "host"
