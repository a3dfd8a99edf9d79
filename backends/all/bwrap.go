//go:build !moat_omit_bwrap

package all

import _ "github.com/moatsh/moat/backends/bwrap" // registers "bwrap"
