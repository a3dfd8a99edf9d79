//go:build !moat_omit_daytona

package all

import _ "github.com/moatsh/moat/backends/daytona" // registers "daytona"
