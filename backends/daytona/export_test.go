package daytona

// ApplyEnvForTest applies the environment aliases to c and returns it.
func ApplyEnvForTest(c *Config, getenv func(string) string) Config {
	c.applyEnv(getenv)
	return *c
}

// ConfigForTest returns the backend's effective configuration.
func (b *Backend) ConfigForTest() Config { return b.cfg }

// ExecScriptForTest is the exec wrapper script.
const ExecScriptForTest = execScript
