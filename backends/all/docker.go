//go:build !moat_omit_docker

package all

import _ "github.com/moatsh/moat/backends/docker" // registers "docker"
