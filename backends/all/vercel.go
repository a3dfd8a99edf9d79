//go:build !moat_omit_vercel

package all

import _ "github.com/moatsh/moat/backends/vercel" // registers "vercel"
