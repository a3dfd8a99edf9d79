package daytona

import "github.com/moatsh/moat/backend"

// ApplyEnvForTest applies the environment aliases to c and returns it.
func ApplyEnvForTest(c *Config, getenv func(string) string) Config {
	c.fill(backend.Config{Getenv: getenv})
	return *c
}

// ConfigForTest returns the backend's effective configuration.
func (b *Backend) ConfigForTest() Config { return b.cfg }

// ExecScriptForTest is the exec wrapper script.
const ExecScriptForTest = execScript
