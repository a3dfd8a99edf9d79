// Command moat-agent is the in-sandbox agent moat starts inside local sandboxes so that
// exec is a fork/exec away (see docs/agent-protocol.md and internal/agentd).
// Build it static: CGO_ENABLED=0 go build ./cmd/moat-agent.
package main

import (
	"os"

	"github.com/moatsh/moat/internal/agentd"
)

func main() { os.Exit(agentd.Main(os.Args[1:], os.Stdout, os.Stderr)) }
