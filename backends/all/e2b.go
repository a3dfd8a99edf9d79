//go:build !moat_omit_e2b

package all

import _ "github.com/moatsh/moat/backends/e2b" // registers "e2b"
