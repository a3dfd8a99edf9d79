package moat

// SetHostCapacity makes the manager see a host with mem bytes of memory and cpus CPUs,
// until the returned func restores the real one.
func SetHostCapacity(mem int64, cpus int) (restore func()) {
	old := hostCapacity
	hostCapacity = func() (int64, int) { return mem, cpus }
	return func() { hostCapacity = old }
}
