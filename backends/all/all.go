// Package all answers "which backends does this binary have?": importing it registers
// every backend moat ships. Build with -tags moat_omit_<name> (e.g. moat_omit_e2b) to leave
// one out; the fake backend is for tests and is never included.
package all
